//! Routed mode's tunnel to members on other subnets: a packet for a member
//! the data segment cannot reach directly leaves in an outer IPv4 header
//! (IPIP, or IPv6-in-IPv4 for an IPv6 VIP) addressed to that member,
//! through the next hop the agent resolved ([`MemberRoute`]); the member
//! strips it and judges the inner packet from the start (a tail call into
//! this same program), exactly as if it had been forwarded on the segment.
//!
//! Only xnlb's own tunnel packets are taken apart: to this node's tunnel
//! address (`ctrl::TUNNEL_LOCAL`), untagged, a 20-byte outer header whose
//! identification carries xnlb's mark and the hop. Anything else passes to
//! the stack untouched (a kernel tunnel device on the host keeps working).

use aya_ebpf::helpers::bpf_xdp_adjust_head;
use aya_ebpf::programs::XdpContext;
use xnlb_common::{
    counter, ctrl, ethertype, family, ipproto, tunnel, MemberRoute, ETH_HLEN,
};

use crate::drop_log::Stats;
use crate::packet::Frame;
use crate::{XDP_DROP, XDP_PASS, XDP_TX, XNLB_CTRL, XNLB_JUMP};

/// Outer Ethernet + IPv4 headers.
const HEADERS: usize = ETH_HLEN + tunnel::OUTER_LEN;

/// Whether an IPv4 packet of protocol `proto` to `dst` may be one of our
/// members' tunnel packets (the rest of the marks is checked by
/// [`decapsulate`]).
#[inline(always)]
pub fn is_ours(proto: u8, dst: u32) -> bool {
    (proto == ipproto::IPIP || proto == ipproto::IPV6_IN_IPV4)
        && XNLB_CTRL
            .get(ctrl::TUNNEL_LOCAL)
            .is_some_and(|local| *local != 0 && *local as u32 == dst)
}

/// Strips the outer IPv4 header of a member's tunnel packet whose outer
/// header starts at `l3`, marks the frame forwarded (once or twice, from
/// the outer identification) and judges it again from the start. A packet
/// without xnlb's marks passes untouched.
#[inline(always)]
pub fn decapsulate(f: &Frame, l3: usize, stats: Stats) -> u32 {
    if l3 != ETH_HLEN {
        return XDP_PASS;
    }
    let Some(h) = f.get::<HEADERS>(0) else {
        return XDP_PASS;
    };
    let hop = h.be16(ETH_HLEN + 4).wrapping_sub(tunnel::ID_BASE);
    if h.u8(ETH_HLEN) != 0x45 || !(1..=2).contains(&hop) {
        return XDP_PASS;
    }
    let marked = if hop == 1 {
        ethertype::FORWARDED
    } else {
        ethertype::FORWARDED_AGAIN
    };
    let (dst, src) = (h.read_mac(0), h.read_mac(6));
    h.write_mac(tunnel::OUTER_LEN, &dst);
    h.write_mac(tunnel::OUTER_LEN + 6, &src);
    h.write::<2>(tunnel::OUTER_LEN + 12, &marked.to_be_bytes());
    // SAFETY: the program's own context; shrinking the head by the outer
    // header, which the frame holds (checked above).
    if unsafe { bpf_xdp_adjust_head(f.ctx as *mut _, tunnel::OUTER_LEN as i32) } != 0 {
        return unroutable(stats);
    }
    JUDGE_AGAIN
}

/// What [`decapsulate`] returns instead of a verdict: judge the frame
/// again from the start. The entry point makes the tail call (the kernel
/// allows none from a BPF subprogram, which the parser may be compiled
/// into).
pub const JUDGE_AGAIN: u32 = u32::MAX;

/// The tail call into the filter for a stripped tunnel packet; returns
/// only if it failed (no program in the slot: the agent has not set it).
#[inline(always)]
pub fn judge_again(ctx: &XdpContext, stats: Stats) -> u32 {
    // SAFETY: the context is the program's own; a tail call that works
    // does not return, one that fails does.
    unsafe { XNLB_JUMP.tail_call(ctx, 0) };
    unroutable(stats)
}

/// Sends the packet (untagged, its IP header at [`ETH_HLEN`]) of `fam` to
/// a member on another subnet: an outer IPv4 header to its tunnel address
/// with the mark of forwarding hop `hop`, to the next hop's MAC.
#[inline(always)]
pub fn encapsulate(f: &Frame, l3: usize, fam: u8, route: &MemberRoute, hop: u16, stats: Stats) -> u32 {
    let inner = f.end - f.start;
    if l3 != ETH_HLEN || inner < ETH_HLEN || inner - ETH_HLEN + tunnel::OUTER_LEN > 0xffff {
        return unroutable(stats);
    }
    let total = (inner - ETH_HLEN + tunnel::OUTER_LEN) as u16;
    let Some(ours) = XNLB_CTRL.get(ctrl::IFMAC) else {
        return unroutable(stats);
    };
    let ours = ours.to_le_bytes();
    // SAFETY: the program's own context; growing the head by 20 bytes
    // (XDP guarantees 256 bytes of headroom).
    if unsafe { bpf_xdp_adjust_head(f.ctx as *mut _, -(tunnel::OUTER_LEN as i32)) } != 0 {
        return unroutable(stats);
    }
    // Every pointer into the frame is stale now: start again from the
    // context.
    let f = f.reload();
    let Some(h) = f.get::<HEADERS>(0) else {
        return unroutable(stats);
    };
    h.write_mac(0, &route.mac);
    h.write_mac(6, &[ours[0], ours[1], ours[2], ours[3], ours[4], ours[5]]);
    h.write::<2>(12, &ethertype::IPV4.to_be_bytes());
    let o = ETH_HLEN;
    let proto = if fam == family::V4 {
        ipproto::IPIP
    } else {
        ipproto::IPV6_IN_IPV4
    };
    h.write::<2>(o, &[0x45, 0]);
    h.write::<2>(o + 2, &total.to_be_bytes());
    h.write::<2>(o + 4, &(tunnel::ID_BASE + hop).to_be_bytes());
    // Don't fragment: a member's tunnel packet too big for the path is
    // dropped where it does not fit, not reassembled by a member.
    h.write::<2>(o + 6, &[0x40, 0]);
    h.write::<2>(o + 8, &[tunnel::TTL, proto]);
    h.write::<2>(o + 10, &[0, 0]);
    h.write_word(o + 12, route.tunnel_src);
    h.write_word(o + 16, route.tunnel_dst);
    let mut sum = 0u32;
    let mut k = 0;
    while k < tunnel::OUTER_LEN {
        sum += h.raw16(o + k) as u32;
        k += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    h.write::<2>(o + 10, &(!(sum as u16)).to_ne_bytes());
    stats.bump(counter::FORWARDED);
    XDP_TX
}

#[inline(always)]
fn unroutable(stats: Stats) -> u32 {
    stats.bump(counter::DROPPED_UNROUTABLE);
    XDP_DROP
}
