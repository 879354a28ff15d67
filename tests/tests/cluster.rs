//! End-to-end: real agents in namespaces, real TCP and UDP traffic, real
//! faults. Each test asserts on what the client saw and on what every
//! node's servers accepted (no datagram may be accepted by two nodes).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use xnlb_tests::cluster::{wait_until, Cluster, ClusterSpec, NodeSpec};

const CONVERGE: Duration = Duration::from_secs(15);
const PROBE: Duration = Duration::from_millis(300);

fn ports(n: usize, seed: u16) -> impl Iterator<Item = u16> {
    (0..n as u16).map(move |i| 10_000 + seed.wrapping_mul(1000) % 40_000 + i)
}

/// Every probe answered, by the owner `xnlb owner` names; returns the split.
fn all_answered_by_owner(c: &Cluster, ask: u8, n: usize, seed: u16) -> HashMap<u8, usize> {
    let mut split = HashMap::new();
    for p in ports(n, seed) {
        let owner = c
            .owner(ask, p)
            .unwrap_or_else(|| panic!("port {p}: no owner"));
        let got = c.tcp_probe(p, PROBE);
        assert_eq!(
            got,
            Some(owner),
            "client port {p}: answered by {got:?}, xnlb owner says {owner}"
        );
        *split.entry(owner).or_default() += 1;
    }
    split
}

#[test]
fn three_nodes_answer_each_connection_once_by_the_owner_and_follow_the_weights() {
    let spec = ClusterSpec {
        nodes: vec![
            NodeSpec {
                id: 1,
                role: "active",
                weight: 100,
            },
            NodeSpec {
                id: 2,
                role: "active",
                weight: 100,
            },
            NodeSpec {
                id: 3,
                role: "active",
                weight: 200,
            },
        ],
        ..ClusterSpec::actives(3)
    };
    let c = Cluster::start(&spec);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let s = c.status(3).expect("status");
    assert_eq!(
        s.buckets.owned, 2048,
        "weight 200 of 400 owns half the buckets"
    );
    let split = all_answered_by_owner(&c, 1, 1000, 1);
    println!("1000 connections: {split:?}");
    let share3 = split[&3] as f64 / 1000.0;
    assert!(
        (0.44..0.56).contains(&share3),
        "node 3 (weight 200/400) took {share3:.2} of connections"
    );
    for id in [1, 2] {
        let share = split[&id] as f64 / 1000.0;
        assert!(
            (0.19..0.31).contains(&share),
            "node {id} (weight 100/400) took {share:.2}"
        );
    }
    // UDP: each datagram accepted by exactly one node.
    for i in 0..300u64 {
        assert!(
            c.udp_probe(30_000 + i as u16, i, PROBE).is_some(),
            "datagram {i} unanswered"
        );
    }
    c.assert_no_overlap("weights");
}

/// Kills (SIGKILL) one agent: its data plane fences itself when the lease
/// runs out, the others take its buckets; no datagram is accepted twice and
/// every bucket is served again within dead_after + a few heartbeats.
#[test]
fn a_crashed_agent_is_replaced_without_overlap() {
    let mut c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let t0 = Instant::now();
    c.kill(3);
    // Probe continuously: UDP datagrams with unique ids from many ports.
    let mut last_fail = None;
    let mut id = 1_000_000u64;
    while t0.elapsed() < Duration::from_millis(1500) {
        id += 1;
        if c.udp_probe(
            20_000 + (id % 20_000) as u16,
            id,
            Duration::from_millis(100),
        )
        .is_none()
        {
            last_fail = Some(t0.elapsed());
        }
    }
    let outage = last_fail.unwrap_or_default();
    println!("crash: last unanswered datagram sent {outage:?} after SIGKILL");
    assert!(
        outage < Duration::from_millis(600),
        "outage {outage:?} past the failover bound"
    );
    c.assert_no_overlap("crash");
    c.wait_converged(&[1, 2], CONVERGE);
    let split = all_answered_by_owner(&c, 1, 200, 2);
    assert!(
        !split.contains_key(&3),
        "the dead node still answers: {split:?}"
    );
}

/// A frozen agent (SIGSTOP) fences itself; after SIGCONT it rejoins and gets
/// its share back.
#[test]
fn a_frozen_agent_fences_itself_and_rejoins_after_sigcont() {
    let mut c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    c.freeze(2);
    let t0 = Instant::now();
    let mut id = 2_000_000u64;
    while t0.elapsed() < Duration::from_millis(1200) {
        id += 1;
        c.udp_probe(
            20_000 + (id % 20_000) as u16,
            id,
            Duration::from_millis(100),
        );
    }
    c.wait_converged(&[1, 3], CONVERGE);
    let split = all_answered_by_owner(&c, 1, 100, 3);
    assert!(
        !split.contains_key(&2),
        "the frozen node answered: {split:?}"
    );
    c.thaw(2);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    c.assert_no_overlap("freeze");
    let s = c.status(2).expect("status");
    assert!(
        s.buckets.owned >= 1365,
        "node 2 back in its share: {}",
        s.buckets.owned
    );
}

/// Partition 1 vs 2 on the heartbeat link while client traffic still
/// reaches every node: the minority serves nothing, the majority everything.
#[test]
fn a_minority_partition_serves_nothing_and_heals() {
    let c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    c.cut_heartbeats(1);
    std::thread::sleep(Duration::from_millis(800));
    let s1 = c.status(1).expect("status of the minority node");
    assert!(!s1.quorum.has, "node 1 alone must not have quorum: {s1:?}");
    c.wait_converged(&[2, 3], CONVERGE);
    let mut id = 3_000_000u64;
    for p in 0..200u16 {
        id += 1;
        let got = c.udp_probe(40_000 + p, id, PROBE);
        assert!(
            matches!(got, Some(2) | Some(3)),
            "datagram {id} answered by {got:?}"
        );
    }
    c.assert_no_overlap("minority partition");
    c.heal_heartbeats(1);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let split = all_answered_by_owner(&c, 2, 150, 4);
    assert_eq!(split.len(), 3, "after healing all three serve: {split:?}");
}

/// A node whose heartbeats no longer leave (but which still hears everyone)
/// must stop serving before the others take its buckets.
#[test]
fn an_asymmetric_partition_never_overlaps() {
    let c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    c.drop_outgoing_heartbeats(3);
    let t0 = Instant::now();
    let mut id = 4_000_000u64;
    while t0.elapsed() < Duration::from_millis(1500) {
        id += 1;
        c.udp_probe(
            20_000 + (id % 20_000) as u16,
            id,
            Duration::from_millis(100),
        );
    }
    c.assert_no_overlap("asymmetric partition");
    c.wait_converged(&[1, 2], CONVERGE);
    c.allow_outgoing_heartbeats(3);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    c.assert_no_overlap("after healing");
}

/// A VIP health check drains a node whose service is down (the others take
/// its buckets, no connection goes to it) and resumes it when the service
/// comes back.
#[test]
fn a_failing_health_check_drains_the_node_until_it_passes() {
    const PORT: u16 = 9100;
    let spec = ClusterSpec {
        health_tcp_port: Some(PORT),
        ..ClusterSpec::actives(3)
    };
    let c = Cluster::start(&spec);
    // Nodes 2 and 3 have a healthy service; node 1 has none.
    let _svc2 = c
        .ns(2)
        .enter(|| std::net::TcpListener::bind(("127.0.0.1", PORT)))
        .expect("listen");
    let _svc3 = c
        .ns(3)
        .enter(|| std::net::TcpListener::bind(("127.0.0.1", PORT)))
        .expect("listen");
    let drained = wait_until(CONVERGE, || {
        c.status(1)
            .is_some_and(|s| s.state == "drained" && s.buckets.owned == 0)
    });
    assert!(
        drained,
        "node 1 never drained: {:?}\n{}",
        c.status(1),
        c.log_tail(1, 10)
    );
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let split = all_answered_by_owner(&c, 2, 150, 5);
    assert!(
        !split.contains_key(&1),
        "a drained node answered: {split:?}"
    );
    // The service comes up on node 1: it resumes and takes its share.
    let _svc1 = c
        .ns(1)
        .enter(|| std::net::TcpListener::bind(("127.0.0.1", PORT)))
        .expect("listen");
    let resumed = wait_until(CONVERGE, || {
        c.status(1)
            .is_some_and(|s| s.state == "active" && s.buckets.owned >= 1365)
    });
    assert!(
        resumed,
        "node 1 never resumed: {:?}\n{}",
        c.status(1),
        c.log_tail(1, 10)
    );
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let split = all_answered_by_owner(&c, 3, 150, 6);
    assert_eq!(split.len(), 3, "all three serve again: {split:?}");
    c.assert_no_overlap("health check");
}

/// `failback = "manual"`: a member returning after a failure stays drained
/// (owns nothing) until an operator resumes it.
#[test]
fn manual_failback_keeps_a_returning_member_drained_until_resume() {
    let spec = ClusterSpec {
        failback: "manual",
        ..ClusterSpec::actives(3)
    };
    let mut c = Cluster::start(&spec);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    c.kill(3);
    c.wait_converged(&[1, 2], CONVERGE);
    c.start_agent(3);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    std::thread::sleep(Duration::from_millis(500));
    let s3 = c.status(3).expect("status");
    assert_eq!(
        (s3.state.as_str(), s3.buckets.owned),
        ("drained", 0),
        "returned member must wait for resume: {s3:?}"
    );
    let split = all_answered_by_owner(&c, 1, 100, 7);
    assert!(
        !split.contains_key(&3),
        "a held-back member answered: {split:?}"
    );
    let r = c.control(3, xnlb::control::Request::Resume);
    assert!(r.ok, "resume: {r:?}");
    let back = wait_until(CONVERGE, || {
        c.status(3).is_some_and(|s| s.buckets.owned >= 1365)
    });
    assert!(back, "node 3 not back after resume: {:?}", c.status(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    c.assert_no_overlap("manual failback");
}

/// `xnlb stop` over the control socket: the agent leaves gracefully and
/// exits 0, the others serve every bucket, nothing is accepted twice.
#[test]
fn stop_over_the_control_socket_leaves_gracefully() {
    let mut c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let r = c.control(2, xnlb::control::Request::Stop);
    assert!(r.ok, "stop: {r:?}");
    let status = c
        .wait_exit(2, Duration::from_secs(10))
        .expect("agent 2 exits after stop");
    assert!(status.success(), "agent 2 exit status {status:?}");
    c.wait_converged(&[1, 3], CONVERGE);
    let split = all_answered_by_owner(&c, 1, 150, 8);
    assert!(
        !split.contains_key(&2),
        "a stopped node answered: {split:?}"
    );
    assert_eq!(
        c.status(1).expect("status").buckets.owned + c.status(3).expect("status").buckets.owned,
        4096
    );
    c.assert_no_overlap("stop");
}
