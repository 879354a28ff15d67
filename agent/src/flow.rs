//! The userspace twin of the XDP classification: which slot a flow falls
//! in, so `xnlb owner` answers what the kernel does. It calls the very same
//! `xnlb_common` functions the XDP program is compiled from.

use std::net::IpAddr;

use xnlb_common::{addr_words, family, flow_hash, match_rule, mode, FlowWords, RuleMatch, Table};

/// A flow as seen from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    /// The VIP the client talks to.
    pub vip: IpAddr,
    /// The client's address.
    pub client: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Client port (ICMP echo: the echo identifier).
    pub client_port: u16,
    /// VIP port (ICMP echo: 0).
    pub vip_port: u16,
}

/// Where a flow lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    /// Position of the VIP in the table.
    pub vip_index: usize,
    /// The rule (or default) that applies.
    pub rule: RuleMatch,
    /// The 64-bit flow hash.
    pub hash: u64,
    /// Index in `Table::state`: a bucket or `MAX_BUCKETS + single slot`.
    pub slot: usize,
}

/// Address bytes with IPv4 in the first four.
pub fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

fn family_of(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        family::V4
    } else {
        family::V6
    }
}

/// Classifies `flow` against `table`; `None` if its VIP is not in the table.
pub fn classify(table: &Table, flow: &FlowSpec) -> Option<Classified> {
    let fam = family_of(flow.vip);
    let vip_words = addr_words(&ip_bytes(flow.vip));
    let n = (table.nvips as usize).min(table.vips.len());
    let vip_index = table.vips[..n]
        .iter()
        .position(|v| v.family == fam && v.addr == vip_words)?;
    let vip = &table.vips[vip_index];
    let rule = match_rule(vip, &table.port_maps[vip_index], flow.proto, flow.vip_port);
    let words = FlowWords::from_parts(
        fam,
        &ip_bytes(flow.client),
        flow.client_port,
        flow.vip_port,
        flow.proto,
        rule.affinity,
    );
    let hash = flow_hash(table.seed, &words);
    Some(Classified {
        vip_index,
        rule,
        hash,
        slot: rule.slot_index(hash, table.buckets),
    })
}

/// True if the rule drops the flow on every node.
pub fn is_disabled(c: &Classified) -> bool {
    c.rule.mode == mode::DISABLED
}
