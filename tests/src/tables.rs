//! The VIPs and rules the kernel tests use (addresses from DESIGN section 5).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xnlb::flow::{classify, ip_bytes, FlowSpec};
use xnlb_common::{
    addr_words, affinity, compile_rules, family, mac_mode, mode, proto_mask, seed_from_name,
    single_slot_index, slot_state, Rule, Table, Vip,
};

/// The IPv4 VIP.
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// A second IPv4 VIP, in unicast MAC mode.
pub const VIP4B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
/// The IPv6 VIP.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);
/// Buckets in the test tables.
pub const BUCKETS: u32 = 4096;
/// Single slot of the `single`-mode rule (TCP 8000-8100).
pub const SLOT_RULE_SINGLE: u16 = 3;
/// Single slot of the VIPs' default mode.
pub const SLOT_DEFAULT: u16 = 0;

fn rule(proto: u8, lo: u16, hi: u16, m: u8, aff: u8, slot: u16) -> Rule {
    Rule {
        proto_mask: proto,
        mode: m,
        affinity: aff,
        port_lo: lo,
        port_hi: hi,
        slot,
        ..Rule::default()
    }
}

fn vip(addr: IpAddr, index: u16, mac: u8, default_mode: u8) -> Vip {
    let mut v = Vip {
        addr: addr_words(&ip_bytes(addr)),
        family: if addr.is_ipv4() {
            family::V4
        } else {
            family::V6
        },
        mac_mode: mac,
        default_mode,
        default_slot: SLOT_DEFAULT,
        index,
        ..Vip::default()
    };
    let rules = [
        rule(proto_mask::TCP, 80, 80, mode::MULTIPLE, affinity::NONE, 0),
        rule(proto_mask::UDP, 53, 53, mode::MULTIPLE, affinity::SINGLE, 0),
        rule(
            proto_mask::TCP,
            443,
            443,
            mode::MULTIPLE,
            affinity::NETWORK,
            0,
        ),
        rule(
            proto_mask::TCP | proto_mask::UDP,
            8000,
            8100,
            mode::SINGLE,
            affinity::NONE,
            SLOT_RULE_SINGLE,
        ),
        rule(
            proto_mask::TCP | proto_mask::UDP,
            9000,
            9000,
            mode::DISABLED,
            affinity::NONE,
            0,
        ),
        rule(
            proto_mask::TCP | proto_mask::UDP,
            1,
            65535,
            mode::MULTIPLE,
            affinity::NONE,
            0,
        ),
    ];
    v.rules[..rules.len()].copy_from_slice(&rules);
    v.nrules = rules.len() as u8;
    v
}

/// Three VIPs; ICMP and other protocols fall to the default `multiple`.
pub fn table(state: u8) -> Box<Table> {
    let mut t = Box::new(Table::empty());
    t.seed = seed_from_name(b"web");
    t.buckets = BUCKETS;
    t.epoch = 1;
    t.vips[0] = vip(IpAddr::V4(VIP4), 0, mac_mode::MULTICAST, mode::MULTIPLE);
    t.vips[1] = vip(IpAddr::V6(VIP6), 1, mac_mode::MULTICAST, mode::MULTIPLE);
    t.vips[2] = vip(IpAddr::V4(VIP4B), 2, mac_mode::UNICAST, mode::SINGLE);
    t.nvips = 3;
    for i in 0..3 {
        let t = &mut *t;
        assert!(
            compile_rules(&mut t.vips[i], &mut t.port_maps[i]),
            "the test rules fit a port map"
        );
    }
    for b in 0..BUCKETS as usize {
        t.state[b] = state;
    }
    for s in 0..8 {
        t.state[single_slot_index(s)] = state;
    }
    t
}

/// A table where this node owns every even bucket and nothing else.
pub fn half_table() -> Box<Table> {
    let mut t = table(slot_state::NOT_OWNED);
    for b in (0..BUCKETS as usize).step_by(2) {
        t.state[b] = slot_state::OWNED;
    }
    t
}

/// The slot (bucket or single-slot index) a flow lands in under `t`.
pub fn slot_of(
    t: &Table,
    vip: IpAddr,
    client: IpAddr,
    proto: u8,
    client_port: u16,
    vip_port: u16,
) -> usize {
    classify(
        t,
        &FlowSpec {
            vip,
            client,
            proto,
            client_port,
            vip_port,
        },
    )
    .expect("VIP in table")
    .slot
}

/// The first client port (from 1024 up) whose flow lands in a slot whose
/// state satisfies `want`.
pub fn port_where(
    t: &Table,
    vip: IpAddr,
    client: IpAddr,
    proto: u8,
    vip_port: u16,
    want: impl Fn(u16, usize) -> bool,
) -> u16 {
    (1024..65535)
        .find(|&p| want(p, slot_of(t, vip, client, proto, p, vip_port)))
        .expect("some client port satisfies the condition")
}
