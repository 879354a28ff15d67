//! Layer 4: the client-side flow of a VIP packet. Ports and TCP flags; for
//! ICMP echo the identifier stands in for the ports; for an ICMP error the
//! flow is the one it quotes (our reply, turned around), so the error
//! reaches the node that owns the connection it is about.

use xnlb_common::{family, icmp, icmpv6, ipproto};

use crate::l3::{IPV4_HLEN, IPV6_HLEN};
use crate::packet::Frame;
use crate::vip::VipPacket;

/// What the L3/L4 parser learnt about a VIP packet, from the client's side:
/// for an ICMP error this is the quoted flow, not the ICMP packet.
pub struct Flow {
    pub client: [u32; 4],
    pub vip: [u32; 4],
    pub proto: u8,
    /// Wire bytes `[client port, vip port]` loaded little-endian.
    pub ports: u32,
    /// VIP port in host order, for the rule match.
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_error: bool,
}

/// TCP header without options (flags are at byte 13).
const TCP_HLEN: usize = 20;
/// Source and destination port: all of UDP we read, and of a quoted header.
const PORTS_LEN: usize = 4;
/// ICMP / ICMPv6 header: type, code, checksum, then 4 type-specific bytes
/// (identifier and sequence of an echo); an error's quote follows it.
const ICMP_HLEN: usize = 8;

/// The client-side flow of a VIP packet (its L4 header at `pkt.l4`);
/// `None` when the header (or the flow an ICMP error quotes) is truncated.
#[inline(always)]
pub fn flow(f: &Frame, pkt: &VipPacket) -> Option<Flow> {
    let (l4, fam) = (pkt.l4, pkt.family);
    let mut flow = Flow {
        client: pkt.src,
        vip: pkt.dst,
        proto: pkt.proto,
        ports: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_error: false,
    };
    match pkt.proto {
        ipproto::TCP => {
            let h = f.get::<TCP_HLEN>(l4)?;
            flow.ports = h.word(0);
            flow.dport = h.be16(2);
            flow.tcp_flags = h.u8(13);
        }
        ipproto::UDP => {
            let h = f.get::<PORTS_LEN>(l4)?;
            flow.ports = h.word(0);
            flow.dport = h.be16(2);
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            let h = f.get::<ICMP_HLEN>(l4)?;
            let (echo, error) = icmp_kind(fam, h.u8(0));
            if echo {
                // Hash on (source, echo identifier).
                flow.ports = h.raw16(4) as u32;
            } else if error {
                quoted_flow(f, l4 + ICMP_HLEN, fam, &mut flow)?;
                flow.icmp_error = true;
            }
        }
        _ => {}
    }
    Some(flow)
}

/// `(echo, error)`: whether ICMP type `ty` of family `fam` is an echo
/// request or reply, or an error that quotes the packet it is about.
#[inline(always)]
fn icmp_kind(fam: u8, ty: u8) -> (bool, bool) {
    if fam == family::V4 {
        (
            ty == icmp::ECHO_REQUEST || ty == icmp::ECHO_REPLY,
            matches!(
                ty,
                icmp::DEST_UNREACH
                    | icmp::SOURCE_QUENCH
                    | icmp::TIME_EXCEEDED
                    | icmp::PARAM_PROBLEM
            ),
        )
    } else {
        (
            ty == icmpv6::ECHO_REQUEST || ty == icmpv6::ECHO_REPLY,
            matches!(ty, icmpv6::DEST_UNREACH..=icmpv6::PARAM_PROBLEM),
        )
    }
}

/// Reads the flow quoted in an ICMP error: our reply, VIP -> client, which we
/// turn around so it hashes like the client's packets.
#[inline(always)]
fn quoted_flow(f: &Frame, inner: usize, fam: u8, flow: &mut Flow) -> Option<()> {
    let (proto, inner_src, inner_dst, inner_l4) = if fam == family::V4 {
        let ip = f.get::<IPV4_HLEN>(inner)?;
        let vihl = ip.u8(0);
        let ihl = ((vihl & 0x0f) as usize) * 4;
        if vihl >> 4 != 4 || ihl < IPV4_HLEN {
            return None;
        }
        (
            ip.u8(9),
            [ip.word(12), 0, 0, 0],
            [ip.word(16), 0, 0, 0],
            inner + ihl,
        )
    } else {
        let ip = f.get::<IPV6_HLEN>(inner)?;
        (ip.u8(6), ip.words4(8), ip.words4(24), inner + IPV6_HLEN)
    };
    if proto != ipproto::TCP && proto != ipproto::UDP {
        // Not a flow with ports: hash it like its outer source.
        return Some(());
    }
    let ports = f.get::<PORTS_LEN>(inner_l4)?;
    flow.client = inner_dst;
    flow.vip = inner_src;
    flow.proto = proto;
    flow.ports = ports.raw16(2) as u32 | (ports.raw16(0) as u32) << 16;
    flow.dport = ports.be16(0);
    Some(())
}
