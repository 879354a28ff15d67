//! `cargo xtask bench peers`: packets per second a veth receiver drops and
//! passes with xnlb's XDP program, side by side in one run with the two
//! in-kernel ways to do the same job without xnlb:
//!
//! - an nftables rule in the netdev ingress hook, `jhash ip saddr . udp sport
//!   mod 4`, keeping a fraction of the flows (CLUSTERIP's documented
//!   successor);
//! - the `xt_cluster` match (`iptables -t mangle ... -m cluster`), which needs
//!   conntrack and hashes the connection's source address, through both
//!   iptables-nft and iptables-legacy.
//!
//! Every configuration sees the same traffic: 16384 UDP flows (distinct
//! source addresses in 198.18.64.0/18, spread source ports) to the VIP's
//! cluster MAC, sent as fast as one CPU can from a sender namespace into a
//! veth whose peer is the receiver. By default the sender is an XDP program
//! (`xnlb_bench_sender`) run with `BPF_PROG_TEST_RUN` in live-frames mode:
//! it gives each frame the next flow and redirects it out of the sender's
//! veth, so the frame crosses the pair as an `xdp_frame` (`ndo_xdp_xmit`)
//! and the receiver's native XDP program sees it before any skb exists. That
//! is how a NIC driver hands frames to XDP; the stack-based peers get an skb
//! built from the same frame (the receiving veth runs a bare `XDP_PASS`
//! program for them, which a veth needs to accept redirected frames), so
//! every configuration pays the same sender cost. `--af-packet` sends
//! through an AF_PACKET socket instead (sendmmsg, qdisc bypass): every frame
//! then reaches the receiver as an skb already, and xnlb runs in generic
//! mode or in native mode after veth copies the skb into a page. Each measurement uses fresh namespaces, so no conntrack
//! table or netfilter hook of one configuration survives into the next. The
//! owned fraction is 0%, 25% or 50% of the buckets (xnlb) or of the hash
//! values (peers). Runs are interleaved (drift on a shared machine hits every
//! configuration alike) and medians are reported. Counts come from each
//! filter's own counters (xnlb's per-CPU counters, nft and iptables rule
//! counters).
//!
//! By default the sender and the receive path share one CPU: a veth hands
//! each frame (batch) to the receive path on the sending CPU, so the rate is
//! one CPU's
//! send + receive pipeline, and the receive cost per packet is derived by
//! subtracting the sender's own cost, measured in the same run with the
//! receiving veth down ("sender only"). `--rps` instead steers receive
//! processing to another CPU with RPS and reports that CPU's softirq time
//! per packet. `--runs N` sets the runs per configuration (default 5).

use std::time::Instant;

use xnlb_common::{PROG_BENCH_BASELINE, PROG_BENCH_SENDER};
use xnlb_tests::fixture::Fixture;
use xnlb_tests::peers::{
    frames, measure, xt_cluster_available, Filter, Rate, Sender, Source, FLOWS, OWNED, WARMUP,
    WINDOW,
};
use xnlb_tests::traffic::median;

/// Runs per configuration (the median is reported); `--runs N` overrides.
const RUNS: usize = 5;

fn mpps(pps: f64) -> String {
    format!("{:.3}M", pps / 1e6)
}

fn main() {
    xnlb_tests::require_root();
    let mut runs = RUNS;
    let mut rps = false;
    let mut sender = Sender::Live;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rps" => rps = true,
            "--af-packet" => sender = Sender::AfPacket,
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--runs N")
            }
            other => panic!("unknown argument {other:?}: expected --runs N, --rps, --af-packet"),
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tx_cpu = 0;
    let rx_cpu = (rps && cpus > 1).then_some(cpus - 1);

    // With the XDP sender only native mode sees frames before an skb
    // exists (and a veth accepts redirected frames only with a native
    // program attached), so generic mode is measured with AF_PACKET only.
    let mut filters = match sender {
        Sender::Live => vec![Filter::XnlbNative, Filter::Nft],
        Sender::AfPacket => vec![Filter::Xnlb, Filter::XnlbNative, Filter::Nft],
    };
    let mut unavailable = Vec::new();
    for f in [Filter::XtClusterNft, Filter::XtClusterLegacy] {
        match xt_cluster_available(f.iptables()) {
            Ok(()) => filters.push(f),
            Err(e) => unavailable.push(format!(
                "{}: xt_cluster NOT measured, the match is unavailable here: {e}",
                f.name()
            )),
        }
    }
    for u in &unavailable {
        eprintln!("{u}");
    }
    let mut fx = Fixture::new();
    // The receiver's copy of the sender program is the bare pass program
    // (its sender map stays empty).
    fx.dp
        .program(PROG_BENCH_SENDER)
        .expect("sender program")
        .load()
        .expect("load the sender program");
    fx.dp
        .program(PROG_BENCH_BASELINE)
        .expect("baseline program")
        .load()
        .expect("load the baseline program");
    let traffic = frames();
    let template = traffic[0].clone();
    // The sender's own copy of the object (its own maps and pin directory).
    let mut sfx = Fixture::new();
    sfx.dp
        .program(PROG_BENCH_SENDER)
        .expect("sender program")
        .load()
        .expect("load the sender program");
    let mut configs: Vec<(Filter, u32)> = vec![(Filter::None, 0)];
    // The reference the receive cost is measured over (same-CPU mode).
    let baseline = match sender {
        Sender::Live => Filter::BareDrop,
        Sender::AfPacket => Filter::SenderOnly,
    };
    if rx_cpu.is_none() {
        configs.insert(0, (baseline, 0));
    }
    for &q in &OWNED {
        for &f in &filters {
            configs.push((f, q));
        }
    }
    eprintln!(
        "peers: {} configurations x {runs} runs, {} ms each; {} sender on CPU {tx_cpu}, receive \
         path on CPU {}",
        configs.len(),
        (WARMUP + WINDOW).as_millis(),
        match sender {
            Sender::Live => "XDP live-frames",
            Sender::AfPacket => "AF_PACKET",
        },
        rx_cpu.unwrap_or(tx_cpu)
    );
    let started = Instant::now();
    let mut samples: Vec<Vec<Rate>> = vec![Vec::new(); configs.len()];
    for run in 0..runs {
        for (i, &(f, q)) in configs.iter().enumerate() {
            let mut src = match sender {
                Sender::Live => Source::Live(&mut sfx, &template),
                Sender::AfPacket => Source::AfPacket(&traffic),
            };
            let r = measure(f, q, &mut fx, &mut src, tx_cpu, rx_cpu);
            eprintln!(
                "  run {} {:<28} owned {:>2}%: dropped {}/s passed {}/s offered {}/s",
                run + 1,
                f.name(),
                q * 25,
                mpps(r.dropped),
                mpps(r.passed),
                mpps(r.offered),
            );
            samples[i].push(r);
        }
    }
    let med: Vec<Rate> = samples
        .iter()
        .map(|s| {
            let m = |g: fn(&Rate) -> f64| median(&s.iter().map(g).collect::<Vec<_>>());
            Rate {
                dropped: m(|r| r.dropped),
                passed: m(|r| r.passed),
                offered: m(|r| r.offered),
                softirq_ns: m(|r| r.softirq_ns),
            }
        })
        .collect();
    // The baseline's ns per frame (same-CPU mode: the sender alone, or the
    // XDP sender with a bare XDP_DROP receiver): what a receive path's cost
    // is measured on top of.
    let sender_ns = configs
        .iter()
        .position(|&(f, _)| f == baseline)
        .map(|i| 1e9 / med[i].offered.max(1.0));
    // Receive ns per packet: per-run (1/total - sender), then the median.
    let rx_ns: Vec<f64> = (0..configs.len())
        .map(|i| match sender_ns {
            Some(s) => median(
                &samples[i]
                    .iter()
                    .map(|r| 1e9 / r.total().max(1.0) - s)
                    .collect::<Vec<_>>(),
            ),
            None => med[i].softirq_ns,
        })
        .collect();

    println!();
    println!(
        "veth receiver, {FLOWS} UDP flows, medians of {runs} runs x {} ms ({:.0} s); packets/s \
         as counted by each filter; {}",
        WINDOW.as_millis(),
        started.elapsed().as_secs_f64(),
        match sender_ns {
            Some(s) => format!(
                "sender and receive path on one CPU; {}: {} frames/s = {s:.0} ns/frame (rx \
                 ns/pkt is the cost over that)",
                baseline.name(),
                mpps(1e9 / s)
            ),
            None => "receive path on its own CPU (RPS)".to_string(),
        }
    );
    println!(
        "{:<6} {:<28} {:>10} {:>10} {:>10} {:>10}",
        "owned",
        "filter",
        "dropped/s",
        "passed/s",
        "total/s",
        if sender_ns.is_some() {
            "rx ns/pkt"
        } else {
            "softirq ns"
        }
    );
    for (i, &(f, q)) in configs.iter().enumerate() {
        if f == baseline {
            continue;
        }
        let r = med[i];
        println!(
            "{:<6} {:<28} {:>10} {:>10} {:>10} {:>10.0}",
            if f == Filter::None {
                "-".to_string()
            } else {
                format!("{}%", q * 25)
            },
            f.name(),
            mpps(r.dropped),
            mpps(r.passed),
            mpps(r.total()),
            rx_ns[i]
        );
    }
    for u in &unavailable {
        println!("{u}");
    }
    println!();
    let mut min_drop_ratio = f64::INFINITY;
    let mut min_total_ratio = f64::INFINITY;
    for &q in &OWNED {
        let idx = |f: Filter| configs.iter().position(|&c| c == (f, q));
        // xnlb's better mode here (generic is what the agent picks on a
        // veth; both are shown in the table).
        let Some((xf, xi)) = [Filter::Xnlb, Filter::XnlbNative]
            .iter()
            .filter_map(|&f| idx(f).map(|i| (f, i)))
            .max_by(|a, b| med[a.1].total().total_cmp(&med[b.1].total()))
        else {
            continue;
        };
        let peers: Vec<(Filter, usize)> = filters
            .iter()
            .filter(|f| f.is_peer())
            .filter_map(|&f| idx(f).map(|i| (f, i)))
            .collect();
        // The better peer: the one that handles the most packets per second
        // (at 0% owned, the most dropped).
        let Some(&(bf, bi)) = peers
            .iter()
            .max_by(|a, b| med[a.1].total().total_cmp(&med[b.1].total()))
        else {
            continue;
        };
        let drop_ratio = med[xi].dropped / med[bi].dropped.max(1.0);
        let total_ratio = med[xi].total() / med[bi].total().max(1.0);
        min_drop_ratio = min_drop_ratio.min(drop_ratio);
        min_total_ratio = min_total_ratio.min(total_ratio);
        let cost = if rx_ns[xi] > 0.0 && rx_ns[bi] > 0.0 {
            format!(
                "; receive cost {:.0} vs {:.0} ns/pkt (peer/xnlb {:.2}x)",
                rx_ns[xi],
                rx_ns[bi],
                rx_ns[bi] / rx_ns[xi]
            )
        } else {
            String::new()
        };
        println!(
            "owned {:>2}%: {} drops {:.2}x the packets/s of the better peer ({}), {:.2}x its \
             total{cost}",
            q * 25,
            xf.name(),
            drop_ratio,
            bf.name(),
            total_ratio,
        );
    }
    println!(
        "target xnlb >= 4x the better peer on dropped packets/s: {} (worst {:.2}x); ahead of \
         both at every owned fraction: {}",
        if min_drop_ratio >= 4.0 {
            "met"
        } else {
            "NOT met"
        },
        min_drop_ratio,
        if min_total_ratio > 1.0 { "yes" } else { "NO" }
    );
}
