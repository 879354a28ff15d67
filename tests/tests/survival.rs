//! Connections survive an unplanned change in which their host survives
//! (DESIGN S6), with real agents in namespaces: the agent killed and
//! restarted, the agent frozen for 2 s, a heartbeat-only partition. The
//! fenced member stays the previous owner of the buckets it held, so their
//! new owners accept only connections their own kernels hold (no resets);
//! the fenced node itself fails closed, so its connections stall (TCP
//! retransmits) until it rejoins and serves them again as the releasing
//! node. Long-lived connections echo throughout with a read timeout longer
//! than the stall; none may break, and no UDP probe may be accepted twice.

use std::time::{Duration, Instant};

use xnlb_tests::cluster::checks::{fenced_by_others, CONVERGE};
use xnlb_tests::cluster::{echo_round, Cluster, ClusterSpec, Conn};

const CONNS: u16 = 90;

fn open(c: &Cluster, first_port: u16) -> Vec<Conn> {
    (first_port..first_port + CONNS)
        .map(|p| {
            let conn = c
                .open_conn(p, Duration::from_secs(1))
                .unwrap_or_else(|| panic!("connection from port {p} not answered"));
            // Longer than the stall of a fenced node's connections (its
            // outage plus rejoining), shorter than TCP gives up.
            conn.stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            conn
        })
        .collect()
}

/// Echoes on every connection for `d`; panics naming the broken ones.
fn keep_echoing(conns: &mut [Conn], d: Duration, when: &str) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        let broken = echo_round(conns);
        assert!(
            broken.is_empty(),
            "{when}: {} of {} connections broke: {:?}",
            broken.len(),
            conns.len(),
            &broken[..broken.len().min(8)]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn held_by(conns: &[Conn], id: u8) -> usize {
    conns.iter().filter(|k| k.node == id).count()
}

/// Runs `fault` on node 3 with connections echoing before, during and
/// after, then checks none broke, new connections were served, and the
/// cluster converges once the old connections close.
fn survives(name: &str, first_port: u16, fault: impl FnOnce(&mut Cluster, &mut Vec<Conn>)) {
    let mut c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let prober = c.prober(u64::from(first_port) * 1000);
    let mut conns = open(&c, first_port);
    let on3 = held_by(&conns, 3);
    assert!(on3 > 10, "node 3 holds {on3} of {CONNS} connections");
    keep_echoing(&mut conns, Duration::from_millis(300), "before");
    let t0 = Instant::now();
    fault(&mut c, &mut conns);
    // Node 3's connections stalled while it was fenced; the first round
    // after the fault ends waits for them (TCP retransmits) to resume.
    let t_back = Instant::now();
    keep_echoing(&mut conns, Duration::from_millis(1), "first round after");
    let stall = t_back.elapsed();
    keep_echoing(&mut conns, Duration::from_millis(1500), "after");
    let fresh = open(&c, first_port + 5_000);
    drop(fresh);
    println!(
        "{name}: {on3} of {CONNS} connections on node 3, 0 broken; they resumed {stall:?} after the fault ended ({:?} after it began)",
        t0.elapsed() - Duration::from_millis(1500)
    );
    drop(conns);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let _ = prober.finish();
    c.assert_no_overlap(name);
}

#[test]
fn connections_survive_an_agent_crash_and_restart() {
    survives("agent SIGKILL + restart", 50_000, |c, _| {
        c.kill(3);
        fenced_by_others(c, 3);
        std::thread::sleep(Duration::from_millis(500));
        c.start_agent(3);
    });
}

#[test]
fn connections_survive_a_frozen_agent() {
    survives("agent SIGSTOP 2 s + SIGCONT", 51_000, |c, _| {
        c.freeze(3);
        std::thread::sleep(Duration::from_millis(2000));
        c.thaw(3);
    });
}

#[test]
fn connections_survive_a_heartbeat_partition() {
    survives("heartbeat-only partition 2 s", 52_000, |c, _| {
        c.cut_heartbeats(3);
        std::thread::sleep(Duration::from_millis(2000));
        c.heal_heartbeats(3);
    });
}
