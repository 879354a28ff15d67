//! From a validated [`Config`] to what the two cores need: the data-plane
//! table template (VIPs, rules, single-slot numbers, hash seed) and the
//! protocol configuration, plus the fingerprint every member must share.

use sha2::{Digest, Sha256};
use xnlb_common::{
    addr_words, affinity, compile_rules, family, mac_mode, mode, proto_mask, seed_from_name, Rule,
    Table, Vip as DpVip,
};

use crate::config::{Affinity, Config, MacMode, Mode, Protocol, Role, VipMode};
use crate::flow::ip_bytes;

/// What a configuration compiles to.
pub struct Plan {
    /// VIPs and rules with nothing owned: the protocol's installs fill in
    /// the slot states.
    pub table: Box<Table>,
    /// Priority list of each single slot, in slot order.
    pub single_slots: Vec<Vec<u8>>,
    /// Digest of everything members must agree on (not weights, which are
    /// negotiated, nor addresses, which are local).
    pub fingerprint: [u8; 32],
}

fn dp_mode(m: Mode) -> u8 {
    match m {
        Mode::Multiple => mode::MULTIPLE,
        Mode::Single => mode::SINGLE,
        Mode::Disabled => mode::DISABLED,
    }
}

/// Compiles `cfg`.
pub fn plan(cfg: &Config) -> Plan {
    let mut table = Box::new(Table::empty());
    table.seed = seed_from_name(cfg.cluster_name.as_bytes());
    table.buckets = cfg.buckets;
    let mut single_slots: Vec<Vec<u8>> = Vec::new();
    let mut new_slot = |priority: &[u8]| -> u16 {
        single_slots.push(priority.to_vec());
        (single_slots.len() - 1) as u16
    };
    for (i, v) in cfg.vips.iter().enumerate() {
        let mut d = DpVip {
            addr: addr_words(&ip_bytes(v.address)),
            family: if v.address.is_ipv4() {
                family::V4
            } else {
                family::V6
            },
            mac_mode: match (v.mode, v.mac_mode) {
                (VipMode::Routed, _) => mac_mode::ROUTED,
                (_, MacMode::Unicast) => mac_mode::UNICAST,
                (_, MacMode::Multicast) => mac_mode::MULTICAST,
            },
            default_mode: dp_mode(v.default),
            index: i as u16,
            ..DpVip::default()
        };
        if v.default == Mode::Single {
            d.default_slot = new_slot(&v.default_priority);
        }
        for (j, r) in v.rules.iter().enumerate() {
            d.rules[j] = Rule {
                proto_mask: match r.protocol {
                    Protocol::Tcp => proto_mask::TCP,
                    Protocol::Udp => proto_mask::UDP,
                    Protocol::Both => proto_mask::TCP | proto_mask::UDP,
                },
                mode: dp_mode(r.mode),
                affinity: match r.affinity {
                    Affinity::None => affinity::NONE,
                    Affinity::Single => affinity::SINGLE,
                    Affinity::Network => affinity::NETWORK,
                },
                port_lo: r.port_lo,
                port_hi: r.port_hi,
                slot: if r.mode == Mode::Single {
                    new_slot(&r.priority)
                } else {
                    0
                },
                ..Rule::default()
            };
        }
        d.nrules = v.rules.len() as u8;
        // The data plane finds a packet's rule in the compiled port map; a
        // VIP whose rules split too many port ranges stays uncompiled and
        // is scanned rule by rule, with the same first-match answers.
        compile_rules(&mut d, &mut table.port_maps[i]);
        table.vips[i] = d;
    }
    table.nvips = cfg.vips.len() as u32;
    let fingerprint = fingerprint(cfg);
    Plan {
        table,
        single_slots,
        fingerprint,
    }
}

/// SHA-256 of a canonical text of the cluster-wide settings.
fn fingerprint(cfg: &Config) -> [u8; 32] {
    let mut text = format!(
        "xnlb-fp-1\nname={}\nbuckets={}\nheartbeat={}\ndead_after={}\n",
        cfg.cluster_name, cfg.buckets, cfg.heartbeat_interval_ms, cfg.dead_after_ms
    );
    for m in &cfg.members {
        text += &format!("member {} {:?} links={}\n", m.id, m.role, m.addrs.len());
    }
    for v in &cfg.vips {
        // `unicast=true|false`, as when the mode was a bool: the text is
        // hashed into every datagram, so it must not change.
        text += &format!(
            "vip {} unicast={} default={:?} {:?}\n",
            v.address,
            v.mac_mode == MacMode::Unicast,
            v.default,
            v.default_priority
        );
        // Only a routed VIP adds a line: the text of every flood-mode
        // configuration (and so its fingerprint) stays what it was.
        if v.mode == VipMode::Routed {
            text += "  routed\n";
        }
        for r in &v.rules {
            text += &format!(
                "  rule {:?} {}-{} {:?} {:?} {:?}\n",
                r.protocol, r.port_lo, r.port_hi, r.mode, r.affinity, r.priority
            );
        }
    }
    Sha256::digest(text.as_bytes()).into()
}

/// The config keys whose values differ between `old` and `new` among those
/// every member must share (the fingerprint): a running node cannot change
/// them alone, so a reload that touches them is refused, naming them.
pub fn cluster_wide_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if fingerprint(old) == fingerprint(new) {
        return keys;
    }
    if old.cluster_name != new.cluster_name {
        keys.push("cluster.name");
    }
    if old.buckets != new.buckets {
        keys.push("cluster.buckets");
    }
    if old.heartbeat_interval_ms != new.heartbeat_interval_ms {
        keys.push("cluster.heartbeat_interval_ms");
    }
    if old.dead_after_ms != new.dead_after_ms {
        keys.push("cluster.dead_after_ms");
    }
    let members = |c: &Config| -> Vec<(u8, Role, usize)> {
        c.members
            .iter()
            .map(|m| (m.id, m.role, m.addrs.len()))
            .collect()
    };
    if members(old) != members(new) {
        keys.push("[[cluster.member]] (ids, roles or number of addresses)");
    }
    let vips = |c: &Config| -> Vec<String> {
        c.vips
            .iter()
            .map(|v| {
                format!(
                    "{} {:?} {:?} {:?} {:?} {:?}",
                    v.address,
                    v.mode,
                    v.mac_mode,
                    v.default,
                    v.default_priority,
                    v.rules
                        .iter()
                        .map(|r| {
                            (
                                r.protocol,
                                r.port_lo,
                                r.port_hi,
                                r.mode,
                                r.affinity,
                                r.priority.clone(),
                            )
                        })
                        .collect::<Vec<_>>()
                )
            })
            .collect()
    };
    if vips(old) != vips(new) {
        keys.push("[[vip]] (addresses, modes, MAC mode, defaults or rules)");
    }
    if keys.is_empty() {
        keys.push("cluster-wide settings");
    }
    keys
}

/// The protocol core's configuration.
pub fn proto_config(cfg: &Config, plan: &Plan, key: Vec<u8>) -> xnlb_proto::Config {
    xnlb_proto::Config {
        self_id: cfg.node_id,
        cluster_name: cfg.cluster_name.clone(),
        members: cfg
            .members
            .iter()
            .map(|m| xnlb_proto::MemberConfig {
                id: m.id,
                role: m.role,
                weight: m.weight,
                addrs: m.addrs.len(),
            })
            .collect(),
        buckets: cfg.buckets,
        single_slots: plan.single_slots.clone(),
        heartbeat_interval_ns: cfg.heartbeat_interval_ms * 1_000_000,
        dead_after_ns: cfg.dead_after_ms * 1_000_000,
        drain_timeout_ns: cfg.drain_timeout_s * 1_000_000_000,
        hold_cap_ns: xnlb_proto::quorum::HOLD_CAP_NS,
        failback: cfg.failback,
        key,
        fingerprint: plan.fingerprint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint travels in every datagram: its text must not change
    /// with the agent's types (a role, a MAC mode), or nodes of two builds
    /// would refuse each other.
    #[test]
    fn the_fingerprint_text_is_stable() {
        let src = r#"
[node]
id = 1
interface = "eth0"
[cluster]
name = "fp"
key_file = "/nonexistent"
listen = ["198.19.1.1:7450"]
[[cluster.member]]
id = 1
addrs = ["198.19.1.1:7450"]
[[cluster.member]]
id = 2
addrs = ["198.19.1.2:7450"]
role = "standby"
[[cluster.member]]
id = 3
addrs = ["198.19.1.3:7450"]
role = "witness"
[[vip]]
address = "198.18.0.100"
mac_mode = "unicast"
[[vip.rule]]
protocol = "tcp"
ports = "80"
[[vip]]
address = "fd00::100"
default = "multiple"
"#;
        let cfg = Config::parse(std::path::Path::new("fp.toml"), src).expect("valid config");
        let text = "xnlb-fp-1\nname=fp\nbuckets=4096\nheartbeat=50\ndead_after=250\n\
            member 1 Active links=1\nmember 2 Standby links=1\nmember 3 Witness links=1\n\
            vip 198.18.0.100 unicast=true default=Single [1, 2]\n\
            \x20 rule Tcp 80-80 Multiple None [1, 2]\n\
            vip fd00::100 unicast=false default=Multiple [1, 2]\n";
        let expected: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        assert_eq!(
            fingerprint(&cfg),
            expected,
            "expected the digest of:\n{text}"
        );
    }

    /// A routed VIP is cluster-wide: members that disagree on it refuse
    /// each other, and a reload cannot change it.
    #[test]
    fn the_vip_mode_is_in_the_fingerprint_and_refused_at_reload() {
        let flood = crate::config::Config::parse(
            std::path::Path::new("a.toml"),
            include_str!("../../examples/xnlb.toml"),
        )
        .expect("example config");
        let mut routed = flood.clone();
        routed.vips[0].mode = VipMode::Routed;
        assert_ne!(fingerprint(&flood), fingerprint(&routed));
        let changed = cluster_wide_changes(&flood, &routed);
        assert!(
            changed.iter().any(|k| k.contains("[[vip]]")),
            "expected the VIPs named, got {changed:?}"
        );
    }
}
