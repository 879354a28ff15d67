//! The rules: facts in, findings out, no IO.

use super::facts::arp_keys;
use super::{AgentFacts, Finding, HostFacts};
use crate::flood_probe::PROBE_INTERVAL;

/// Clock sources whose reads cost tens of nanoseconds (the XDP program
/// reads the boot-time clock for every packet it accepts).
const FAST_CLOCKSOURCES: &[&str] = &[
    "tsc",
    "kvm-clock",
    "arch_sys_counter",
    "hyperv_clocksource_tsc_page",
    "xen",
    "timebase",
    "riscv_clocksource",
];

/// A peer's probe older than this (three probe intervals) did not arrive;
/// probes are judged after listening this long.
pub const PROBE_STALE_MS: u64 = 3 * PROBE_INTERVAL.as_millis() as u64;

/// Every check, in a fixed order.
pub fn run(a: &AgentFacts, h: &HostFacts) -> Vec<Finding> {
    let mut out = vec![xdp(a)];
    out.extend(arp(a, h));
    out.extend(flooding(a));
    out.extend(forwarding(a));
    out.extend(clock(h));
    out.push(nofile(a));
    out.push(bpffs(a, h));
    out.push(state_dir(a));
    out.push(key(a, h));
    out.extend(links(a));
    out
}

fn xdp(a: &AgentFacts) -> Finding {
    let (Some(interface), Some(how)) = (&a.interface, &a.xdp) else {
        return Finding::ok(
            "xdp",
            "no XDP program: this node is a witness (serves nothing)",
        );
    };
    let driver = a.driver.as_deref().unwrap_or("unknown");
    let generic = how.contains("generic");
    if !generic {
        return Finding::ok(
            "xdp",
            format!("{how} (driver {driver}): packets are filtered before any skb exists"),
        );
    }
    match (a.xdp_requested.as_str(), driver) {
        ("generic", _) => Finding::ok(
            "xdp",
            format!("{how} (driver {driver}): node.xdp_mode = \"generic\" asks for it"),
        ),
        ("auto", "veth") => Finding::ok(
            "xdp",
            format!("{how} (driver veth): auto uses generic on veth, whose native hook runs after it classified the cluster MAC as another host's"),
        ),
        _ => Finding::problem(
            "xdp",
            format!("{how} (driver {driver}): native XDP failed on {interface}, every packet pays for an skb before it is filtered"),
            format!("use a NIC whose driver runs native XDP (e.g. ixgbe, i40e, ice, mlx5, bnxt, virtio_net) or a kernel where {driver} does; set node.xdp_mode = \"generic\" to accept this"),
        ),
    }
}

fn arp(a: &AgentFacts, h: &HostFacts) -> Vec<Finding> {
    let Some(interface) = &a.interface else {
        return Vec::new();
    };
    let keys = arp_keys(interface);
    let value = |k: &String| -> i64 {
        h.sysctls
            .get(k)
            .cloned()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    // The kernel uses the larger of `all` and the interface's value.
    for (name, need, why) in [
        (
            "arp_ignore",
            1,
            "the kernel may answer ARP for a VIP with this node's own MAC, pulling clients off the cluster MAC",
        ),
        (
            "arp_announce",
            2,
            "the kernel may use a VIP as the source of its own ARP requests, teaching neighbours this node's MAC for it",
        ),
    ] {
        let (all, dev) = (
            keys.iter().find(|k| k.contains(".all.") && k.ends_with(name)),
            keys.iter().find(|k| !k.contains(".all.") && k.ends_with(name)),
        );
        let (Some(all), Some(dev)) = (all, dev) else {
            continue;
        };
        let effective = value(all).max(value(dev));
        if (name == "arp_ignore" && effective >= need) || effective == need {
            out.push(Finding::ok(
                "arp",
                format!("{name} is {effective} on {interface} (max of all and {interface})"),
            ));
        } else {
            out.push(Finding::problem(
                "arp",
                format!("{name} is {effective} on {interface} ({all} = {}, {dev} = {}), xnlb needs {need}: {why}", value(all), value(dev)),
                format!("sysctl -w {dev}={need}, then find what reset it (NetworkManager, systemd-networkd, a sysctl.d file): the agent sets it at start"),
            ));
        }
    }
    out
}

fn flooding(a: &AgentFacts) -> Vec<Finding> {
    if a.interface.is_none() {
        return Vec::new();
    }
    if !a.probing {
        return vec![Finding::problem(
            "flooding",
            "the cluster-MAC probe is not running on this node (see the agent's log)",
            "run the agent as root (it needs CAP_NET_RAW for a packet socket) and restart it",
        )];
    }
    if a.probe_listening_ms < PROBE_STALE_MS {
        return vec![Finding::ok(
            "flooding",
            format!(
                "listened {} ms for peers' cluster-MAC probes: not judged yet (run again in a few seconds)",
                a.probe_listening_ms
            ),
        )];
    }
    let reachable = |id: u8| {
        a.members.iter().any(|m| {
            m.id == id
                && m.links
                    .iter()
                    .any(|l| l.heard_ms_ago.is_some_and(|t| t <= a.dead_after_ms))
        })
    };
    let mut out = Vec::new();
    for v in a.vips.iter().filter(|v| !v.routed) {
        let mut missing = Vec::new();
        let mut arrived = Vec::new();
        for (&id, &ago) in &v.probes {
            if !reachable(id) {
                continue;
            }
            match ago {
                Some(ms) if ms <= PROBE_STALE_MS => arrived.push(id.to_string()),
                _ => missing.push(id.to_string()),
            }
        }
        if missing.is_empty() {
            out.push(Finding::ok(
                "flooding",
                format!(
                    "frames to {} (VIP {}) from member(s) {} arrive here",
                    v.mac,
                    v.address,
                    if arrived.is_empty() {
                        "-".to_string()
                    } else {
                        arrived.join(", ")
                    }
                ),
            ));
        } else {
            let snooping = if v.mac_mode == "multicast" {
                if v.address.contains(':') {
                    "MLD snooping"
                } else {
                    "IGMP snooping"
                }
            } else {
                "a switch that learnt the unicast cluster MAC on one port"
            };
            out.push(Finding::problem(
                "flooding",
                format!(
                    "frames to {} (VIP {}) sent by member(s) {} do not arrive here: the segment does not flood the cluster MAC to this node ({snooping}?), so it never sees its buckets' packets",
                    v.mac, v.address, missing.join(", ")
                ),
                if v.mac_mode == "multicast" {
                    format!("turn {snooping} off on this VLAN, or add a static entry for {} on every node's port (Linux bridge: `ip link set BRIDGE type bridge mcast_snooping 0`), or use mac_mode = \"unicast\"", v.mac)
                } else {
                    format!("make sure no device ever sends from {} and age it out of the switch's table (or clear it)", v.mac)
                },
            ));
        }
    }
    out
}

/// Routed mode: every serving member must be reachable for forwarding.
fn forwarding(a: &AgentFacts) -> Vec<Finding> {
    let interface = a.interface.as_deref().unwrap_or("the data interface");
    a.forwarding
        .iter()
        .map(|(id, how)| match how {
            Some(how) => Finding::ok(
                "forwarding",
                format!("member {id} is {how} (routed VIPs)"),
            ),
            None => Finding::problem(
                "forwarding",
                format!("member {id} is not reachable from {interface}: none of its addresses is resolved on the segment or routed through {interface}, so the packets this node forwards to it drop (routed VIPs)"),
                format!("list member {id}'s address on {interface}'s segment (or one routed to it through {interface}) in its `addrs` on every node, and check that it is up"),
            ),
        })
        .collect()
}

fn clock(h: &HostFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    match h.clocksource.as_deref() {
        Some(c) if FAST_CLOCKSOURCES.contains(&c) => {
            out.push(Finding::ok("clock", format!("clock source {c}")))
        }
        Some(c) => out.push(Finding::problem(
            "clock",
            format!("clock source {c}: slow or coarse reads (the XDP program reads the boot-time clock for every packet it accepts; the lease follows it)"),
            "use tsc (or kvm-clock in a VM): see available_clocksource in /sys/devices/system/clocksource/clocksource0/ and boot with clocksource=tsc",
        )),
        None => out.push(Finding::problem(
            "clock",
            "the current clock source cannot be read",
            "mount sysfs on /sys",
        )),
    }
    let limit = 2.0 * h.coarse_tick_ms + 1.0;
    if h.coarse_lag_ms <= limit {
        out.push(Finding::ok(
            "clock",
            format!(
                "coarse clock lags at most {:.1} ms (tick {:.1} ms)",
                h.coarse_lag_ms, h.coarse_tick_ms
            ),
        ));
    } else {
        out.push(Finding::problem(
            "clock",
            format!(
                "coarse clock lagged {:.1} ms behind the precise one (tick {:.1} ms): the timekeeping tick stalls, and fragment tracking and the drop log in XDP age by it",
                h.coarse_lag_ms, h.coarse_tick_ms
            ),
            "do not run the NIC's CPUs with nohz_full, and look for a CPU stuck with interrupts off (dmesg: soft lockup)",
        ));
    }
    out
}

fn nofile(a: &AgentFacts) -> Finding {
    if a.nofile >= a.nofile_needed {
        Finding::ok(
            "nofile",
            format!(
                "RLIMIT_NOFILE {} (needs at most {})",
                a.nofile, a.nofile_needed
            ),
        )
    } else {
        Finding::problem(
            "nofile",
            format!(
                "RLIMIT_NOFILE {} is below the {} descriptors the agent may need: control or metrics clients would be refused",
                a.nofile, a.nofile_needed
            ),
            "set LimitNOFILE=65536 in the xnlb unit (systemctl edit xnlb) and restart it",
        )
    }
}

fn bpffs(a: &AgentFacts, h: &HostFacts) -> Finding {
    if h.bpffs {
        Finding::ok(
            "bpffs",
            if a.interface.is_some() {
                "/sys/fs/bpf is a BPF filesystem (the program and maps stay pinned across restarts)"
            } else {
                "no pins needed (witness)"
            },
        )
    } else {
        Finding::problem(
            "bpffs",
            "/sys/fs/bpf is not a BPF filesystem: pins would not outlive the agent, so a restart would leave the node unfiltered or fenced",
            "mount -t bpf bpf /sys/fs/bpf, and add it to /etc/fstab (bpf /sys/fs/bpf bpf defaults 0 0)",
        )
    }
}

fn state_dir(a: &AgentFacts) -> Finding {
    match &a.state_dir_error {
        None => Finding::ok(
            "state-dir",
            format!("{} is writable and syncs", a.state_dir.display()),
        ),
        Some(e) => Finding::problem(
            "state-dir",
            format!("{} is not writable ({e}): the node fences itself and falls silent until a state write succeeds", a.state_dir.display()),
            format!("make {} a writable, persistent directory owned by the agent's user (not a read-only or full filesystem)", a.state_dir.display()),
        ),
    }
}

fn key(a: &AgentFacts, h: &HostFacts) -> Finding {
    match &h.key_error {
        None => Finding::ok(
            "key",
            format!(
                "{} is private (mode 0600 or stricter)",
                a.key_file.display()
            ),
        ),
        Some(e) => Finding::problem(
            "key",
            format!("{e} (the running agent read it at start; a restart will refuse it)"),
            format!(
                "chmod 600 {} && chown root {}",
                a.key_file.display(),
                a.key_file.display()
            ),
        ),
    }
}

fn links(a: &AgentFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut silent = Vec::new();
    let mut heard = 0;
    for m in &a.members {
        for (i, l) in m.links.iter().enumerate() {
            match l.heard_ms_ago {
                Some(ms) if ms <= a.dead_after_ms => heard += 1,
                ago => silent.push(Finding::problem(
                    "links",
                    format!(
                        "member {} not heard on link {} ({} -> {}) {}",
                        m.id,
                        i + 1,
                        l.remote,
                        l.local,
                        match ago {
                            Some(ms) => format!("for {ms} ms (dead after {} ms)", a.dead_after_ms),
                            None => "since the agent started".into(),
                        }
                    ),
                    format!(
                        "check that member {}'s agent runs, the path between {} and {} and that the firewall on both passes UDP to the heartbeat port",
                        m.id, l.local, l.remote
                    ),
                )),
            }
        }
    }
    if silent.is_empty() {
        out.push(Finding::ok(
            "links",
            format!("every member heard on every link ({heard} member-links)"),
        ));
    }
    out.extend(silent);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{LinkFacts, MemberFacts, VipFacts};
    use std::collections::BTreeMap;

    fn healthy() -> (AgentFacts, HostFacts) {
        let a = AgentFacts {
            node_id: 1,
            interface: Some("eth0".into()),
            driver: Some("veth".into()),
            xdp_requested: "auto".into(),
            xdp: Some("generic (skb) mode on eth0".into()),
            nofile: 1024,
            nofile_needed: 200,
            state_dir: "/var/lib/xnlb".into(),
            state_dir_error: None,
            key_file: "/etc/xnlb/cluster.key".into(),
            uptime_ms: 60_000,
            dead_after_ms: 250,
            probing: true,
            probe_listening_ms: 5_000,
            members: vec![MemberFacts {
                id: 2,
                role: "active".into(),
                links: vec![LinkFacts {
                    local: "198.18.1.1:7450".into(),
                    remote: "198.18.1.2:7450".into(),
                    heard_ms_ago: Some(20),
                }],
            }],
            vips: vec![VipFacts {
                address: "198.18.0.100".into(),
                mac: "03:bf:c6:12:00:64".into(),
                mac_mode: "multicast".into(),
                probes: BTreeMap::from([(2, Some(400))]),
                routed: false,
            }],
            forwarding: BTreeMap::new(),
        };
        let mut sysctls = BTreeMap::new();
        for k in arp_keys("eth0") {
            let v = if k.ends_with("arp_ignore") { "1" } else { "2" };
            sysctls.insert(k, Some(v.to_string()));
        }
        let h = HostFacts {
            sysctls,
            clocksource: Some("tsc".into()),
            coarse_tick_ms: 4.0,
            coarse_lag_ms: 3.9,
            bpffs: true,
            key_error: None,
        };
        (a, h)
    }

    fn problems(a: &AgentFacts, h: &HostFacts) -> Vec<String> {
        run(a, h)
            .into_iter()
            .filter(|f| !f.ok)
            .map(|f| {
                assert!(f.fix.is_some(), "a problem without a fix: {f:?}");
                format!("{}: {}", f.check, f.line)
            })
            .collect()
    }

    #[test]
    fn a_healthy_node_has_no_problem() {
        let (a, h) = healthy();
        assert_eq!(problems(&a, &h), Vec::<String>::new());
    }

    #[test]
    fn each_fault_is_one_problem_of_its_check() {
        type Fault = fn(&mut AgentFacts, &mut HostFacts);
        let faults: [(&str, Fault); 11] = [
            ("xdp", |a, _| a.driver = Some("e1000".into())),
            ("arp", |_, h| {
                h.sysctls
                    .insert("net.ipv4.conf.all.arp_ignore".into(), Some("0".into()));
                h.sysctls
                    .insert("net.ipv4.conf.eth0.arp_ignore".into(), Some("0".into()));
            }),
            ("arp", |_, h| {
                h.sysctls
                    .insert("net.ipv4.conf.all.arp_announce".into(), Some("1".into()));
                h.sysctls
                    .insert("net.ipv4.conf.eth0.arp_announce".into(), Some("0".into()));
            }),
            ("flooding", |a, _| {
                a.vips[0].probes.insert(2, Some(10_000));
            }),
            ("clock", |_, h| h.clocksource = Some("hpet".into())),
            ("clock", |_, h| h.coarse_lag_ms = 50.0),
            ("nofile", |a, _| a.nofile = 64),
            ("bpffs", |_, h| h.bpffs = false),
            ("state-dir", |a, _| {
                a.state_dir_error = Some("Read-only file system".into())
            }),
            ("key", |_, h| h.key_error = Some("mode 644".into())),
            ("forwarding", |a, _| {
                a.forwarding.insert(2, None);
            }),
        ];
        for (check, fault) in faults {
            let (mut a, mut h) = healthy();
            fault(&mut a, &mut h);
            let p = problems(&a, &h);
            assert_eq!(p.len(), 1, "{check}: {p:?}");
            assert!(p[0].starts_with(check), "{check}: {p:?}");
        }
    }

    #[test]
    fn a_routed_vip_is_not_judged_by_flooding_but_by_forwarding() {
        let (mut a, h) = healthy();
        a.vips[0].routed = true;
        a.vips[0].probes.insert(2, None);
        a.forwarding.insert(2, Some("at 02:00:00:00:00:02".into()));
        assert!(problems(&a, &h).is_empty(), "{:?}", problems(&a, &h));
    }

    #[test]
    fn a_silent_member_is_a_link_problem_not_a_flooding_one() {
        let (mut a, h) = healthy();
        a.members[0].links[0].heard_ms_ago = Some(5_000);
        a.vips[0].probes.insert(2, None);
        let p = problems(&a, &h);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("links: member 2 not heard on link 1"),
            "{p:?}"
        );
    }
}
