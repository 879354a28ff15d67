//! The operator's command line against real agents: `xnlb drain --wait`
//! returns once the node owns nothing, with progress, and `resume` brings
//! it back.

use std::process::Command;

use xnlb_tests::cluster::checks::{status, CONVERGE};
use xnlb_tests::cluster::{agent_binary, Cluster, ClusterSpec};

#[test]
fn drain_wait_returns_once_the_node_owns_nothing() {
    let c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let out = Command::new(agent_binary())
        .args(["drain", "--wait", "--timeout", "5", "--socket"])
        .arg(c.socket_path(2))
        .output()
        .expect("run xnlb drain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drain --wait: {:?}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(text.contains("drained: 0 buckets owned"), "{text}");
    let s = status(&c, 2);
    assert_eq!((s.state.as_str(), s.buckets.owned), ("drained", 0), "{s:?}");
    let out = Command::new(agent_binary())
        .args(["resume", "--socket"])
        .arg(c.socket_path(2))
        .output()
        .expect("run xnlb resume");
    assert!(out.status.success());
    c.wait_converged(&[1, 2, 3], CONVERGE);
    assert!((1365..=1366).contains(&status(&c, 2).buckets.owned));
}
