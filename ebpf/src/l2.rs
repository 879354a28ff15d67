//! Layer 2: the Ethernet header, up to [`MAX_VLAN_DEPTH`] VLAN tags, and the
//! dispatch by ethertype to IPv4 and IPv6 ([`crate::l3`]) or to the ARP
//! responder ([`crate::reply`]). Neighbour solicitations are IPv6 packets:
//! [`crate::l3::ipv6`] hands them to the responder once the IPv6 header
//! proved to be one.

use xnlb_common::{counter, ctrl, ethertype, mac_mode, shim, ETH_HLEN, MAX_VLAN_DEPTH, VLAN_HLEN};

use crate::drop_log::{why, Stats};
use crate::l3::{self, L2Frame};
use crate::packet::Frame;
use crate::{reply, XDP_PASS, XNLB_CTRL, XNLB_TABLES};

/// The verdict for the frame in `f`: parse L2, pick the live table, and
/// hand the L3 packet on.
#[inline(always)]
pub fn frame_verdict<const PROBE: bool>(f: &Frame, stats: Stats) -> u32 {
    let Some(eth) = f.get::<ETH_HLEN>(0) else {
        return stats.malformed(why::TRUNCATED_L2);
    };
    // Frames sent to a cluster MAC are ours even when we cannot parse them:
    // they drop as malformed; others are not ours to judge and pass.
    let cluster_dst = mac_mode::is_cluster_prefix(eth.u8(0), eth.u8(1));
    let unparsable = Unparsable { cluster_dst, stats };

    // VLAN tags, and routed mode's shim on a frame another node forwarded
    // here (read like a tag: its hop count is read again from the frame
    // where it matters, `crate::vip::hop`; a value carried from here would
    // split every path the verifier explores below).
    let mut ethertype = eth.be16(12);
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_DEPTH + 1 {
        let shim = ethertype == ethertype::FORWARDED && l3 == ETH_HLEN;
        if !is_vlan_tag(ethertype) && !shim {
            break;
        }
        match f.get::<VLAN_HLEN>(l3) {
            Some(tag) => ethertype = tag.be16(2),
            None => return unparsable.verdict(),
        }
        l3 += VLAN_HLEN;
    }
    let shim_len = if eth.be16(12) == ethertype::FORWARDED {
        shim::LEN
    } else {
        0
    };
    if is_vlan_tag(ethertype)
        || ethertype == ethertype::FORWARDED
        || l3 - ETH_HLEN - shim_len > MAX_VLAN_DEPTH * VLAN_HLEN
    {
        // Deeper VLAN stack than we parse (or a shim not first).
        return unparsable.verdict();
    }

    let Some(active) = XNLB_CTRL.get(ctrl::ACTIVE) else {
        return XDP_PASS;
    };
    let Some(table) = XNLB_TABLES.get((*active & 1) as u32) else {
        return XDP_PASS;
    };

    let frame = L2Frame {
        f,
        l3,
        t: table,
        cluster_dst,
        stats,
    };
    match ethertype {
        ethertype::IPV4 => l3::ipv4::<PROBE>(frame),
        ethertype::IPV6 => l3::ipv6::<PROBE>(frame),
        ethertype::ARP => reply::arp(f, l3, table, stats),
        _ => unparsable.verdict(),
    }
}

#[inline(always)]
fn is_vlan_tag(ethertype: u16) -> bool {
    ethertype == ethertype::VLAN_8021Q || ethertype == ethertype::VLAN_8021AD
}

/// The verdict for a frame we cannot parse far enough to judge.
#[derive(Clone, Copy)]
struct Unparsable<'a> {
    cluster_dst: bool,
    stats: Stats<'a>,
}

impl Unparsable<'_> {
    #[inline(always)]
    fn verdict(self) -> u32 {
        if self.cluster_dst {
            self.stats.malformed(why::UNPARSABLE_L2)
        } else {
            self.stats.bump(counter::NON_VIP);
            XDP_PASS
        }
    }
}
