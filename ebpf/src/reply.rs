//! Answers ARP requests and IPv6 neighbour solicitations for a VIP with the
//! cluster MAC, in XDP with `XDP_TX`.
//!
//! Answering here rather than from the kernel means the node's own MAC can
//! never leak as the VIP's (the kernel never sees the request), and it keeps
//! working while the agent restarts. Only a node whose lease is valid
//! answers: a fenced node stays silent. All serving nodes answer with the
//! same MAC, so duplicate replies are harmless. The Ethernet source of a
//! reply is the node's own MAC: a multicast cluster MAC is not a valid source,
//! and a unicast one must never be learnt by switches (so they keep flooding).

use xnlb_common::{counter, ctrl, icmpv6, ipproto, mac_mode, Table};

use crate::clock::lease_valid;
use crate::drop_log::Stats;
use crate::packet::Frame;
use crate::vip::{find_vip4, find_vip6};
use crate::{XDP_PASS, XDP_TX, XNLB_CTRL};

/// The interface MAC, if the agent has set it.
#[inline(always)]
fn if_mac() -> Option<[u8; 6]> {
    let m = XNLB_CTRL.get(ctrl::IFMAC)?.to_le_bytes();
    if m[..6] == [0; 6] {
        return None;
    }
    Some([m[0], m[1], m[2], m[3], m[4], m[5]])
}

/// ARP request for a VIP (`l3` is the ARP header).
#[inline(always)]
pub fn arp(f: &Frame, l3: usize, t: &Table, stats: Stats) -> u32 {
    let (Some(eth), Some(a)) = (f.get::<14>(0), f.get::<28>(l3)) else {
        stats.bump(counter::NON_VIP);
        return XDP_PASS;
    };
    // Ethernet/IPv4, hlen 6, plen 4, request.
    if a.read::<8>(0) != [0, 1, 8, 0, 6, 4, 0, 1] {
        stats.bump(counter::NON_VIP);
        return XDP_PASS;
    }
    let tpa = a.word(24);
    let Some(vip) = find_vip4(t, tpa) else {
        stats.bump(counter::NON_VIP);
        return XDP_PASS;
    };
    if vip >= t.vips.len() {
        return XDP_PASS;
    }
    if t.vips[vip].mac_mode == mac_mode::ROUTED {
        // Routers reach a routed VIP through the nodes' own addresses.
        stats.bump(counter::NON_VIP);
        return XDP_PASS;
    }
    if !lease_valid() {
        return stats.fenced();
    }
    let Some(mac) = if_mac() else {
        return XDP_PASS;
    };
    let cmac = t.vips[vip].cluster_mac();
    let sha = a.read_mac(8);
    let spa = a.read::<4>(14);
    a.write::<2>(6, &[0, 2]);
    a.write_mac(8, &cmac);
    a.write_word(14, tpa);
    a.write_mac(18, &sha);
    a.write::<4>(24, &spa);
    // Back to the requester, from us.
    let requester = eth.read_mac(6);
    eth.write_mac(0, &requester);
    eth.write_mac(6, &mac);
    stats.bump(counter::ARP_REPLIES);
    XDP_TX
}

/// Neighbour solicitation (`l3` is its IPv6 header). `None` when it is not
/// for a VIP and should take the normal path.
#[inline(always)]
pub fn neighbour_solicitation(f: &Frame, l3: usize, t: &Table, stats: Stats) -> Option<u32> {
    let eth = f.get::<14>(0)?;
    // IPv6 header (40) + NS (24) + one source link-layer option (8).
    let p = f.get::<72>(l3)?;
    if p.u8(40) != icmpv6::NEIGHBOUR_SOLICIT {
        return None;
    }
    let target = p.words4(48);
    let vip = find_vip6(t, &target)?;
    // A well-formed NS with one source link-layer address option, hop limit
    // 255; anything else (DAD probes from ::, extra options) goes to the stack.
    let src = p.words4(8);
    if p.be16(4) != 32
        || p.u8(7) != 255
        || p.u8(41) != 0
        || p.read::<2>(64) != [1, 1]
        || src == [0; 4]
    {
        return None;
    }
    if vip >= t.vips.len() || t.vips[vip].mac_mode == mac_mode::ROUTED {
        // A routed VIP: see `arp`.
        return None;
    }
    if !lease_valid() {
        return Some(stats.fenced());
    }
    let mac = if_mac()?;
    let cmac = t.vips[vip].cluster_mac();
    let requester = eth.read_mac(6);
    eth.write_mac(0, &requester);
    eth.write_mac(6, &mac);
    // IPv6: from the VIP to the solicitor.
    for i in 0..4 {
        p.write_word(8 + i * 4, target[i]);
        p.write_word(24 + i * 4, src[i]);
    }
    // ICMPv6 NA: solicited + override, same target, target link-layer option.
    p.write::<4>(40, &[icmpv6::NEIGHBOUR_ADVERT, 0, 0, 0]);
    p.write::<4>(44, &[0x60, 0, 0, 0]);
    p.write::<2>(64, &[2, 1]);
    p.write_mac(66, &cmac);
    // ICMPv6 checksum over the pseudo-header and the 32-byte message. One's
    // complement sums are byte-order independent (RFC 1071 section 2), so
    // summing native loads and storing the result natively is exact.
    let mut acc: u64 = 0;
    for i in 0..8 {
        acc += p.word(8 + i * 4) as u64;
    }
    // Upper-layer length (32) and next header (ICMPv6), as wire words.
    acc += u32::from_ne_bytes([0, 0, 0, 32]) as u64;
    acc += u32::from_ne_bytes([0, 0, 0, ipproto::ICMPV6]) as u64;
    for i in 0..8 {
        acc += p.word(40 + i * 4) as u64;
    }
    for _ in 0..4 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    p.write::<2>(42, &(!(acc as u16)).to_ne_bytes());
    stats.bump(counter::ND_REPLIES);
    Some(XDP_TX)
}
