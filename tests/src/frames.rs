//! Frames for the tests, built layer by layer with pnet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet::packet::arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket};
use pnet::packet::ethernet::{EtherType, EtherTypes, MutableEthernetPacket};
use pnet::packet::icmp::{self, IcmpTypes, MutableIcmpPacket};
use pnet::packet::icmpv6::{self, Icmpv6Types, MutableIcmpv6Packet};
use pnet::packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet::packet::ipv4::{self, MutableIpv4Packet};
use pnet::packet::ipv6::MutableIpv6Packet;
use pnet::packet::tcp::{self, MutableTcpPacket};
use pnet::packet::udp::{self, MutableUdpPacket};
use pnet::util::MacAddr;

/// TCP SYN flag.
pub const SYN: u8 = 0x02;
/// TCP ACK flag.
pub const ACK: u8 = 0x10;
/// TCP FIN flag.
pub const FIN: u8 = 0x01;
/// TCP RST flag.
pub const RST: u8 = 0x04;

/// The layer-4 part of a test packet.
#[derive(Clone, Debug)]
pub enum L4 {
    /// TCP with ports and flags.
    Tcp { sport: u16, dport: u16, flags: u8 },
    /// UDP with ports and a payload length.
    Udp { sport: u16, dport: u16, len: usize },
    /// ICMP / ICMPv6 echo request with an identifier.
    Echo { id: u16 },
    /// Another IP protocol with raw payload bytes.
    Raw { proto: u8, payload: Vec<u8> },
}

/// IP-level options of a test packet.
#[derive(Clone, Debug, Default)]
pub struct IpOpts {
    /// IPv4 options length in 4-byte words (0..=10).
    pub v4_option_words: u8,
    /// IPv4 id / IPv6 fragment id.
    pub id: u32,
    /// Fragment: (offset in 8-byte units, more fragments).
    pub frag: Option<(u16, bool)>,
    /// IPv6 extension headers to insert before L4 (0, 43, 60; 44 is added by `frag`).
    pub v6_ext: Vec<u8>,
}

fn l4_bytes(l4: &L4, src: IpAddr, dst: IpAddr) -> (IpNextHeaderProtocol, Vec<u8>) {
    match *l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
        } => {
            let mut b = vec![0u8; 20];
            let mut p = MutableTcpPacket::new(&mut b).expect("tcp");
            p.set_source(sport);
            p.set_destination(dport);
            p.set_data_offset(5);
            p.set_flags(flags);
            p.set_window(65535);
            p.set_sequence(1);
            let c = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => tcp::ipv4_checksum(&p.to_immutable(), &s, &d),
                (IpAddr::V6(s), IpAddr::V6(d)) => tcp::ipv6_checksum(&p.to_immutable(), &s, &d),
                _ => 0,
            };
            p.set_checksum(c);
            (IpNextHeaderProtocols::Tcp, b)
        }
        L4::Udp { sport, dport, len } => {
            let mut b = vec![0u8; 8 + len];
            let mut p = MutableUdpPacket::new(&mut b).expect("udp");
            p.set_source(sport);
            p.set_destination(dport);
            p.set_length((8 + len) as u16);
            let c = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => udp::ipv4_checksum(&p.to_immutable(), &s, &d),
                (IpAddr::V6(s), IpAddr::V6(d)) => udp::ipv6_checksum(&p.to_immutable(), &s, &d),
                _ => 0,
            };
            p.set_checksum(c);
            (IpNextHeaderProtocols::Udp, b)
        }
        L4::Echo { id } => {
            let mut b = vec![0u8; 16];
            b[4..6].copy_from_slice(&id.to_be_bytes());
            match (src, dst) {
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    let mut p = MutableIcmpv6Packet::new(&mut b).expect("icmpv6");
                    p.set_icmpv6_type(Icmpv6Types::EchoRequest);
                    let c = icmpv6::checksum(&p.to_immutable(), &s, &d);
                    p.set_checksum(c);
                    (IpNextHeaderProtocols::Icmpv6, b)
                }
                _ => {
                    let mut p = MutableIcmpPacket::new(&mut b).expect("icmp");
                    p.set_icmp_type(IcmpTypes::EchoRequest);
                    let c = icmp::checksum(&p.to_immutable());
                    p.set_checksum(c);
                    (IpNextHeaderProtocols::Icmp, b)
                }
            }
        }
        L4::Raw { proto, ref payload } => (IpNextHeaderProtocol(proto), payload.clone()),
    }
}

/// An IP packet (no Ethernet header) from `src` to `dst`.
pub fn ip_packet(src: IpAddr, dst: IpAddr, l4: &L4, o: &IpOpts) -> Vec<u8> {
    let (proto, payload) = l4_bytes(l4, src, dst);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_packet(s, d, proto, &payload, o),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_packet(s, d, proto, &payload, o),
        _ => panic!("mixed address families"),
    }
}

/// An IPv4 packet carrying `payload` as `proto`.
pub fn ipv4_packet(
    s: Ipv4Addr,
    d: Ipv4Addr,
    proto: IpNextHeaderProtocol,
    payload: &[u8],
    o: &IpOpts,
) -> Vec<u8> {
    let hl = 20 + 4 * o.v4_option_words as usize;
    let mut b = vec![0u8; hl + payload.len()];
    {
        let mut p = MutableIpv4Packet::new(&mut b).expect("ipv4");
        p.set_version(4);
        p.set_header_length((hl / 4) as u8);
        p.set_total_length((hl + payload.len()) as u16);
        p.set_identification(o.id as u16);
        if let Some((off, mf)) = o.frag {
            p.set_fragment_offset(off);
            p.set_flags(if mf { 1 } else { 0 });
        }
        p.set_ttl(64);
        p.set_next_level_protocol(proto);
        p.set_source(s);
        p.set_destination(d);
    }
    // Options: NOPs then end-of-list.
    for (i, byte) in b.iter_mut().enumerate().take(hl).skip(20) {
        *byte = if i + 1 == hl { 0 } else { 1 };
    }
    b[hl..].copy_from_slice(payload);
    let c = {
        let p = pnet::packet::ipv4::Ipv4Packet::new(&b).expect("ipv4");
        ipv4::checksum(&p)
    };
    b[10..12].copy_from_slice(&c.to_be_bytes());
    b
}

/// An IPv6 packet with the extension headers of `o`.
pub fn ipv6_packet(
    s: Ipv6Addr,
    d: Ipv6Addr,
    proto: IpNextHeaderProtocol,
    payload: &[u8],
    o: &IpOpts,
) -> Vec<u8> {
    // Extension chain: each listed type as an 8-byte header, then fragment.
    let mut kinds: Vec<u8> = o.v6_ext.clone();
    if o.frag.is_some() {
        kinds.push(44);
    }
    let mut ext = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).copied().unwrap_or(proto.0);
        let mut h = vec![0u8; 8];
        h[0] = next;
        if *k == 44 {
            let (off, m) = o.frag.unwrap_or((0, false));
            h[2..4].copy_from_slice(&((off << 3) | m as u16).to_be_bytes());
            h[4..8].copy_from_slice(&o.id.to_be_bytes());
        }
        ext.extend_from_slice(&h);
    }
    let first = kinds.first().copied().unwrap_or(proto.0);
    let mut b = vec![0u8; 40 + ext.len() + payload.len()];
    {
        let mut p = MutableIpv6Packet::new(&mut b).expect("ipv6");
        p.set_version(6);
        p.set_payload_length((ext.len() + payload.len()) as u16);
        p.set_next_header(IpNextHeaderProtocol(first));
        p.set_hop_limit(64);
        p.set_source(s);
        p.set_destination(d);
    }
    b[40..40 + ext.len()].copy_from_slice(&ext);
    b[40 + ext.len()..].copy_from_slice(payload);
    b
}

/// Wraps an L3 packet in Ethernet with optional VLAN tags `(tpid, vid)`.
pub fn ethernet(
    dst: [u8; 6],
    src: [u8; 6],
    vlans: &[(u16, u16)],
    ethertype: EtherType,
    l3: &[u8],
) -> Vec<u8> {
    let mut b = vec![0u8; 14 + 4 * vlans.len() + l3.len()];
    {
        let mut e = MutableEthernetPacket::new(&mut b).expect("eth");
        e.set_destination(MacAddr::from(dst));
        e.set_source(MacAddr::from(src));
        e.set_ethertype(vlans.first().map(|v| EtherType(v.0)).unwrap_or(ethertype));
    }
    let mut off = 14;
    for (i, (_, vid)) in vlans.iter().enumerate() {
        let next = vlans.get(i + 1).map(|v| v.0).unwrap_or(ethertype.0);
        b[off..off + 2].copy_from_slice(&vid.to_be_bytes());
        b[off + 2..off + 4].copy_from_slice(&next.to_be_bytes());
        off += 4;
    }
    b[off..].copy_from_slice(l3);
    b
}

/// Client MAC used by the tests.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x01];

/// An Ethernet frame carrying an IP packet, to `dst_mac`.
pub fn frame(dst_mac: [u8; 6], src: IpAddr, dst: IpAddr, l4: &L4, o: &IpOpts) -> Vec<u8> {
    let et = if src.is_ipv4() {
        EtherTypes::Ipv4
    } else {
        EtherTypes::Ipv6
    };
    ethernet(dst_mac, CLIENT_MAC, &[], et, &ip_packet(src, dst, l4, o))
}

/// An ARP request from `sender` for `target`.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0u8; 28];
    {
        let mut p = MutableArpPacket::new(&mut a).expect("arp");
        p.set_hardware_type(ArpHardwareTypes::Ethernet);
        p.set_protocol_type(EtherTypes::Ipv4);
        p.set_hw_addr_len(6);
        p.set_proto_addr_len(4);
        p.set_operation(ArpOperations::Request);
        p.set_sender_hw_addr(MacAddr::from(CLIENT_MAC));
        p.set_sender_proto_addr(sender);
        p.set_target_hw_addr(MacAddr::zero());
        p.set_target_proto_addr(target);
    }
    ethernet([0xff; 6], CLIENT_MAC, &[], EtherTypes::Arp, &a)
}

/// A neighbour solicitation from `sender` for `target` (to its
/// solicited-node multicast address), with a source link-layer option.
pub fn neighbour_solicitation(sender: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let snm = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | t[13] as u16,
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut m = vec![0u8; 32];
    m[0] = 135;
    m[8..24].copy_from_slice(&t);
    m[24] = 1;
    m[25] = 1;
    m[26..32].copy_from_slice(&CLIENT_MAC);
    let c = {
        let p = pnet::packet::icmpv6::Icmpv6Packet::new(&m).expect("icmpv6");
        icmpv6::checksum(&p, &sender, &snm)
    };
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = ipv6_packet(
        sender,
        snm,
        IpNextHeaderProtocols::Icmpv6,
        &m,
        &IpOpts::default(),
    );
    ip[7] = 255;
    let s = snm.octets();
    ethernet(
        [0x33, 0x33, s[12], s[13], s[14], s[15]],
        CLIENT_MAC,
        &[],
        EtherTypes::Ipv6,
        &ip,
    )
}

/// An ICMP(v6) error from `router` to `vip` quoting our reply `vip:vport ->
/// client:cport` (`code` is the ICMP type: 3 / v6 1 unreachable, 4 / v6 2 too big).
pub fn icmp_error(
    router: IpAddr,
    vip: IpAddr,
    client: IpAddr,
    vport: u16,
    cport: u16,
    tcp: bool,
    ty: u8,
) -> Vec<u8> {
    let l4 = if tcp {
        L4::Tcp {
            sport: vport,
            dport: cport,
            flags: ACK,
        }
    } else {
        L4::Udp {
            sport: vport,
            dport: cport,
            len: 4,
        }
    };
    let quoted = ip_packet(vip, client, &l4, &IpOpts::default());
    let mut m = vec![0u8; 8];
    m[0] = ty;
    m.extend_from_slice(&quoted[..quoted.len().min(if vip.is_ipv4() { 28 } else { 48 })]);
    let proto = if vip.is_ipv4() { 1 } else { 58 };
    frame(
        crate::frames::CLIENT_MAC,
        router,
        vip,
        &L4::Raw { proto, payload: m },
        &IpOpts::default(),
    )
}

/// The packet a test sends for one flow: TCP with `tcp_flags`, UDP, or an
/// ICMP echo (ICMPv6 when `v6`) whose id is `sport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TCP with these flags.
    Tcp(u8),
    /// An 8-byte UDP datagram.
    Udp,
    /// An echo request.
    Echo,
}

/// The L4 header of a `kind` packet and the flow's `(proto, client port,
/// VIP port)` as `xnlb::flow::FlowSpec` names them (an echo hashes on its
/// id and VIP port 0).
pub fn l4_of(kind: Kind, sport: u16, dport: u16, v6: bool) -> (L4, u8, u16, u16) {
    use xnlb_common::ipproto;
    match kind {
        Kind::Tcp(flags) => (
            L4::Tcp {
                sport,
                dport,
                flags,
            },
            ipproto::TCP,
            sport,
            dport,
        ),
        Kind::Udp => (
            L4::Udp {
                sport,
                dport,
                len: 8,
            },
            ipproto::UDP,
            sport,
            dport,
        ),
        Kind::Echo => (
            L4::Echo { id: sport },
            if v6 { ipproto::ICMPV6 } else { ipproto::ICMP },
            sport,
            0,
        ),
    }
}

/// The `n`th test client in 198.18.1.0/24 (as the kernel tests number them).
pub fn client4(n: u32) -> IpAddr {
    Ipv4Addr::from(0xc612_0100 + n).into()
}

/// The `n`th IPv6 test client in fd00:0:0:1::/64.
pub fn client6(n: u16) -> IpAddr {
    Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, n).into()
}

/// A TCP segment's header fields.
pub fn tcp(sport: u16, dport: u16, flags: u8) -> L4 {
    L4::Tcp {
        sport,
        dport,
        flags,
    }
}

/// How much counter `i` grew between two readings.
pub fn delta(before: &xnlb_common::Counters, after: &xnlb_common::Counters, i: usize) -> u64 {
    after.c[i] - before.c[i]
}
