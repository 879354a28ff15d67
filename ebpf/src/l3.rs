//! Layer 3: IPv4 (options, fragments) and IPv6 (a bounded walk over
//! extension headers, fragments), from the L3 header to a [`VipPacket`].
//!
//! A frame that says IPv4 or IPv6 but is not is dropped whoever it is for:
//! the stack would drop it too, and we cannot tell whether it was a VIP's.
//! Packets for other addresses pass untouched; a VIP's packet whose lengths
//! or fragment fields are inconsistent drops as malformed.

use xnlb_common::{counter, family, ipproto, ipv6_ext, Table, MAX_IPV6_EXT};

use crate::drop_log::{why, Stats};
use crate::packet::Frame;
use crate::vip::{find_vip4, find_vip6, Fragment, VipPacket};
use crate::{reply, XDP_DROP, XDP_PASS};

/// Headers of a VIP packet must end before this offset. It bounds the
/// variable offsets the verifier has to reason about; real traffic never
/// comes close (2 VLAN tags + 40 + a few extension headers).
pub const MAX_L4_OFF: usize = 512;

/// IPv4 header without options.
pub const IPV4_HLEN: usize = 20;
/// IPv6 fixed header.
pub const IPV6_HLEN: usize = 40;
/// Flags + fragment offset field of IPv4: the offset, in 8-byte units.
const IPV4_OFFSET_MASK: u16 = 0x1fff;
/// Flags + fragment offset field of IPv4: MF and the offset (DF excluded).
const IPV4_MF_OR_OFFSET: u16 = 0x3fff;
/// Fragment offsets and lengths count in 8-byte units.
const FRAGMENT_UNIT: usize = 8;
/// Largest IP datagram: a fragment may not end past it.
const MAX_DATAGRAM: usize = 65535;

/// A frame past its L2 headers, with what L2 learnt about it.
#[derive(Clone, Copy)]
pub struct L2Frame<'a> {
    pub f: &'a Frame,
    /// Offset of the L3 header (past any VLAN tags).
    pub l3: usize,
    /// The live table.
    pub t: &'a Table,
    /// Sent to a cluster MAC: see [`VipPacket::cluster_dst`].
    pub cluster_dst: bool,
    pub stats: Stats<'a>,
}

impl L2Frame<'_> {
    /// A packet for no VIP: passed untouched, unless another node
    /// forwarded it here (for a VIP this table no longer has): the stack
    /// cannot take a frame of the forwarding ethertype.
    #[inline(always)]
    fn not_a_vip(&self) -> u32 {
        if crate::vip::hop(self.f) != 0 {
            self.stats.bump(counter::DROPPED_UNROUTABLE);
            return XDP_DROP;
        }
        self.stats.bump(counter::NON_VIP);
        XDP_PASS
    }
}

#[inline(always)]
pub fn ipv4<const PROBE: bool>(frame: L2Frame) -> u32 {
    let (f, l3, t, stats) = (frame.f, frame.l3, frame.t, frame.stats);
    let Some(ip) = f.get::<IPV4_HLEN>(l3) else {
        return stats.malformed(why::TRUNCATED_L3);
    };
    let vihl = ip.u8(0);
    if vihl >> 4 != 4 {
        return stats.malformed(why::BAD_VERSION);
    }
    let dst = ip.word(16);
    if crate::tunnel::is_ours(ip.u8(9), dst) {
        return crate::tunnel::decapsulate(f, l3, stats);
    }
    let Some(vip) = find_vip4(t, dst) else {
        return frame.not_a_vip();
    };
    stats.bump(counter::VIP_PACKETS);
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let total = ip.be16(2) as usize;
    let frag = ip.be16(6);
    // Header shorter than its minimum, or the datagram longer than the frame.
    if ihl < IPV4_HLEN || total < ihl || f.start + l3 + total > f.end {
        return stats.malformed(why::BAD_LENGTH);
    }
    let offset = ((frag & IPV4_OFFSET_MASK) as usize) * FRAGMENT_UNIT;
    if offset + (total - ihl) > MAX_DATAGRAM {
        return stats.malformed(why::BAD_FRAGMENT);
    }
    VipPacket {
        vip,
        family: family::V4,
        proto: ip.u8(9),
        src: [ip.word(12), 0, 0, 0],
        dst: [dst, 0, 0, 0],
        l4: l3 + ihl,
        fragment: Fragment {
            fragmented: frag & IPV4_MF_OR_OFFSET != 0,
            later: offset != 0,
            id: ip.be16(4) as u32,
        },
        cluster_dst: frame.cluster_dst,
        l3,
    }
    .verdict::<PROBE>(f, t, stats)
}

#[inline(always)]
pub fn ipv6<const PROBE: bool>(frame: L2Frame) -> u32 {
    let (f, l3, t, stats) = (frame.f, frame.l3, frame.t, frame.stats);
    let Some(ip) = f.get::<IPV6_HLEN>(l3) else {
        return stats.malformed(why::TRUNCATED_L3);
    };
    if ip.u8(0) >> 4 != 6 {
        return stats.malformed(why::BAD_VERSION);
    }
    let next = ip.u8(6);
    if next == ipproto::ICMPV6 && crate::vip::hop(f) == 0 {
        if let Some(verdict) = reply::neighbour_solicitation(f, l3, t, stats) {
            return verdict;
        }
    }
    let dst = ip.words4(24);
    let Some(vip) = find_vip6(t, &dst) else {
        return frame.not_a_vip();
    };
    stats.bump(counter::VIP_PACKETS);
    let src = ip.words4(8);
    let payload = ip.be16(4) as usize;
    if f.start + l3 + IPV6_HLEN + payload > f.end {
        return stats.malformed(why::BAD_LENGTH);
    }
    // Bounded walk over extension headers.
    let mut off = l3 + IPV6_HLEN;
    let mut nh = next;
    let mut fragment = Fragment {
        fragmented: false,
        later: false,
        id: 0,
    };
    for _ in 0..MAX_IPV6_EXT {
        if off > MAX_L4_OFF {
            return stats.malformed(why::EXT_CHAIN);
        }
        if !ipv6_ext::is_walked(nh) {
            break;
        }
        // Every extension header is at least 8 bytes: next header, length,
        // and for a fragment header offset, flags and id.
        let Some(ext) = f.get::<8>(off) else {
            return stats.malformed(why::EXT_CHAIN);
        };
        let len = ext.u8(1) as usize;
        off += match nh {
            ipv6_ext::FRAGMENT => {
                let offset = ((ext.be16(2) >> 3) as usize) * FRAGMENT_UNIT;
                if offset + payload > MAX_DATAGRAM {
                    return stats.malformed(why::BAD_FRAGMENT);
                }
                fragment = Fragment {
                    fragmented: true,
                    later: offset != 0,
                    id: ext.word(4),
                };
                8
            }
            ipv6_ext::AUTH => (len + 2) * 4,
            // Hop-by-hop, routing, destination options.
            _ => (len + 1) * 8,
        };
        nh = ext.u8(0);
    }
    if ipv6_ext::is_walked(nh) || off > MAX_L4_OFF {
        // Chain longer than we walk, or headers too long.
        return stats.malformed(why::EXT_CHAIN);
    }
    VipPacket {
        vip,
        family: family::V6,
        proto: nh,
        src,
        dst,
        l4: off,
        fragment,
        cluster_dst: frame.cluster_dst,
        l3,
    }
    .verdict::<PROBE>(f, t, stats)
}
