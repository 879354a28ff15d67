//! Numbers from the protocol specifications that the data plane reads off
//! the wire and the tests write onto it: ethertypes, IPv6 extension-header
//! ids, the ICMP and ICMPv6 types xnlb treats specially. (IP protocol
//! numbers of transports are in [`crate::ipproto`].)

/// Ethertypes (IEEE 802, host order as read with a big-endian load).
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q VLAN tag (C-tag).
    pub const VLAN_8021Q: u16 = 0x8100;
    /// 802.1ad VLAN tag (S-tag, "QinQ").
    pub const VLAN_8021AD: u16 = 0x88a8;
    /// A VIP packet one node forwarded to another in routed mode (IEEE
    /// 802 Local Experimental Ethertype 1): right after the MACs comes a
    /// [`super::shim`] with the number of times it was forwarded, then the
    /// frame's own ethertype. The receiving program takes the shim out
    /// before passing the packet. A host without the program drops it
    /// (unknown ethertype): forwarded traffic fails closed.
    pub const FORWARDED: u16 = 0x88b5;
}

/// The 4 bytes routed mode inserts after the MACs of a frame it forwards:
/// [`ethertype::FORWARDED`], the hop count (how many times the packet was
/// forwarded, at most `MAX_HOPS`), a zero byte. The frame's own ethertype
/// follows, so a parser reads the shim like a VLAN tag.
pub mod shim {
    /// Length of the shim.
    pub const LEN: usize = 4;
    /// Offset of the hop count in the frame.
    pub const HOP: usize = 14;
}

/// Length of an Ethernet header without VLAN tags.
pub const ETH_HLEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_HLEN: usize = 4;

/// IPv6 extension headers the data plane walks over (RFC 8200 section 4),
/// as next-header values.
pub mod ipv6_ext {
    /// Hop-by-hop options: `(len + 1) * 8` bytes.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header: `(len + 1) * 8` bytes.
    pub const ROUTING: u8 = 43;
    /// Fragment header: always 8 bytes.
    pub const FRAGMENT: u8 = 44;
    /// Authentication header (RFC 4302): `(len + 2) * 4` bytes.
    pub const AUTH: u8 = 51;
    /// Destination options: `(len + 1) * 8` bytes.
    pub const DEST_OPTS: u8 = 60;

    /// Whether next-header value `nh` is one of the extension headers above.
    #[inline(always)]
    pub fn is_walked(nh: u8) -> bool {
        matches!(nh, HOP_BY_HOP | ROUTING | DEST_OPTS | FRAGMENT | AUTH)
    }
}

/// ICMP (v4) types.
pub mod icmp {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (incl. fragmentation needed).
    pub const DEST_UNREACH: u8 = 3;
    /// Source quench (deprecated, still quoted a flow).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
}

/// ICMPv6 types.
pub mod icmpv6 {
    /// Destination unreachable.
    pub const DEST_UNREACH: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Neighbour solicitation.
    pub const NEIGHBOUR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOUR_ADVERT: u8 = 136;
}
