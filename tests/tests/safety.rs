//! Safety under ordinary operator actions and host faults, with real agents
//! in namespaces (DESIGN S1-S3): a reload that touches cluster-wide
//! settings, a state file that cannot be written, one that cannot be read.
//! Every scenario probes the VIP throughout and fails on any datagram that
//! two nodes accepted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use xnlb_tests::cluster::checks::{status, CONVERGE};
use xnlb_tests::cluster::{wait_until, Cluster, ClusterSpec};
use xnlb_tests::traffic::Probe;

/// Probes sent in `[from, to)` that nobody answered.
fn unanswered_between(probes: &[Probe], from: Duration, to: Duration) -> usize {
    probes
        .iter()
        .filter(|p| p.at >= from && p.at < to && p.node.is_none())
        .count()
}

#[test]
fn a_reload_that_changes_cluster_wide_settings_is_refused_and_nothing_overlaps() {
    let mut c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let epoch = status(&c, 1).epoch;
    let prober = c.prober(70_000_000);
    std::thread::sleep(Duration::from_millis(300));

    // Raise dead_after on node 1 only (the reproducer): before the
    // fix node 1 took a lease from its own 2 s while its peers, who no
    // longer understood it, fenced it after 250 ms and served its flows.
    c.edit_config(1, |t| {
        t.replacen("[cluster]\n", "[cluster]\ndead_after_ms = 2000\n", 1)
    });
    c.reload(1);
    let refused1 = wait_until(Duration::from_secs(3), || {
        c.log(1).contains("reload rejected") && c.log(1).contains("cluster.dead_after_ms")
    });

    // A VIP rule change and a heartbeat change on node 2 likewise.
    c.edit_config(2, |t| {
        t.replacen("ports = \"1-65535\"", "ports = \"1-30000\"", 1)
            .replacen("[cluster]\n", "[cluster]\nheartbeat_interval_ms = 20\n", 1)
    });
    c.reload(2);
    let refused2 = wait_until(Duration::from_secs(3), || {
        let log = c.log(2);
        log.contains("reload rejected")
            && log.contains("[[vip]]")
            && log.contains("cluster.heartbeat_interval_ms")
    });

    // Nothing changed: same epoch, everyone active, every probe answered
    // once.
    std::thread::sleep(Duration::from_secs(3));
    let probes = prober.finish();
    c.assert_no_overlap("reloads of cluster-wide settings");
    assert!(refused1, "no refusal naming the key\n{}", c.log_tail(1, 15));
    assert!(refused2, "no refusal naming both\n{}", c.log_tail(2, 15));
    for id in 1..=3 {
        let s = status(&c, id);
        assert_eq!(s.state, "active", "node {id}: {s:?}");
        assert_eq!(
            s.epoch, epoch,
            "node {id}: the refused reloads changed the map"
        );
    }
    let lost = unanswered_between(&probes, Duration::ZERO, Duration::MAX);
    println!(
        "refused reloads: {} probes, {lost} unanswered, 0 overlaps",
        probes.len()
    );
    assert_eq!(lost, 0, "probes went unanswered");
}

/// A tiny tmpfs mounted over a node's state directory, unmounted on drop
/// (also when the test fails).
struct TinyFs {
    dir: PathBuf,
}

impl TinyFs {
    fn mount(dir: &Path) -> TinyFs {
        std::fs::create_dir_all(dir).expect("state dir");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=256k",
                "xnlb-test",
                &dir.to_string_lossy(),
            ])
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mounting a tmpfs on {}", dir.display());
        TinyFs {
            dir: dir.to_path_buf(),
        }
    }

    /// Fills the filesystem so the next write fails with ENOSPC.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4k", "count=1024"])
            .arg(format!("of={}", self.dir.join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.dir.join("filler"));
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn a_node_whose_state_writes_fail_falls_silent_is_fenced_and_rejoins() {
    let mut spec = ClusterSpec::actives(3);
    spec.deferred = vec![2];
    let mut c = Cluster::start(&spec);
    let fs = TinyFs::mount(&c.state_dir(2));
    c.start_agent(2);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let prober = c.prober(71_000_000);
    let t_probe = Instant::now();
    std::thread::sleep(Duration::from_millis(300));

    // Disk full on node 2, then an epoch that needs everyone's votes.
    fs.fill();
    let t_fault = Instant::now();
    let _ = c.control(1, xnlb::control::Request::Rebalance);
    let fenced = wait_until(Duration::from_secs(5), || {
        c.status(1)
            .is_some_and(|s| s.members.iter().any(|m| m.id == 2 && m.state == "dead"))
            && c.status(1).is_some_and(|s| s.converged)
    });
    assert!(fenced, "node 2 was not fenced\n{}", c.log_tail(2, 20));
    let s2 = status(&c, 2);
    assert_eq!(s2.state, "fenced", "{s2:?}");
    assert!(
        s2.blocked
            .as_deref()
            .is_some_and(|b| b.contains("state file")),
        "{s2:?}"
    );
    assert!(
        c.log(2).contains("writing the state file"),
        "{}",
        c.log_tail(2, 20)
    );
    let fenced_after = t_fault.elapsed();
    let served_from = t_probe.elapsed();
    std::thread::sleep(Duration::from_millis(1000));
    let served_to = t_probe.elapsed();

    // Space again: the next retry succeeds and node 2 rejoins (its buckets
    // move back with the usual short handoff gap for UDP).
    fs.free();
    c.wait_converged(&[1, 2, 3], CONVERGE);
    std::thread::sleep(Duration::from_millis(300));
    let probes = prober.finish();
    c.assert_no_overlap("state writes failing on node 2");
    let lost = unanswered_between(&probes, served_from, served_to);
    println!(
        "disk full on node 2: fenced by the others after {fenced_after:?}; {} probes, {lost} unanswered in the second after that, {} in the whole run",
        probes.len(),
        unanswered_between(&probes, Duration::ZERO, Duration::MAX)
    );
    assert_eq!(lost, 0, "buckets left unserved after the fence");
    assert!((1365..=1366).contains(&status(&c, 2).buckets.owned));
    drop(c);
    drop(fs);
}

#[test]
fn an_unusable_state_file_stops_the_start_and_says_how_to_recover() {
    let mut c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    c.kill(3);
    let file = c.state_dir(3).join("node3.state");
    let mut bytes = std::fs::read(&file).expect("node 3 wrote its state");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, &bytes).expect("corrupt it");

    c.start_agent(3);
    let st = c
        .wait_exit(3, Duration::from_secs(10))
        .expect("agent exits");
    let log = c.log(3);
    assert_eq!(st.code(), Some(2), "exit status\n{log}");
    assert!(log.contains("checksum"), "{log}");
    assert!(log.contains(&file.display().to_string()), "{log}");
    assert!(log.contains("To recover"), "{log}");

    // The documented recovery: once the others show it dead, move the file
    // away and start again.
    let dead = wait_until(Duration::from_secs(5), || {
        c.status(1)
            .is_some_and(|s| s.members.iter().any(|m| m.id == 3 && m.state == "dead"))
    });
    assert!(dead);
    std::fs::rename(&file, file.with_extension("broken")).expect("move away");
    let prober = c.prober(72_000_000);
    c.start_agent(3);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    std::thread::sleep(Duration::from_millis(300));
    let _ = prober.finish();
    c.assert_no_overlap("restart after a corrupt state file");
    assert!((1365..=1366).contains(&status(&c, 3).buckets.owned));
}
