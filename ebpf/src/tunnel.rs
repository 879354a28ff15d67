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
    counter, ctrl, ethertype, family, ipproto, shim, tunnel, MemberRoute, ETH_HLEN, MAX_HOPS,
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
    if h.u8(ETH_HLEN) != 0x45 || hop == 0 || hop > MAX_HOPS as u16 {
        return XDP_PASS;
    }
    let inner = if h.u8(ETH_HLEN + 9) == ipproto::IPIP {
        ethertype::IPV4
    } else {
        ethertype::IPV6
    };
    // [MACs][outer IPv4][inner] becomes [MACs][shim][inner ethertype][inner]:
    // the frame another node forwarded on the segment would be.
    let (dst, src) = (h.read_mac(0), h.read_mac(6));
    let at = tunnel::OUTER_LEN - shim::LEN;
    h.write_mac(at, &dst);
    h.write_mac(at + 6, &src);
    let [f0, f1] = ethertype::FORWARDED.to_be_bytes();
    let [i0, i1] = inner.to_be_bytes();
    h.write::<6>(at + 12, &[f0, f1, hop as u8, 0, i0, i1]);
    // SAFETY: the program's own context; shrinking the head by less than
    // the outer header, which the frame holds (checked above).
    if unsafe { bpf_xdp_adjust_head(f.ctx as *mut _, at as i32) } != 0 {
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

/// Sends the packet of `fam` (its IP header at `l3`: right after the MACs,
/// or after the shim of a frame forwarded `hop` times; not behind VLAN
/// tags) to a member on another subnet: an outer IPv4 header to its
/// tunnel address, marked with the hop, to the next hop's MAC.
#[inline(always)]
pub fn encapsulate(
    f: &Frame,
    l3: usize,
    hop: u8,
    fam: u8,
    route: &MemberRoute,
    stats: Stats,
) -> u32 {
    let expected = if hop == 0 {
        ETH_HLEN
    } else {
        ETH_HLEN + shim::LEN
    };
    let len = f.end - f.start;
    if l3 != expected || len < l3 || len - l3 + tunnel::OUTER_LEN > 0xffff {
        return unroutable(stats);
    }
    let total = (len - l3 + tunnel::OUTER_LEN) as u16;
    let grow = (ETH_HLEN + tunnel::OUTER_LEN - l3) as i32;
    let Some(ours) = XNLB_CTRL.get(ctrl::IFMAC) else {
        return unroutable(stats);
    };
    let ours = ours.to_le_bytes();
    // SAFETY: the program's own context; growing the head by at most 20
    // bytes (XDP guarantees 256 bytes of headroom).
    if unsafe { bpf_xdp_adjust_head(f.ctx as *mut _, -grow) } != 0 {
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
    h.write::<2>(o + 4, &(tunnel::ID_BASE + hop as u16 + 1).to_be_bytes());
    // Don't fragment: a member's tunnel packet too big for the path is
    // dropped where it does not fit, not reassembled by a member.
    h.write::<2>(o + 6, &[0x40, 0]);
    h.write::<2>(o + 8, &[tunnel::TTL, proto]);
    h.write_word(o + 12, route.tunnel_src);
    h.write_word(o + 16, route.tunnel_dst);
    h.set_ipv4_checksum(o);
    stats.bump(counter::FORWARDED);
    XDP_TX
}

#[inline(always)]
fn unroutable(stats: Stats) -> u32 {
    stats.bump(counter::DROPPED_UNROUTABLE);
    XDP_DROP
}
