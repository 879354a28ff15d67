//! The steady path: the plainest frame, untagged Ethernet + IPv4 without
//! options, not a fragment, which is nearly every packet a node sees (and
//! of a VIP's, N-1 of every N are another node's), goes straight from
//! these few checks to the same [`VipPacket::verdict`] the full parser
//! ([`crate::l2`], [`crate::l3`]) leads to, or passes as not a VIP's.
//! What it checks is what [`crate::l3::ipv4`] checks of such a frame, and
//! every frame it is unsure of (VLAN tags, options, fragments, ARP, IPv6,
//! short or inconsistent lengths) falls through to the full parser, which
//! starts again from the Ethernet header: same verdict, same counters.
//!
//! Why a separate path: the general parser, with its VLAN loop, the IPv4
//! and IPv6 paths merged into one generic packet and the compiler's stack
//! spills between the parts, runs through many more instructions and cache
//! lines of code. On a node whose caches other work keeps evicting (the
//! usual case; `cargo xtask bench peers` in the README) each line costs a
//! miss: a not-owned packet cost up to 1.8x the minimal filter that way,
//! against ~1.05x on this path.

use xnlb_common::{counter, ethertype, family, mac_mode, ETH_HLEN};

use crate::drop_log::Stats;
use crate::l3::IPV4_HLEN;
use crate::packet::Frame;
use crate::vip::{find_vip4, Fragment, VipPacket};
use crate::{XDP_PASS, XNLB_CTRL, XNLB_TABLES};

/// Ethernet + IPv4 without options + 20 bytes (a TCP header: the most
/// [`VipPacket::verdict`] reads of a TCP or UDP packet). A minimum-size
/// frame (60 bytes) always has them; a shorter one takes the full path.
const STEADY_LEN: usize = ETH_HLEN + IPV4_HLEN + 20;
/// IPv4 version 4, header length 5 words: no options.
const VIHL_PLAIN: u8 = 0x45;
/// MF and the fragment offset (DF excluded).
const MF_OR_OFFSET: u16 = 0x3fff;

/// The verdict for `f` if it is a plain IPv4 frame (see the module
/// documentation): a VIP's through [`VipPacket::verdict`], another
/// address's passed; `None` for the full path.
#[inline(always)]
pub fn plain_ipv4<const PROBE: bool>(f: &Frame, stats: Stats) -> Option<u32> {
    let h = f.get::<STEADY_LEN>(0)?;
    let l3 = ETH_HLEN;
    if h.be16(12) != ethertype::IPV4 || h.u8(l3) != VIHL_PLAIN {
        return None;
    }
    let active = XNLB_CTRL.get(xnlb_common::ctrl::ACTIVE)?;
    let t = XNLB_TABLES.get((*active & 1) as u32)?;
    let dst = h.word(l3 + 16);
    let Some(vip) = find_vip4(t, dst) else {
        // A member's tunnel packet to us: the full path takes it apart.
        if crate::tunnel::is_ours(h.u8(l3 + 9), dst) {
            return None;
        }
        stats.bump(counter::NON_VIP);
        return Some(XDP_PASS);
    };
    // The full path's length checks, which a malformed packet fails there;
    // fragments take the full path.
    let total = h.be16(l3 + 2) as usize;
    let frag = h.be16(l3 + 6);
    if frag & MF_OR_OFFSET != 0 || total < IPV4_HLEN || f.start + l3 + total > f.end {
        return None;
    }
    stats.bump(counter::VIP_PACKETS);
    Some(
        VipPacket {
            vip,
            family: family::V4,
            proto: h.u8(l3 + 9),
            src: [h.word(l3 + 12), 0, 0, 0],
            dst: [dst, 0, 0, 0],
            l4: l3 + IPV4_HLEN,
            fragment: Fragment {
                fragmented: false,
                later: false,
                id: h.be16(l3 + 4) as u32,
            },
            cluster_dst: mac_mode::is_cluster_prefix(h.u8(0), h.u8(1)),
            l3,
        }
        .verdict::<PROBE>(f, t, stats),
    )
}
