//! `xnlb doctor` against real agents: a healthy cluster reports nothing
//! wrong (exit 0); each injected fault is reported by its own check, with
//! a fix, and exit status 1: IGMP snooping on the segment's bridge (the
//! cluster MAC is no longer flooded), a wrong ARP sysctl, a read-only
//! state directory, a 0644 key file, a member unreachable on its link.

use std::process::Command;
use std::time::{Duration, Instant};

use xnlb::doctor::Finding;
use xnlb_tests::cluster::checks::CONVERGE;
use xnlb_tests::cluster::{agent_binary, Cluster, ClusterSpec};

/// What `xnlb doctor --json` on node `id` (in its namespace) said.
struct Report {
    status: Option<i32>,
    findings: Vec<Finding>,
    text: String,
}

impl Report {
    fn problems(&self) -> Vec<&Finding> {
        self.findings.iter().filter(|f| !f.ok).collect()
    }

    fn failed_checks(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.problems().iter().map(|f| f.check.as_str()).collect();
        v.dedup();
        v
    }
}

fn doctor(c: &Cluster, id: u8) -> Report {
    let run = |json: bool| {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", c.ns(id).name))
            .arg("--")
            .arg(agent_binary())
            .arg("doctor")
            .arg("--socket")
            .arg(c.socket_path(id));
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("run xnlb doctor")
    };
    let out = run(true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let findings = serde_json::from_value(v["findings"].clone()).expect("findings");
    let text = String::from_utf8_lossy(&run(false).stdout).into_owned();
    Report {
        status: out.status.code(),
        findings,
        text,
    }
}

/// Runs doctor on node `id` until `done` holds (a fault takes a few
/// probe intervals to show, a heal a few heartbeats), at most 10 s.
fn doctor_until(c: &Cluster, id: u8, what: &str, done: impl Fn(&Report) -> bool) -> Report {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = doctor(c, id);
        if done(&r) {
            println!("== {what}: node {id}, exit {:?}\n{}", r.status, r.text);
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: doctor on node {id} never showed it; last report (exit {:?}):\n{}",
            r.status,
            r.text
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The fault is reported by `check` alone, with a fix naming `fix_says`,
/// and the status says something is wrong.
fn assert_reported(r: &Report, check: &str, line_says: &str, fix_says: &str) {
    assert_eq!(r.status, Some(1), "exit status with a fault:\n{}", r.text);
    assert_eq!(r.failed_checks(), vec![check], "{}", r.text);
    for f in r.problems() {
        let fix = f.fix.as_deref().unwrap_or_default();
        assert!(
            f.line.contains(line_says) && fix.contains(fix_says),
            "expected {check} to say {line_says:?} and fix {fix_says:?}: {f:?}"
        );
    }
    assert!(
        r.text.contains("FAIL") && r.text.contains("fix: "),
        "{}",
        r.text
    );
}

/// Packet sockets hooked for every protocol (ETH_P_ALL) in node `id`'s
/// namespace.
fn taps(c: &Cluster, id: u8) -> usize {
    c.ns(id)
        .sh("cat /proc/net/packet")
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(3) == Some(&"0003") && f.get(5) == Some(&"1")
        })
        .count()
}

fn healthy(r: &Report) -> bool {
    r.status == Some(0) && !r.text.contains("not judged yet")
}

#[test]
fn doctor_reports_each_injected_fault_with_its_fix_and_nothing_on_a_healthy_cluster() {
    let c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    // The probe's receive tap, which every packet would pass through, is
    // open only while doctor asks.
    assert_eq!(taps(&c, 1), 0, "a packet tap open before any doctor run");
    for id in [1, 2, 3] {
        let r = doctor_until(&c, id, "healthy cluster", healthy);
        assert!(r.problems().is_empty(), "{}", r.text);
    }
    assert_eq!(taps(&c, 1), 1, "the probe's tap while doctor runs");

    // A switch (here a Linux bridge) with IGMP snooping and a querier
    // forwards the cluster MAC's frames to multicast routers only (once
    // the querier's response interval, shortened here to 1 s, passed).
    c.data_bridge().sh(
        "ip link set br0 type bridge mcast_query_response_interval 100 && \
         ip link set br0 type bridge mcast_snooping 1 mcast_querier 1",
    );
    let r = doctor_until(&c, 1, "IGMP snooping on the bridge", |r| {
        r.failed_checks() == ["flooding"] && r.problems()[0].line.contains("2, 3")
    });
    assert_reported(&r, "flooding", "do not arrive here", "snooping");
    // The probe is treated as client traffic is: clients are cut off too.
    assert_eq!(
        c.tcp_probe(40_000, Duration::from_secs(1)),
        None,
        "a client connection through the snooping bridge was answered"
    );
    c.data_bridge()
        .sh("ip link set br0 type bridge mcast_snooping 0");
    doctor_until(&c, 1, "snooping off again", healthy);

    // Something (a network manager, a sysctl.d file) resets arp_ignore.
    c.ns(2)
        .sh("sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.eth0.arp_ignore=0");
    let r = doctor(&c, 2);
    assert_reported(
        &r,
        "arp",
        "arp_ignore is 0",
        "sysctl -w net.ipv4.conf.eth0.arp_ignore=1",
    );
    c.ns(2)
        .sh("sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1");
    doctor_until(&c, 2, "arp_ignore back", healthy);

    // The key file readable by others.
    let key = c.key_path().to_owned();
    let chmod = |mode: u32| {
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod key")
    };
    chmod(0o644);
    let r = doctor(&c, 3);
    assert_reported(&r, "key", "644", "chmod 600");
    chmod(0o600);
    doctor_until(&c, 3, "key 0600 again", healthy);

    // The state directory read-only (a bind mount over it).
    let dir = c.state_dir(1);
    let d = dir.display();
    // In this mount namespace (`ip netns exec` would make a private one).
    let mounted = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mount --bind {d} {d} && mount -o remount,bind,ro {d}"
        ))
        .status()
        .expect("mount");
    assert!(mounted.success());
    let r = {
        /// Unmounts even if the check below panics.
        struct Unmount<'a>(&'a std::path::Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg(self.0).status();
            }
        }
        let _unmount = Unmount(&dir);
        doctor(&c, 1)
    };
    assert_eq!(r.status, Some(1), "{}", r.text);
    let f = r
        .problems()
        .into_iter()
        .find(|f| f.check == "state-dir")
        .unwrap_or_else(|| panic!("state-dir not reported:\n{}", r.text));
    assert!(
        f.line.contains("not writable")
            && f.fix.as_deref().unwrap_or_default().contains("writable"),
        "{f:?}"
    );
    println!("== read-only state dir: node 1\n{}", r.text);
    c.wait_converged(&[1, 2, 3], CONVERGE);

    // A member silent on its heartbeat link.
    c.cut_heartbeats(3);
    let r = doctor_until(&c, 1, "member 3 cut off", |r| {
        r.failed_checks() == ["links"]
    });
    assert_reported(&r, "links", "member 3 not heard on link 1", "firewall");
    c.heal_heartbeats(3);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    for id in [1, 2, 3] {
        doctor_until(&c, id, "healed cluster", healthy);
    }
}
