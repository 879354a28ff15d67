//! `cargo xtask soak --minutes M`: a 3-node cluster under steady client load
//! on a machine with no idle CPU, and no injected fault, for M minutes
//! (default 10).
//!
//! What it proves: heartbeats, leases and epochs survive CPU starvation by
//! ordinary normal-priority work. Any membership change (an epoch change, a
//! member declared dead, a quorum loss) during the soak is unexplained, since
//! nothing was injected; so is any UDP probe accepted by two nodes. Either
//! makes the soak exit non-zero. Unanswered client probes are reported
//! (they are what an operator's users would see).
//!
//! Load: a UDP probe every 20 ms from rotating source ports (1 s timeout) and
//! a fresh TCP connection every 200 ms (2 s timeout), both to the VIP; one
//! busy-looping thread per CPU, stopped at the end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xnlb_tests::cluster::{
    connect_from, read_node_id, Cluster, ClusterSpec, CLIENT, UDP_PORT, VIP,
};
use xnlb_tests::netns::spawn_in;
use xnlb_tests::traffic::{Burners, ProbeThread, UdpStream};

const NODES: [u8; 3] = [1, 2, 3];

fn parse_minutes() -> f64 {
    let mut minutes = 10.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--minutes" => {
                minutes = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|m: &f64| *m > 0.0)
                    .expect("--minutes M (a positive number)");
            }
            other => panic!("unknown argument {other:?}: expected --minutes M"),
        }
    }
    minutes
}

/// The agent log lines that mean the membership changed.
fn membership_line(l: &str) -> bool {
    (l.contains("epoch ") && l.contains(" -> "))
        || l.contains("extending the lease")
        || (l.contains("member ") && (l.contains(" dead") || l.contains(" suspect")))
        || l.contains("quorum lost")
        || l.contains("fenc")
}

/// `(idle + iowait, all)` jiffies over all CPUs, from /proc/stat: proves
/// the machine really had no idle time.
fn cpu_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    (
        v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0),
        v.iter().take(8).sum(),
    )
}

fn log_lines(c: &Cluster, id: u8) -> Vec<String> {
    c.log_tail(id, usize::MAX)
        .lines()
        .skip(1) // the "--- agent N log ---" header
        .map(str::to_string)
        .collect()
}

fn main() {
    xnlb_tests::require_root();
    let minutes = parse_minutes();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let c = Cluster::start(&ClusterSpec::actives(3));
    let epoch0 = c.wait_converged(&NODES, Duration::from_secs(60));
    // Let the join settle; everything logged so far is the cluster forming.
    std::thread::sleep(Duration::from_secs(1));
    let epoch0 = c
        .wait_converged(&NODES, Duration::from_secs(30))
        .max(epoch0);
    let baseline: Vec<usize> = NODES.iter().map(|&i| log_lines(&c, i).len()).collect();
    eprintln!(
        "soak: 3 active nodes converged at epoch {epoch0}; {minutes} min with {cpus} busy \
         threads (one per CPU), UDP probe every 20 ms, TCP connection every 200 ms"
    );

    let burners = Burners::start(cpus);
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let ids = Arc::new(AtomicU64::new(1));
    let udp = ProbeThread::udp_stream(
        &c.client,
        UdpStream {
            src: CLIENT,
            dst: SocketAddr::from((VIP, UDP_PORT)),
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
            ports: 40_000..60_000,
        },
        ids,
        duration,
    );
    let tcp_stop = Arc::new(AtomicBool::new(false));
    let tcp_ok = Arc::new(AtomicU64::new(0));
    let tcp_fail = Arc::new(AtomicU64::new(0));
    let tcp = {
        let (stop, ok, fail) = (tcp_stop.clone(), tcp_ok.clone(), tcp_fail.clone());
        let end = Instant::now() + duration;
        spawn_in(&c.client, move || {
            let mut port = 30_000u16;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                // Ports 30000..40000: a port comes back after 2000 s, long
                // after its TIME_WAIT is over.
                port = if port >= 39_999 { 30_000 } else { port + 1 };
                let answered = connect_from(port, Duration::from_secs(2))
                    .and_then(read_node_id)
                    .is_some();
                if answered {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    fail.fetch_add(1, Ordering::Relaxed);
                }
                next += Duration::from_millis(200);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };

    let start = Instant::now();
    let jiffies0 = cpu_jiffies();
    let mut epoch_changes: Vec<String> = Vec::new();
    let mut last_epoch = [epoch0; 3];
    let mut not_alive = 0u64;
    let mut status_misses = 0u64;
    let mut next_report = Duration::from_secs(30);
    // Bounded by `duration`: one status round per second.
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(1));
        for (k, &id) in NODES.iter().enumerate() {
            match c.status(id) {
                Some(s) => {
                    if s.epoch != last_epoch[k] {
                        epoch_changes.push(format!(
                            "{:.0} s: node {id} epoch {} -> {} (state {}, quorum {})",
                            start.elapsed().as_secs_f64(),
                            last_epoch[k],
                            s.epoch,
                            s.state,
                            s.quorum.has
                        ));
                        last_epoch[k] = s.epoch;
                    }
                    not_alive += s.members.iter().filter(|m| m.state != "alive").count() as u64;
                }
                None => status_misses += 1,
            }
        }
        if start.elapsed() >= next_report {
            eprintln!(
                "  {:>4.0} s: epochs {:?}, TCP {} ok / {} failed, {} epoch changes so far",
                start.elapsed().as_secs_f64(),
                last_epoch,
                tcp_ok.load(Ordering::Relaxed),
                tcp_fail.load(Ordering::Relaxed),
                epoch_changes.len()
            );
            next_report += Duration::from_secs(30);
        }
    }
    let jiffies1 = cpu_jiffies();
    let probes = udp.finish();
    tcp_stop.store(true, Ordering::SeqCst);
    let _ = tcp.join();
    drop(burners);
    let elapsed = start.elapsed();

    let mut log_events: Vec<String> = Vec::new();
    for (k, &id) in NODES.iter().enumerate() {
        for l in log_lines(&c, id).into_iter().skip(baseline[k]) {
            if membership_line(&l) {
                log_events.push(format!("agent {id}: {l}"));
            }
        }
    }
    let overlaps = c.overlaps();
    let udp_lost = probes.iter().filter(|p| p.node.is_none()).count();
    let mut lat: Vec<f64> = probes
        .iter()
        .filter_map(|p| p.rtt.map(|d| d.as_secs_f64() * 1e3))
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |f: f64| xnlb_tests::traffic::quantile(&lat, f).unwrap_or(f64::NAN);
    let mut per_node = [0u64; 4];
    for p in &probes {
        if let Some(n) = p.node {
            if (1..=3).contains(&n) {
                per_node[n as usize] += 1;
            }
        }
    }

    println!();
    println!(
        "xnlb soak: 3 nodes, {:.1} min, {cpus} CPUs saturated by busy threads, no injected faults",
        elapsed.as_secs_f64() / 60.0
    );
    println!(
        "CPU idle during the soak: {:.1}%",
        100.0 * (jiffies1.0 - jiffies0.0) as f64 / (jiffies1.1 - jiffies0.1).max(1) as f64
    );
    println!(
        "membership changes not caused by a fault: {} epoch changes seen in status, {} \
         membership events in the agent logs (target 0)",
        epoch_changes.len(),
        log_events.len()
    );
    println!("members seen not alive in status polls: {not_alive}; status requests unanswered: {status_misses}");
    println!(
        "UDP probes: {} sent, {} unanswered within 1 s ({:.4}%), answered by node 1/2/3: {}/{}/{}; \
         reply latency p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
        probes.len(),
        udp_lost,
        100.0 * udp_lost as f64 / probes.len().max(1) as f64,
        per_node[1],
        per_node[2],
        per_node[3],
        q(0.5),
        q(0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "TCP connections: {} answered, {} failed",
        tcp_ok.load(Ordering::Relaxed),
        tcp_fail.load(Ordering::Relaxed)
    );
    println!(
        "overlaps (UDP ids accepted by two nodes): {}",
        overlaps.len()
    );
    for e in epoch_changes.iter().chain(&log_events).take(40) {
        println!("  {e}");
    }
    let bad = !epoch_changes.is_empty() || !log_events.is_empty() || !overlaps.is_empty();
    println!("soak {}", if bad { "FAILED" } else { "passed" });
    drop(c);
    if bad {
        std::process::exit(1);
    }
}
