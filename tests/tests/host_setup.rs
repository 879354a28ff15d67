//! The agent's host changes over netlink and ioctls: with an IPv4 VIP in
//! multicast MAC mode, one in unicast mode and an IPv6 VIP, a running
//! agent has every VIP on `lo`, the cluster and solicited-node MACs in the
//! NIC's multicast filter, the NIC promiscuous, the ARP sysctls set; after
//! SIGTERM the namespace is exactly as it was before.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xnlb_tests::cluster::agent_binary;
use xnlb_tests::netns::{fresh_dir, veth, Netns};

const SYSCTLS: &str = "net.ipv4.conf.all.arp_ignore net.ipv4.conf.all.arp_announce \
     net.ipv4.conf.eth0.arp_ignore net.ipv4.conf.eth0.arp_announce \
     net.ipv4.conf.eth0.drop_unicast_in_l2_multicast net.ipv6.conf.eth0.drop_unicast_in_l2_multicast";

/// Everything host setup may touch, as `ip` and `sysctl` print it.
fn snapshot(ns: &Netns) -> String {
    ns.sh(&format!(
        "ip -o addr show dev lo; ip maddr show dev eth0; ip -o link show dev eth0 | grep -o '<[^>]*>'; \
         ip -o link show dev lo | grep -o '<[^>]*>'; sysctl {SYSCTLS}"
    ))
}

/// The agent and what it leaves behind (its pins), cleaned up even when
/// the test fails.
struct Agent(std::process::Child, PathBuf);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn config(dir: &std::path::Path, pin_dir: &std::path::Path) -> String {
    format!(
        "[node]\nid = 1\ninterface = \"eth0\"\nstate_dir = \"{d}/state\"\npin_dir = \"{p}\"\n\n\
         [cluster]\nname = \"hostsetup\"\nkey_file = \"{d}/cluster.key\"\nlisten = [\"198.18.1.1:7450\"]\n\n\
         [[cluster.member]]\nid = 1\naddrs = [\"198.18.1.1:7450\"]\n\n\
         [[vip]]\naddress = \"198.18.0.100\"\n\n\
         [[vip]]\naddress = \"198.18.0.101\"\nmac_mode = \"unicast\"\n\n\
         [[vip]]\naddress = \"fd00::100\"\n\n\
         [control]\nsocket = \"{d}/xnlb.sock\"\nmetrics = \"\"\n",
        d = dir.display(),
        p = pin_dir.display()
    )
}

#[test]
fn host_setup_is_applied_over_netlink_and_undone_exactly() {
    xnlb_tests::require_root();
    let ns = Netns::new("hs");
    let peer = Netns::new("hp");
    veth(&ns, "eth0", &peer, "p0");
    ns.sh("ip addr add 198.18.1.1/24 dev eth0");
    let dir = fresh_dir(Path::new("/tmp"), "xnlb-host-");
    let pin_dir = fresh_dir(Path::new("/sys/fs/bpf"), "xnlb-host-");
    let key = Command::new(agent_binary())
        .args(["keygen", "--out"])
        .arg(dir.join("cluster.key"))
        .status()
        .expect("keygen");
    assert!(key.success());
    let cfg = dir.join("xnlb.toml");
    std::fs::write(&cfg, config(&dir, &pin_dir)).expect("config");
    let before = snapshot(&ns);

    let log = std::fs::File::create(dir.join("agent.log")).expect("log");
    let mut agent = Agent(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .arg("--")
            .arg(agent_binary())
            .args(["agent", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent"),
        pin_dir.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let during = loop {
        let s = snapshot(&ns);
        if s.contains("198.18.0.101") && s.contains("fd00::100") && s.contains("PROMISC") {
            break s;
        }
        assert!(
            Instant::now() < deadline && agent.0.try_wait().ok().flatten().is_none(),
            "host setup not applied: {s}\n{}",
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("while running:\n{during}");
    for want in [
        "inet 198.18.0.100/32",
        "inet 198.18.0.101/32",
        "inet6 fd00::100/128",
        "link  03:bf:c6:12:00:64",
        "link  33:33:ff:00:01:00",
        "net.ipv4.conf.all.arp_ignore = 1",
        "net.ipv4.conf.eth0.arp_announce = 2",
        "net.ipv4.conf.eth0.drop_unicast_in_l2_multicast = 1",
    ] {
        assert!(during.contains(want), "missing {want:?} in\n{during}");
    }
    assert!(
        during
            .lines()
            .any(|l| l.contains("LOOPBACK") && l.contains(",UP")),
        "lo not up:\n{during}"
    );
    // SAFETY: signalling the agent we started (nsenter execs it).
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.0.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "agent did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = snapshot(&ns);
    assert_eq!(
        after,
        before,
        "host not restored; agent log:\n{}",
        std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
