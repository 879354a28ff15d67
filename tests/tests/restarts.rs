//! Agent restarts with real agents in namespaces: SIGKILL and an
//! immediate restart, a restart after the node was declared dead, SIGTERM
//! and start. Never an overlap; the node gets its share back each time.

use std::time::{Duration, Instant};

use xnlb_tests::cluster::checks::{outage, owned, status, tcp_all_by_owner, CONVERGE};
use xnlb_tests::cluster::{Cluster, ClusterSpec};
use xnlb_tests::traffic::Probe;

/// SIGKILL and an immediate restart, then a restart after the node was
/// declared dead, then SIGTERM (graceful leave) and start: never an
/// overlap, and the node is back in its share after each.
#[test]
fn restarted_agents_never_overlap_and_get_their_buckets_back() {
    let t0 = Instant::now();
    let mut c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let b3 = owned(&c, 3);
    let e0 = status(&c, 1).epoch;

    // SIGKILL + immediate restart.
    let prober = c.prober(90_000_000);
    std::thread::sleep(Duration::from_millis(200));
    c.kill(3);
    c.start_agent(3);
    let t_restart = Instant::now();
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let took = t_restart.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let probes = prober.finish();
    let (last_fail, who) = outage(&probes, Duration::ZERO);
    let unanswered = probes.iter().filter(|p| p.node.is_none()).count();
    let a3 = owned(&c, 3);
    println!(
        "kill+restart: converged {took:?} later, epoch {e0} -> {}, {unanswered} of {} probes unanswered (last at {last_fail:?}), {who:?}; same buckets: {}",
        status(&c, 1).epoch,
        probes.len(),
        a3 == b3
    );
    c.assert_no_overlap("SIGKILL + restart");
    assert!(
        (1365..=1366).contains(&a3.len()),
        "node 3 share: {}",
        a3.len()
    );
    let split = tcp_all_by_owner(&c, 3, 46_000..46_100);
    assert_eq!(split.len(), 3, "{split:?}");

    // SIGKILL, restart after the others declared it dead.
    let prober = c.prober(91_000_000);
    c.kill(3);
    std::thread::sleep(Duration::from_millis(600));
    c.start_agent(3);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    std::thread::sleep(Duration::from_millis(300));
    let probes = prober.finish();
    c.assert_no_overlap("SIGKILL + late restart");
    let a3 = owned(&c, 3);
    assert!(
        (1365..=1366).contains(&a3.len()),
        "node 3 share: {}",
        a3.len()
    );
    println!(
        "kill, 600 ms, restart: {} probes, {} unanswered",
        probes.len(),
        probes.iter().filter(|p| p.node.is_none()).count()
    );

    // SIGTERM: a graceful leave, then start again.
    let prober = c.prober(92_000_000);
    std::thread::sleep(Duration::from_millis(100));
    let st = c.terminate(3).expect("agent 3 exit status");
    assert!(
        st.success(),
        "SIGTERM exit status {st:?}\n{}",
        c.log_tail(3, 10)
    );
    c.wait_converged(&[1, 2], CONVERGE);
    let counts = (status(&c, 1).buckets.owned, status(&c, 2).buckets.owned);
    assert_eq!(counts, (2048, 2048), "after node 3 left");
    assert!(c.status(3).is_none(), "stopped agent still answers");
    c.start_agent(3);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    std::thread::sleep(Duration::from_millis(300));
    let probes = prober.finish();
    let unanswered: Vec<&Probe> = probes.iter().filter(|p| p.node.is_none()).collect();
    println!(
        "SIGTERM + start: {} probes, {} unanswered",
        probes.len(),
        unanswered.len()
    );
    c.assert_no_overlap("SIGTERM + start");
    let a3 = owned(&c, 3);
    assert!(
        (1365..=1366).contains(&a3.len()),
        "node 3 share: {}",
        a3.len()
    );
    let split = tcp_all_by_owner(&c, 1, 47_000..47_100);
    assert_eq!(split.len(), 3, "{split:?}");
    println!("restarts: {:?}", t0.elapsed());
}
