//! Member roles with real agents in namespaces: a witness that breaks ties
//! and serves nothing, a standby that takes exactly a failed active's
//! buckets and gives them back. Every test also asserts that no UDP probe
//! was accepted by two nodes.

use std::time::{Duration, Instant};

use xnlb_tests::cluster::checks::{
    node, outage, owned, status, tcp_all_by_owner, udp_all_by_owner, CONVERGE, FAILOVER_BOUND,
};
use xnlb_tests::cluster::{wait_until, Cluster, ClusterSpec};
use xnlb_tests::traffic::Probe;

/// Two actives and a witness (the 2-node cluster's tie-breaker). Losing
/// the witness costs nothing (quorum 2 of 3, no bucket moves); after it
/// returns, losing an active leaves the other serving every bucket.
#[test]
fn two_actives_and_a_witness_survive_either_loss() {
    let t0 = Instant::now();
    let spec = ClusterSpec {
        nodes: vec![node(1, "active"), node(2, "active"), node(3, "witness")],
        ..ClusterSpec::actives(3)
    };
    let mut c = Cluster::start(&spec);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let (b1, b2) = (owned(&c, 1), owned(&c, 2));
    assert_eq!((b1.len(), b2.len()), (2048, 2048), "actives split evenly");
    assert_eq!(status(&c, 3).buckets.owned, 0, "the witness owns nothing");
    let split = udp_all_by_owner(&c, 1, 40_000..40_100, 1);
    assert_eq!(split.keys().copied().collect::<Vec<_>>(), vec![1, 2]);

    // Witness lost: nothing moves, nothing goes unanswered.
    let prober = c.prober(10_000_000);
    c.kill(3);
    std::thread::sleep(Duration::from_millis(1500));
    let probes = prober.finish();
    let unanswered: Vec<&Probe> = probes.iter().filter(|p| p.node.is_none()).collect();
    assert!(
        unanswered.is_empty(),
        "witness loss: {} of {} probes unanswered, e.g. {:?}",
        unanswered.len(),
        probes.len(),
        unanswered.first()
    );
    c.wait_converged(&[1, 2], CONVERGE);
    let s1 = status(&c, 1);
    assert!(
        s1.quorum.has && s1.quorum.votes == 2,
        "quorum 2 of 3: {s1:?}"
    );
    assert_eq!(owned(&c, 1), b1, "witness loss moved node 1's buckets");
    assert_eq!(owned(&c, 2), b2, "witness loss moved node 2's buckets");
    c.assert_no_overlap("witness loss");

    // Witness back, then an active lost: the other serves everything.
    c.start_agent(3);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let prober = c.prober(11_000_000);
    std::thread::sleep(Duration::from_millis(100));
    c.kill(2);
    std::thread::sleep(Duration::from_millis(1500));
    let probes = prober.finish();
    let kill_offset = probes
        .iter()
        .map(|p| p.at)
        .find(|&at| at >= Duration::from_millis(100))
        .unwrap_or_default();
    let (last_fail, who) = outage(&probes, kill_offset + FAILOVER_BOUND);
    let gap = last_fail.saturating_sub(kill_offset);
    println!(
        "witness: active lost, last unanswered probe {gap:?} after the kill; then answered by {who:?}"
    );
    assert!(gap < FAILOVER_BOUND, "failover took {gap:?}");
    assert_eq!(who.keys().copied().collect::<Vec<_>>(), vec![1]);
    c.wait_converged(&[1, 3], CONVERGE);
    assert_eq!(status(&c, 1).buckets.owned, 4096, "node 1 owns everything");
    let split = tcp_all_by_owner(&c, 1, 41_000..41_100);
    assert_eq!(split.keys().copied().collect::<Vec<_>>(), vec![1]);
    c.assert_no_overlap("active loss");
    println!("two_actives_and_a_witness: {:?}", t0.elapsed());
}

/// N+1: a standby owns nothing until an active fails, then takes exactly
/// that active's buckets (the survivor's do not move: S5), and gives them
/// back when the active returns (failback auto).
#[test]
fn a_standby_takes_exactly_the_failed_actives_buckets_and_gives_them_back() {
    let t0 = Instant::now();
    let spec = ClusterSpec {
        nodes: vec![node(1, "active"), node(2, "active"), node(3, "standby")],
        ..ClusterSpec::actives(3)
    };
    let mut c = Cluster::start(&spec);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let (b1, b2) = (owned(&c, 1), owned(&c, 2));
    assert_eq!(status(&c, 3).buckets.owned, 0, "standby owns nothing");
    assert_eq!(b1.len() + b2.len(), 4096);
    assert!(
        b1.len().abs_diff(b2.len()) <= 1,
        "{} vs {}",
        b1.len(),
        b2.len()
    );
    let split = udp_all_by_owner(&c, 3, 40_000..40_100, 1);
    assert!(!split.contains_key(&3), "standby answered: {split:?}");

    let prober = c.prober(20_000_000);
    std::thread::sleep(Duration::from_millis(100));
    c.kill(1);
    std::thread::sleep(Duration::from_millis(1500));
    let probes = prober.finish();
    let (last_fail, who) = outage(&probes, Duration::from_millis(100) + FAILOVER_BOUND);
    let gap = last_fail.saturating_sub(Duration::from_millis(100));
    println!("standby: last unanswered probe {gap:?} after the kill; then {who:?}");
    assert!(gap < FAILOVER_BOUND, "failover took {gap:?}");
    c.wait_converged(&[2, 3], CONVERGE);
    assert_eq!(owned(&c, 3), b1, "standby took exactly node 1's buckets");
    assert_eq!(owned(&c, 2), b2, "node 2's buckets moved (S5)");
    assert_eq!(who.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    c.assert_no_overlap("active loss");

    let prober = c.prober(21_000_000);
    c.start_agent(1);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    assert!(
        wait_until(Duration::from_secs(5), || status(&c, 3).buckets.owned == 0),
        "standby kept buckets after failback: {:?}",
        status(&c, 3)
    );
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let probes = prober.finish();
    assert_eq!(owned(&c, 1), b1, "node 1 back in its buckets");
    assert_eq!(owned(&c, 2), b2, "node 2's buckets moved on failback (S5)");
    let split = udp_all_by_owner(&c, 2, 42_000..42_100, 22_000_000);
    assert!(!split.contains_key(&3), "standby still answers: {split:?}");
    c.assert_no_overlap("failback");
    println!(
        "standby: {} probes during failback; total {:?}",
        probes.len(),
        t0.elapsed()
    );
}
