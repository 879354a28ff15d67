//! The steady path: a packet for a flood-mode VIP in a slot this node does
//! not hold, the most common packet on every node (of N nodes, each drops
//! N-1 of every N packets), decided in one short straight run of code.
//!
//! It handles only the plainest frame: untagged Ethernet, IPv4 without
//! options, not a fragment, TCP or UDP with its header in the frame, for a
//! VIP that is not routed, under a rule that is not `disabled`, in a slot
//! whose state is `NOT_OWNED`. Such a packet gets exactly what the full
//! path ([`crate::l2`] .. [`crate::vip::VipPacket::verdict`]) would give it:
//! dropped, counted as a VIP packet and as not ours, nothing logged. Every
//! other packet (and every case this path is unsure of) falls through to
//! the full path, which parses it again from the start; the VIP, the rule,
//! the hash and the slot come from the same shared functions on both
//! paths.
//!
//! Why a separate path: the full one serves VLANs, IPv6, ARP, NS, ICMP,
//! fragments, handoff states and the lease, and its code is spread over a
//! 16 KB image with the compiler's stack spills between the parts. On a
//! node whose caches other work keeps evicting (the usual case) every
//! cache line of code the steady packet runs through costs a miss; here it
//! runs through a few, with no stack traffic.

use xnlb_common::{
    counter, ethertype, family, flow_hash, ipproto, mac_mode, match_rule, mode, slot_state,
    FlowWords, ETH_HLEN, MAX_SLOTS, MAX_VIPS,
};

use crate::drop_log::Stats;
use crate::l3::IPV4_HLEN;
use crate::packet::Frame;
use crate::vip::{find_vip4, write_probe_result};
use crate::{XDP_DROP, XNLB_CTRL, XNLB_TABLES};

/// Ethernet + IPv4 without options + a TCP header (20 bytes: all the full
/// path requires of TCP; UDP needs only the ports). A minimum-size frame
/// (60 bytes) always has them.
const STEADY_LEN: usize = ETH_HLEN + IPV4_HLEN + 20;
/// IPv4 version 4, header length 5 words: no options.
const VIHL_PLAIN: u8 = 0x45;
/// MF and the fragment offset (DF excluded).
const MF_OR_OFFSET: u16 = 0x3fff;

/// `Some(XDP_DROP)` if `f` is a steady packet (see the module
/// documentation), counted; `None` for the full path. The probe variant
/// also writes the hash and slot, as the full path does.
#[inline(always)]
pub fn not_owned<const PROBE: bool>(f: &Frame, stats: Stats) -> Option<u32> {
    let h = f.get::<STEADY_LEN>(0)?;
    let l3 = ETH_HLEN;
    let l4 = ETH_HLEN + IPV4_HLEN;
    if h.be16(12) != ethertype::IPV4 || h.u8(l3) != VIHL_PLAIN {
        return None;
    }
    let proto = h.u8(l3 + 9);
    if proto != ipproto::TCP && proto != ipproto::UDP {
        return None;
    }
    // The full path's length checks, which a malformed packet fails there.
    let total = h.be16(l3 + 2) as usize;
    if h.be16(l3 + 6) & MF_OR_OFFSET != 0 || total < IPV4_HLEN || f.start + l3 + total > f.end {
        return None;
    }
    let active = XNLB_CTRL.get(xnlb_common::ctrl::ACTIVE)?;
    let t = XNLB_TABLES.get((*active & 1) as u32)?;
    let vip = find_vip4(t, h.word(l3 + 16))?;
    if vip >= MAX_VIPS {
        return None;
    }
    let v = &t.vips[vip];
    // A routed VIP's packets reach one node of the router's choice: what
    // that node does with a slot it does not hold is the full path's.
    if v.mac_mode == mac_mode::ROUTED {
        return None;
    }
    let rule = match_rule(v, proto, h.be16(l4 + 2));
    if rule.mode == mode::DISABLED {
        return None;
    }
    let words = FlowWords::new(
        family::V4,
        [h.word(l3 + 12), 0, 0, 0],
        h.word(l4),
        proto,
        rule.affinity,
    );
    let hash = flow_hash(t.seed, &words);
    let slot = rule.slot_index(hash, t.buckets);
    if slot >= MAX_SLOTS || t.state[slot] != slot_state::NOT_OWNED {
        return None;
    }
    if PROBE {
        write_probe_result(f, hash, slot);
    }
    stats.bump(counter::VIP_PACKETS);
    stats.bump(counter::DROPPED_NOT_OWNER);
    Some(XDP_DROP)
}
