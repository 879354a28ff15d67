//! `xnlb explain`: why a flow goes where it goes on this node. Pure: the
//! caller passes the installed table and whether the lease is valid; the
//! answer is built from the same `xnlb_common` functions the XDP program
//! runs (rule match, flow hash, slot, the slot-state truth table), in the
//! order `ebpf/src/vip.rs` applies them, so it is the kernel's verdict.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use xnlb_common::{
    affinity, counter, forward_target, holding_verdict, ipproto, mac_mode, mode, proto_mask,
    rule_index, slot_state, slot_verdict, PacketKind, SlotVerdict, Table, MAX_BUCKETS,
};

use crate::flow::{classify, FlowSpec};

/// The IP protocol number of `proto` (`tcp`, `udp`, `icmp`) for a client
/// of family `v4`/IPv6 (ICMP echo is ICMPv6 for IPv6).
pub fn parse_proto(proto: &str, v4: bool) -> Result<u8, String> {
    match proto {
        "tcp" => Ok(ipproto::TCP),
        "udp" => Ok(ipproto::UDP),
        "icmp" if v4 => Ok(ipproto::ICMP),
        "icmp" => Ok(ipproto::ICMPV6),
        other => Err(format!("protocol {other:?}: expected tcp, udp or icmp")),
    }
}

/// The flow of `xnlb explain <proto> <client ip:port> [vip:port]`. The
/// VIP may be left out (or given as a bare port) when the cluster has one
/// VIP of the client's family; ICMP echo uses the echo id as client port
/// and VIP port 0.
pub fn parse_flow(
    table: &Table,
    proto: &str,
    client: &str,
    vip: Option<&str>,
) -> Result<FlowSpec, String> {
    let client: SocketAddr = client
        .parse()
        .map_err(|_| format!("client {client:?} is not IP:PORT (e.g. 198.18.1.5:40000)"))?;
    let proto = parse_proto(proto, client.is_ipv4())?;
    let only_vip = || -> Result<IpAddr, String> {
        let of_family: Vec<IpAddr> = vips(table)
            .into_iter()
            .filter(|v| v.is_ipv4() == client.is_ipv4())
            .collect();
        match of_family[..] {
            [one] => Ok(one),
            _ => Err(format!(
                "this cluster has {} VIPs of the client's family: name one as VIP:PORT",
                of_family.len()
            )),
        }
    };
    let (vip, port) = match vip {
        None => (only_vip()?, 0),
        Some(text) => {
            if let Ok(sa) = text.parse::<SocketAddr>() {
                (sa.ip(), sa.port())
            } else if let Ok(ip) = text.parse::<IpAddr>() {
                (ip, 0)
            } else if let Ok(port) = text.trim_start_matches(':').parse::<u16>() {
                (only_vip()?, port)
            } else {
                return Err(format!("{text:?} is not VIP:PORT, VIP or PORT"));
            }
        }
    };
    if (proto == ipproto::TCP || proto == ipproto::UDP) && port == 0 {
        return Err("TCP and UDP need the VIP port: VIP:PORT or PORT".into());
    }
    let is_echo = proto == ipproto::ICMP || proto == ipproto::ICMPV6;
    Ok(FlowSpec {
        vip,
        client: client.ip(),
        proto,
        client_port: client.port(),
        vip_port: if is_echo { 0 } else { port },
    })
}

fn vips(table: &Table) -> Vec<IpAddr> {
    let n = (table.nvips as usize).min(table.vips.len());
    table.vips[..n]
        .iter()
        .map(|v| {
            let b = xnlb_common::addr_bytes(&v.addr);
            if v.family == xnlb_common::family::V4 {
                IpAddr::from([b[0], b[1], b[2], b[3]])
            } else {
                IpAddr::from(b)
            }
        })
        .collect()
}

/// This node's hold on the flow's slot, as the XDP program sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotHold {
    /// Takes new flows.
    Owned,
    /// Another node's (or nobody's).
    NotOwned,
    /// Being handed to another node: keeps the connections its kernel holds.
    Releasing,
    /// Being taken over: new flows, plus connections its kernel holds.
    Acquiring,
    /// Held, past the lease but within held delivery: only connections
    /// this node's kernel holds, nothing new.
    Holding,
    /// Held, but the lease (and held delivery) expired: the program
    /// accepts nothing.
    Fenced,
}

/// Where the data plane stands against its lease (what the program reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Valid: serve as the slot state says.
    Valid,
    /// Past the lease, before the held-delivery deadline.
    Holding,
    /// Past both.
    Expired,
}

impl Lease {
    /// From the program's two deadlines and now (CLOCK_BOOTTIME ns), by the
    /// program's own rule ([`xnlb_common::standing`]).
    pub fn at(now: u64, lease: u64, hold: u64) -> Lease {
        match xnlb_common::standing(now, lease, || hold) {
            xnlb_common::Standing::Serving => Lease::Valid,
            xnlb_common::Standing::Holding => Lease::Holding,
            xnlb_common::Standing::Fenced => Lease::Expired,
        }
    }
}

/// The verdict for one kind of packet of the flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketVerdict {
    /// `tcp-syn` (new connection), `tcp` (any other segment), `udp`, `icmp`.
    pub packet: String,
    /// `accept`, `drop`, or `accept-if-held` (accepted only if this node's
    /// kernel holds a socket for the connection).
    pub verdict: String,
    /// Why, in words.
    pub reason: String,
    /// The counters this packet moves (`accept-if-held`: when accepted).
    pub counters: Vec<String>,
    /// `accept-if-held` only: the counters it moves when this kernel holds
    /// no socket for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters_if_not_held: Vec<String>,
}

/// Everything `xnlb explain` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The flow, as `proto client -> vip:port`.
    pub flow: String,
    /// The VIP.
    pub vip: IpAddr,
    /// The matching rule (1-based as in the file), or `None` for the
    /// VIP's default.
    pub rule: Option<usize>,
    /// The rule (or default) in words: protocols, ports, mode, affinity.
    pub rule_text: String,
    /// The 64-bit flow hash, hex.
    pub hash: String,
    /// `bucket` or `single slot`.
    pub slot_kind: String,
    /// Bucket number, or single-slot number.
    pub slot: usize,
    /// Owner under the current epoch (filled in by the agent).
    pub owner: Option<u8>,
    /// The epoch of the installed map.
    pub epoch: u64,
    /// This node's hold on the slot.
    pub here: SlotHold,
    /// One verdict per packet kind of the flow.
    pub verdicts: Vec<PacketVerdict>,
}

fn proto_name(p: u8) -> &'static str {
    match p {
        ipproto::TCP => "tcp",
        ipproto::UDP => "udp",
        _ => "icmp",
    }
}

fn mode_name(m: u8) -> &'static str {
    match m {
        mode::MULTIPLE => "multiple",
        mode::SINGLE => "single",
        _ => "disabled",
    }
}

fn affinity_name(a: u8) -> &'static str {
    match a {
        affinity::SINGLE => "single",
        affinity::NETWORK => "network",
        _ => "none",
    }
}

fn names(ids: &[usize]) -> Vec<String> {
    ids.iter().map(|&i| counter::NAMES[i].to_string()).collect()
}

/// Explains `flow` against the `table` the data plane runs, with the
/// lease where it stands. `None` if the flow's address is not a VIP.
pub fn explain(table: &Table, flow: &FlowSpec, lease: Lease) -> Option<Explanation> {
    let c = classify(table, flow)?;
    let vip = &table.vips[c.vip_index];
    let rule = rule_index(
        vip,
        &table.port_maps[c.vip_index],
        flow.proto,
        flow.vip_port,
    );
    let rule_text = match rule {
        Some(i) => {
            let r = &vip.rules[i];
            let protos = match r.proto_mask {
                m if m == proto_mask::TCP | proto_mask::UDP => "tcp+udp",
                proto_mask::TCP => "tcp",
                _ => "udp",
            };
            let ports = if r.port_lo == r.port_hi {
                r.port_lo.to_string()
            } else {
                format!("{}-{}", r.port_lo, r.port_hi)
            };
            format!(
                "rule {}: {protos} port {ports}, mode {}, affinity {}",
                i + 1,
                mode_name(r.mode),
                affinity_name(r.affinity)
            )
        }
        None => format!(
            "no rule matches: the VIP's default, mode {}, affinity none",
            mode_name(vip.default_mode)
        ),
    };
    let single = c.slot >= MAX_BUCKETS as usize;
    let state = table
        .state
        .get(c.slot)
        .copied()
        .unwrap_or(slot_state::NOT_OWNED);
    // As in the program: a held slot past the lease is holding, then
    // fenced; a slot not held is dropped without reading the clock.
    let here = match state {
        slot_state::NOT_OWNED => SlotHold::NotOwned,
        _ if lease == Lease::Holding => SlotHold::Holding,
        _ if lease == Lease::Expired => SlotHold::Fenced,
        slot_state::OWNED => SlotHold::Owned,
        slot_state::RELEASING => SlotHold::Releasing,
        _ => SlotHold::Acquiring,
    };
    let kinds: &[(PacketKind, &str)] = match flow.proto {
        ipproto::TCP => &[
            (PacketKind::TcpSyn, "tcp-syn"),
            (PacketKind::TcpOther, "tcp"),
        ],
        p => &[(PacketKind::Connectionless, proto_name(p))],
    };
    // A routed VIP's packet this node does not accept goes on, where the
    // program sends it (a packet from the router: not yet forwarded).
    let routed = vip.mac_mode == mac_mode::ROUTED && c.rule.mode != mode::DISABLED;
    let target = |kind| {
        let at = |a: &[u8]| a.get(c.slot).copied().unwrap_or(xnlb_common::NO_MEMBER);
        forward_target(
            table.me,
            at(&table.owner),
            [at(&table.holder), at(&table.holder2)],
            table.fallback,
            0,
            kind,
            || lease == Lease::Valid,
        )
    };
    let verdicts = kinds
        .iter()
        .map(|&(kind, packet)| {
            let v = packet_verdict(c.rule.mode, state, here, kind, packet);
            if routed {
                forwarded(v, target(kind))
            } else {
                v
            }
        })
        .collect();
    let hash_hex = format!("{:016x}", c.hash);
    Some(Explanation {
        flow: format!(
            "{} {} -> {}",
            proto_name(flow.proto),
            SocketAddr::new(flow.client, flow.client_port),
            SocketAddr::new(flow.vip, flow.vip_port)
        ),
        vip: flow.vip,
        rule: rule.map(|i| i + 1),
        rule_text,
        hash: hash_hex,
        slot_kind: if single { "single slot" } else { "bucket" }.into(),
        slot: if single {
            c.slot - MAX_BUCKETS as usize
        } else {
            c.slot
        },
        owner: None,
        epoch: table.epoch,
        here,
        verdicts,
    })
}

/// The program's decision for one packet kind, in the program's order:
/// disabled, fenced, then the truth table.
fn packet_verdict(
    rule_mode: u8,
    state: u8,
    here: SlotHold,
    kind: PacketKind,
    packet: &str,
) -> PacketVerdict {
    use counter::*;
    let mut if_not_held = Vec::new();
    let (verdict, reason, counters) = if rule_mode == mode::DISABLED {
        (
            "drop",
            "the rule is disabled: every node drops it".to_string(),
            names(&[VIP_PACKETS, DROPPED_DISABLED]),
        )
    } else if here == SlotHold::Holding {
        match holding_verdict(kind) {
            SlotVerdict::AcceptIfHeld => {
                if_not_held = names(&[VIP_PACKETS, DROPPED_FENCED]);
                (
                    "accept-if-held",
                    "past the lease, within held delivery: accepted only if this node's kernel holds the connection's socket, else dropped (fenced)".into(),
                    names(&[VIP_PACKETS, PASSED_HELD, PASSED]),
                )
            }
            _ => (
                "drop",
                "past the lease, within held delivery: nothing new is accepted (fenced)".into(),
                names(&[VIP_PACKETS, DROPPED_FENCED]),
            ),
        }
    } else if here == SlotHold::Fenced {
        (
            "drop",
            "this node holds the slot but its lease expired (fenced)".into(),
            names(&[VIP_PACKETS, DROPPED_FENCED]),
        )
    } else {
        match slot_verdict(state, kind) {
            SlotVerdict::Accept => (
                "accept",
                "this node takes the slot's flows".into(),
                names(&[VIP_PACKETS, PASSED]),
            ),
            SlotVerdict::Drop => (
                "drop",
                "another node serves this slot's new flows".into(),
                names(&[VIP_PACKETS, DROPPED_NOT_OWNER]),
            ),
            SlotVerdict::AcceptIfHeld => {
                if_not_held = names(&[VIP_PACKETS, DROPPED_NOT_OWNER]);
                (
                    "accept-if-held",
                    "slot in handoff: accepted only if this node's kernel holds the connection's socket, else dropped (dropped_not_owner)".into(),
                    names(&[VIP_PACKETS, PASSED_HELD, PASSED]),
                )
            }
        }
    };
    PacketVerdict {
        packet: packet.into(),
        verdict: verdict.into(),
        reason,
        counters,
        counters_if_not_held: if_not_held,
    }
}

/// A routed VIP's verdict: what this node would drop goes on to `target`
/// (or is dropped as unroutable when there is none).
fn forwarded(mut v: PacketVerdict, target: Option<u8>) -> PacketVerdict {
    use counter::*;
    let (to, counters) = match target {
        Some(n) => (
            format!("forwarded to node {n} (routed VIP; a packet from the router)"),
            names(&[VIP_PACKETS, FORWARDED]),
        ),
        None => (
            "nowhere to forward it (routed VIP): dropped".to_string(),
            names(&[VIP_PACKETS, DROPPED_UNROUTABLE]),
        ),
    };
    match v.verdict.as_str() {
        "drop" => {
            v.verdict = if target.is_some() { "forward" } else { "drop" }.into();
            v.reason = format!("{}; {to}", v.reason);
            v.counters = counters;
        }
        "accept-if-held" => {
            v.reason = format!("{}; if not held, {to}", v.reason);
            v.counters_if_not_held = counters;
        }
        _ => {}
    }
    v
}

/// The text `xnlb explain` prints.
pub fn render(e: &Explanation, node_id: u8) -> String {
    let owner = match e.owner {
        Some(id) => format!("node {id}"),
        None => "none (nobody serves it now)".into(),
    };
    let here = serde_json::to_value(e.here)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut out = format!(
        "flow     {}\nrule     VIP {}, {}\nhash     {} -> {} {}\nowner    {owner} (epoch {})\nhere     node {node_id}: {here}\n",
        e.flow, e.vip, e.rule_text, e.hash, e.slot_kind, e.slot, e.epoch
    );
    for (i, v) in e.verdicts.iter().enumerate() {
        out += &format!(
            "{}{:<8} {}: {}; counters: {}\n",
            if i == 0 { "verdict  " } else { "         " },
            v.packet,
            v.verdict,
            v.reason,
            v.counters.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::plan::plan;

    fn table_of(vips: &[&str]) -> Box<Table> {
        let mut text = String::from(
            "[node]\nid = 1\ninterface = \"eth0\"\n[cluster]\nname = \"t\"\nkey_file = \"/k\"\nlisten = [\"198.18.1.1:7450\"]\n\
             [[cluster.member]]\nid = 1\naddrs = [\"198.18.1.1:7450\"]\n",
        );
        for v in vips {
            text += &format!(
                "[[vip]]\naddress = \"{v}\"\n[[vip.rule]]\nprotocol = \"tcp\"\nports = \"80\"\nmode = \"disabled\"\n"
            );
        }
        let cfg = Config::parse(std::path::Path::new("t.toml"), &text).expect("config");
        plan(&cfg).table
    }

    #[test]
    fn the_vip_may_be_left_out_or_given_as_a_port_when_there_is_one() {
        let t = table_of(&["198.18.0.100", "fd00::100"]);
        let f = parse_flow(&t, "tcp", "198.18.1.5:4000", Some("80")).expect("port only");
        assert_eq!((f.vip.to_string(), f.vip_port), ("198.18.0.100".into(), 80));
        let f = parse_flow(&t, "icmp", "[fd00::5]:7", None).expect("echo, no VIP");
        assert_eq!(
            (f.vip.to_string(), f.proto, f.vip_port),
            ("fd00::100".into(), ipproto::ICMPV6, 0)
        );
        assert!(parse_flow(&t, "tcp", "198.18.1.5:4000", None)
            .unwrap_err()
            .contains("VIP port"));
        assert!(parse_flow(&t, "sctp", "198.18.1.5:4000", Some("80")).is_err());
        assert!(parse_flow(&t, "tcp", "198.18.1.5", Some("80")).is_err());
        let two = table_of(&["198.18.0.100", "198.18.0.101"]);
        assert!(parse_flow(&two, "tcp", "198.18.1.5:4000", Some("80"))
            .unwrap_err()
            .contains("2 VIPs"));
    }

    #[test]
    fn a_disabled_rule_is_dropped_by_every_node_whatever_the_slot() {
        let mut t = table_of(&["198.18.0.100"]);
        t.state.iter_mut().for_each(|s| *s = slot_state::OWNED);
        let f = parse_flow(&t, "tcp", "198.18.1.5:4000", Some("198.18.0.100:80")).expect("flow");
        let e = explain(&t, &f, Lease::Valid).expect("a VIP");
        assert_eq!(e.rule, Some(1));
        assert!(
            e.verdicts
                .iter()
                .all(|v| v.verdict == "drop" && v.counters == ["vip_packets", "dropped_disabled"]),
            "{e:?}"
        );
        let other =
            parse_flow(&t, "udp", "198.18.1.5:4000", Some("198.18.0.100:53")).expect("flow");
        let e = explain(&t, &other, Lease::Expired).expect("a VIP");
        assert_eq!((e.rule, e.here), (None, SlotHold::Fenced), "{e:?}");
    }

    #[test]
    fn a_routed_vip_says_where_a_packet_it_does_not_take_goes() {
        let mut t = table_of(&["198.18.0.100"]);
        t.vips[0].mac_mode = mac_mode::ROUTED;
        t.me = 1;
        t.fallback = 3;
        t.owner.iter_mut().for_each(|o| *o = 2);
        let f = parse_flow(&t, "udp", "198.18.1.5:4000", Some("198.18.0.100:53")).expect("flow");
        let e = explain(&t, &f, Lease::Valid).expect("a VIP");
        assert_eq!(e.verdicts[0].verdict, "forward", "{e:?}");
        assert!(e.verdicts[0].reason.contains("node 2"), "{e:?}");
        assert_eq!(e.verdicts[0].counters, ["vip_packets", "forwarded"]);
        // Ours, but past the lease: to the fallback.
        t.owner.iter_mut().for_each(|o| *o = 1);
        t.state.iter_mut().for_each(|s| *s = slot_state::OWNED);
        let e = explain(&t, &f, Lease::Expired).expect("a VIP");
        assert!(e.verdicts[0].reason.contains("node 3"), "{e:?}");
        // Nobody owns it.
        t.owner.iter_mut().for_each(|o| *o = 0);
        let e = explain(&t, &f, Lease::Expired).expect("a VIP");
        assert_eq!(
            e.verdicts[0].counters,
            ["vip_packets", "dropped_unroutable"]
        );
    }
}
