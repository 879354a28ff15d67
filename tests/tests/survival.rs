//! Connections survive an unplanned change in which their host survives
//! (docs/SAFETY.md S6), with real agents in namespaces: the agent killed
//! and restarted, the agent frozen for 2 s, a heartbeat-only partition. The
//! fenced member stays a previous owner of the buckets it held, so their
//! new owners accept only connections their own kernels hold (no resets),
//! and its data plane keeps delivering the connections its kernel holds
//! (held delivery) while it accepts nothing new; a restarted agent takes
//! the live table over. Long-lived connections echo before, during and
//! after the fault with a 1 s read timeout: none may break or stall that
//! long, and no UDP probe may be accepted twice.

use std::time::{Duration, Instant};

use xnlb_tests::cluster::checks::{is_fenced, CONVERGE};
use xnlb_tests::cluster::{echo_round, Cluster, ClusterSpec, Conn};

const CONNS: u16 = 90;

fn open(c: &Cluster, first_port: u16) -> Vec<Conn> {
    (first_port..first_port + CONNS)
        .map(|p| {
            let conn = c
                .open_conn(p, Duration::from_secs(1))
                .unwrap_or_else(|| panic!("connection from port {p} not answered"));
            // A stall of the fenced node's connections (no held delivery)
            // lasts its whole outage (2 s here) and fails the round.
            conn.stream
                .set_read_timeout(Some(READ_TIMEOUT))
                .expect("timeout");
            conn
        })
        .collect()
}

/// Longest an echo may take, fault or not.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Echoes on every connection for `d`; panics naming the broken ones.
/// Returns the longest round.
fn keep_echoing(conns: &mut [Conn], d: Duration, when: &str) -> Duration {
    let end = Instant::now() + d;
    let mut longest = Duration::ZERO;
    loop {
        let t = Instant::now();
        let broken = echo_round(conns);
        longest = longest.max(t.elapsed());
        assert!(
            broken.is_empty(),
            "{when}: {} of {} connections broke or stalled over {READ_TIMEOUT:?}: {:?}",
            broken.len(),
            conns.len(),
            &broken[..broken.len().min(8)]
        );
        if Instant::now() >= end {
            return longest;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn held_by(conns: &[Conn], id: u8) -> usize {
    conns.iter().filter(|k| k.node == id).count()
}

/// Runs `fault` on node 3 with connections echoing before, during (the
/// fault echoes while it waits) and after, then checks none broke, new
/// connections were served, and the cluster converges once the old
/// connections close.
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
    let during = t0.elapsed();
    let after = keep_echoing(&mut conns, Duration::from_millis(1500), "after");
    let fresh = open(&c, first_port + 5_000);
    drop(fresh);
    println!(
        "{name}: {on3} of {CONNS} connections on node 3, 0 broken, echoing throughout the {during:?} fault; longest round after it {after:?}"
    );
    drop(conns);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let _ = prober.finish();
    c.assert_no_overlap(name);
}

#[test]
fn connections_survive_an_agent_crash_and_restart() {
    survives("agent SIGKILL + restart", 50_000, |c, conns| {
        c.kill(3);
        let t = Instant::now();
        while !is_fenced(c, 3) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "member 3 was not fenced"
            );
            keep_echoing(conns, Duration::ZERO, "agent killed");
        }
        keep_echoing(conns, Duration::from_millis(500), "agent killed, fenced");
        c.start_agent(3);
        keep_echoing(conns, Duration::from_millis(1500), "agent restarted");
    });
}

#[test]
fn connections_survive_a_frozen_agent() {
    survives("agent SIGSTOP 2 s + SIGCONT", 51_000, |c, conns| {
        c.freeze(3);
        keep_echoing(conns, Duration::from_millis(2000), "agent frozen");
        assert!(is_fenced(c, 3), "the frozen member was fenced meanwhile");
        c.thaw(3);
    });
}

#[test]
fn connections_survive_a_heartbeat_partition() {
    survives("heartbeat-only partition 2 s", 52_000, |c, conns| {
        c.cut_heartbeats(3);
        keep_echoing(conns, Duration::from_millis(2000), "heartbeats cut");
        assert!(is_fenced(c, 3), "the cut-off member was fenced meanwhile");
        c.heal_heartbeats(3);
    });
}
