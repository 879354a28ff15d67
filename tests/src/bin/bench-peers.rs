//! `cargo xtask bench peers`: what one received packet costs the receiving
//! CPU with xnlb's XDP program, side by side in one run with a minimal XDP
//! filter doing the same decision and the two in-kernel ways to do the job
//! without xnlb:
//!
//! - `bare XDP_DROP`: the floor of any receiver;
//! - `minimal XDP filter` (`xnlb-minimal`): Ethernet + IPv4 + ports, the
//!   flow hash, one array lookup; what xnlb's not-owned and owned paths
//!   should cost (issue 10: within 1.15x);
//! - an nftables rule in the netdev ingress hook, `jhash ip saddr . udp sport
//!   mod 4`, keeping a fraction of the flows (CLUSTERIP's documented
//!   successor);
//! - the `xt_cluster` match (iptables-nft, mangle PREROUTING), which needs
//!   conntrack and hashes the connection's source address.
//!
//! The sender is an XDP program (`xnlb_bench_sender`) run by
//! `BPF_PROG_TEST_RUN` in live-frames mode on one CPU: it gives each 64-byte
//! UDP frame a fresh random flow, or the next of 16384 fixed flows, and
//! redirects it across a veth pair as an `xdp_frame`, so the receiver's
//! native XDP program sees it before any skb exists, as from a NIC driver
//! (the stack-based peers get an skb built from it behind a bare `XDP_PASS`
//! program). The receiving veth's NAPI poll runs threaded
//! (`/sys/class/net/eth0/threaded`), pinned to the other CPU, and the cost
//! is that thread's on-CPU time (`/proc/<pid>/schedstat`) per packet its
//! XDP hook saw: the packets the receiver actually handled, whatever the
//! sender offered, and nothing of the sender's own work. Every measurement
//! gets fresh namespaces (no conntrack entry or hook survives into the
//! next), runs are interleaved (drift on a shared machine hits every
//! receiver alike), and the median and the spread of the runs are shown;
//! each ratio is given twice, of the medians and run by run (the median and
//! spread of the ratios of the two receivers' samples in the same pass).
//!
//! Options (after `cargo xtask bench peers --`): `--runs N` (default 5),
//! `--traffic random|fixed|both` (default both), `--only
//! bare,minimal,xnlb,nft,xt` (default all), `--variant NAME=OBJECT` (more
//! xnlb objects measured in the same run, e.g. built by `cargo xtask
//! build-ebpf --release --features ... --out ...`), `--thrash` (a thread
//! sweeping 8 MiB on the receiver's CPU whenever the NAPI thread sleeps:
//! what a receiver's code and data footprint costs on a busy node),
//! `--owned 0,25,50` (the owned fractions measured, default all three),
//! `--routed` (also xnlb serving the VIP in routed mode: what it does not
//! own it forwards, `XDP_TX` back to the sender, instead of dropping).

use std::path::PathBuf;
use std::time::Instant;

use xnlb_tests::peers::{
    measure, xt_cluster_available, Filter, Receivers, Sample, Traffic, OWNED, WARMUP, WINDOW,
};
use xnlb_tests::traffic::median;

/// Runs per configuration (the median is reported); `--runs N` overrides.
const RUNS: usize = 5;
/// The sender's CPU; the receiver's NAPI thread runs on the other one.
const TX_CPU: usize = 0;

struct Args {
    runs: usize,
    traffic: Vec<Traffic>,
    only: Vec<String>,
    variants: Vec<(String, PathBuf)>,
    thrash: bool,
    owned: Vec<u32>,
    routed: bool,
}

fn args() -> Args {
    let mut a = Args {
        runs: RUNS,
        traffic: vec![Traffic::Random, Traffic::Fixed],
        only: ["bare", "minimal", "xnlb", "nft", "xt"]
            .map(String::from)
            .to_vec(),
        variants: Vec::new(),
        thrash: false,
        owned: OWNED.to_vec(),
        routed: false,
    };
    let mut it = std::env::args().skip(1);
    let usage = "expected --runs N, --traffic random|fixed|both, --only bare,minimal,xnlb,nft,xt, \
                 --variant NAME=OBJECT, --thrash, --owned 0,25,50, --routed";
    while let Some(k) = it.next() {
        if k == "--thrash" {
            a.thrash = true;
            continue;
        }
        if k == "--routed" {
            a.routed = true;
            continue;
        }
        let v = it
            .next()
            .unwrap_or_else(|| panic!("{k} needs a value: {usage}"));
        match k.as_str() {
            "--runs" => a.runs = v.parse().ok().filter(|&n| n > 0).expect("--runs N"),
            "--traffic" => {
                a.traffic = match v.as_str() {
                    "random" => vec![Traffic::Random],
                    "fixed" => vec![Traffic::Fixed],
                    "both" => vec![Traffic::Random, Traffic::Fixed],
                    _ => panic!("--traffic {v}: {usage}"),
                }
            }
            "--only" => a.only = v.split(',').map(String::from).collect(),
            "--owned" => {
                a.owned = v
                    .split(',')
                    .map(|p| match p {
                        "0" => 0,
                        "25" => 1,
                        "50" => 2,
                        _ => panic!("--owned {v}: {usage}"),
                    })
                    .collect()
            }
            "--variant" => {
                let (name, path) = v.split_once('=').expect("--variant NAME=OBJECT");
                a.variants.push((name.to_string(), path.into()));
            }
            _ => panic!("unknown argument {k:?}: {usage}"),
        }
    }
    a
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    xnlb_tests::require_root();
    let args = args();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "the benchmark needs two CPUs (sender, receiver)");
    let rx_cpu = cpus - 1;
    let mut r = Receivers::load(&args.variants);
    if args.routed {
        r.add_routed();
    }
    let want = |k: &str| args.only.iter().any(|o| o == k);
    let mut filters: Vec<Filter> = Vec::new();
    if want("minimal") {
        filters.push(Filter::Minimal);
    }
    if want("xnlb") {
        filters.extend((0..r.xnlb.len()).map(Filter::Xnlb));
    }
    if want("nft") {
        filters.push(Filter::Nft);
    }
    if want("xt") {
        match xt_cluster_available() {
            Ok(()) => filters.push(Filter::XtCluster),
            Err(e) => println!("xt_cluster NOT measured, the match is unavailable here: {e}"),
        }
    }
    let mut configs: Vec<(Traffic, Filter, u32)> = Vec::new();
    for &traffic in &args.traffic {
        if want("bare") {
            configs.push((traffic, Filter::BareDrop, 0));
        }
        for &q in &args.owned {
            configs.extend(filters.iter().map(|&f| (traffic, f, q)));
        }
    }
    eprintln!(
        "peers: {} configurations x {} runs, {} ms each; XDP live-frames sender on CPU {TX_CPU}, \
         receiver's NAPI thread on CPU {rx_cpu}; load {}",
        configs.len(),
        args.runs,
        (WARMUP + WINDOW).as_millis(),
        uptime()
    );
    let started = Instant::now();
    let load_before = uptime();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); configs.len()];
    for run in 0..args.runs {
        // Rotate the order too, so no configuration always follows the
        // same one.
        for k in 0..configs.len() {
            let i = (k + run) % configs.len();
            let (traffic, f, q) = configs[i];
            let s = measure(f, q, traffic, &mut r, TX_CPU, rx_cpu, args.thrash);
            eprintln!(
                "  run {} {:<24} {:<28} owned {:>2}%: {:>6.1} ns/pkt, {:.3} Mpps received, \
                 {:.3} Mpps offered, {:.0} pkts/wake-up",
                run + 1,
                traffic.name(),
                r.name(f),
                q * 25,
                s.ns_per_pkt,
                s.pps / 1e6,
                s.offered / 1e6,
                s.pkts_per_wakeup
            );
            samples[i].push(s);
        }
    }
    let ns: Vec<f64> = samples
        .iter()
        .map(|s| median(&s.iter().map(|x| x.ns_per_pkt).collect::<Vec<_>>()))
        .collect();
    let cmd = std::iter::once("cargo xtask bench peers".to_string())
        .chain((std::env::args().len() > 1).then(|| "--".to_string()))
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    println!();
    println!(
        "`{cmd}`: 64-byte UDP over a veth; ns/pkt = on-CPU ns of the receiver's threaded NAPI \
         thread per packet, median of {} interleaved runs x {} ms (spread min-max); load \
         {load_before} -> {}; {:.0} s",
        args.runs,
        WINDOW.as_millis(),
        uptime(),
        started.elapsed().as_secs_f64()
    );
    for &traffic in &args.traffic {
        let idx = |f: Filter, q: u32| configs.iter().position(|&c| c == (traffic, f, q));
        println!();
        println!("{}:", traffic.name());
        println!(
            "| receiver | {} |",
            args.owned
                .iter()
                .map(|q| format!("ns/pkt, {}% owned", q * 25))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        println!("|---|{}", "---:|".repeat(args.owned.len()));
        let mut rows = Vec::new();
        if want("bare") {
            rows.push(Filter::BareDrop);
        }
        rows.extend(&filters);
        for &f in &rows {
            let cells: Vec<String> = args
                .owned
                .iter()
                .map(|&q| {
                    let q = if f.hashes() { q } else { 0 };
                    match idx(f, q) {
                        Some(i) if f.hashes() || q == 0 => {
                            let v: Vec<f64> = samples[i].iter().map(|s| s.ns_per_pkt).collect();
                            let (lo, hi) = spread(&v);
                            format!("{:.0} ({lo:.0}-{hi:.0})", ns[i])
                        }
                        _ => "-".into(),
                    }
                })
                .collect();
            let cells = if f.hashes() {
                cells
            } else {
                let mut c = vec![cells[0].clone()];
                c.extend(std::iter::repeat_n("-".to_string(), args.owned.len() - 1));
                c
            };
            println!("| {} | {} |", r.name(f), cells.join(" | "));
        }
        for x in (0..r.xnlb.len()).map(Filter::Xnlb) {
            if !args.owned.iter().any(|&q| idx(x, q).is_some()) {
                continue;
            }
            let ratio = |other: Filter, q: u32, inverse: bool| -> String {
                match (idx(x, q), idx(other, q)) {
                    (Some(a), Some(b)) if ns[a] > 0.0 && ns[b] > 0.0 => {
                        let v = if inverse {
                            ns[b] / ns[a]
                        } else {
                            ns[a] / ns[b]
                        };
                        // The same ratio run by run (both measured in the
                        // same pass over the configurations): drift of the
                        // shared machine between passes cancels out.
                        let per_run: Vec<f64> = samples[a]
                            .iter()
                            .zip(&samples[b])
                            .map(|(x, y)| {
                                let (x, y) = (x.ns_per_pkt, y.ns_per_pkt);
                                if inverse {
                                    y / x
                                } else {
                                    x / y
                                }
                            })
                            .collect();
                        let (lo, hi) = spread(&per_run);
                        format!(
                            "{v:.2}x (run by run {:.2}x, {lo:.2}-{hi:.2})",
                            median(&per_run)
                        )
                    }
                    _ => "-".into(),
                }
            };
            let line = |label: &str, other: Filter, inverse: bool| {
                println!(
                    "{:<34} {}",
                    format!("{} {label}:", r.name(x)),
                    args.owned
                        .iter()
                        .map(|&q| format!("{}% {}", q * 25, ratio(other, q, inverse)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            line("/ minimal", Filter::Minimal, false);
            line("cheaper than nft", Filter::Nft, true);
            line("cheaper than xt_cluster", Filter::XtCluster, true);
        }
    }
}

/// The smallest and largest of `v` (samples are positive).
fn spread(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(0.0, f64::max),
    )
}
