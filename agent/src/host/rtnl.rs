//! The few route-netlink requests host setup needs, synchronous (see
//! [`crate::netlink`]): host setup runs before the tokio runtime starts
//! and on its way out, and each request is one datagram and its answer.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

fn exchange(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    crate::netlink::exchange(NETLINK_ROUTE, msg, flags)
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// `ip` as a host route (/32, /128) on interface `index`.
fn host_address(index: u32, ip: IpAddr) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(ip);
    m.header.prefix_len = if ip.is_ipv4() { 32 } else { 128 };
    m.header.scope = AddressScope::Universe;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    m
}

/// Adds `ip`/32 or /128 to interface `index`, or refreshes it if present
/// (`ip addr replace`); IPv6 without duplicate address detection (every
/// node holds the VIP: DAD would mark it duplicate and unusable).
pub fn replace_address(index: u32, ip: IpAddr) -> io::Result<()> {
    let mut m = host_address(index, ip);
    if ip.is_ipv6() {
        m.header.flags = AddressHeaderFlags::Nodad;
    }
    exchange(
        RouteNetlinkMessage::NewAddress(m),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .map(drop)
}

/// Removes `ip`/32 or /128 from interface `index`.
pub fn delete_address(index: u32, ip: IpAddr) -> io::Result<()> {
    exchange(
        RouteNetlinkMessage::DelAddress(host_address(index, ip)),
        NLM_F_ACK,
    )
    .map(drop)
}

/// The addresses on interface `index`.
pub fn addresses(index: u32) -> io::Result<Vec<IpAddr>> {
    let answers = exchange(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        NLM_F_DUMP,
    )?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.index == index => Some(a),
            _ => None,
        })
        .flat_map(|a| {
            // IFA_LOCAL is the address itself (IFA_ADDRESS is the peer on
            // point-to-point links); IPv6 sends only IFA_ADDRESS.
            let local = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            local.or_else(|| {
                a.attributes.iter().find_map(|at| match at {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            })
        })
        .collect())
}

/// Sets (`on`) or clears the link flags `flags` of interface `index`,
/// leaving the others alone (`ip link set ... up | promisc on`).
pub fn set_link_flags(index: u32, flags: LinkFlags, on: bool) -> io::Result<()> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = if on { flags } else { LinkFlags::empty() };
    m.header.change_mask = flags;
    exchange(RouteNetlinkMessage::SetLink(m), NLM_F_ACK).map(drop)
}

/// The link flags of interface `index`.
pub fn link_flags(index: u32) -> io::Result<LinkFlags> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    let answers = exchange(RouteNetlinkMessage::GetLink(m), NLM_F_ACK)?;
    answers
        .into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) if l.header.index == index => Some(l.header.flags),
            _ => None,
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such link"))
}

/// The neighbour table's usable entries on interface `index`: address and
/// link-layer address (`ip neigh show dev`), leaving out entries being
/// resolved or that failed to resolve.
pub fn neighbours(index: u32) -> io::Result<Vec<(IpAddr, [u8; 6])>> {
    use netlink_packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
    };
    let answers = exchange(
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        NLM_F_DUMP,
    )?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => Some(n),
            _ => None,
        })
        .filter(|n| {
            !matches!(
                n.header.state,
                NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
            )
        })
        .filter_map(|n| {
            let ip = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    Some(IpAddr::V4(*v4))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    Some(IpAddr::V6(*v6))
                }
                _ => None,
            })?;
            let mac = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                    Some([b[0], b[1], b[2], b[3], b[4], b[5]])
                }
                _ => None,
            })?;
            Some((ip, mac))
        })
        .collect())
}

/// Where the kernel would send a packet to `dst` (`ip route get`): the
/// outgoing interface, the gateway if not on-link, and the source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteTo {
    /// Outgoing interface index.
    pub oif: u32,
    /// The next hop, when `dst` is not on the link.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would pick.
    pub source: Option<IpAddr>,
}

/// The route to IPv4 `dst`, if there is one.
pub fn route_to(dst: std::net::Ipv4Addr) -> io::Result<Option<RouteTo>> {
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = 32;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    // A get answers with one message and no NLMSG_DONE: ask for the ack.
    let answers = match exchange(RouteNetlinkMessage::GetRoute(m), NLM_F_ACK) {
        Ok(a) => a,
        // No route (unreachable, prohibited): not an error of ours.
        Err(e) if e.raw_os_error().is_some() => return Ok(None),
        Err(e) => return Err(e),
    };
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    Ok(answers.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewRoute(r) => {
            let mut to = RouteTo {
                oif: 0,
                gateway: None,
                source: None,
            };
            for a in &r.attributes {
                match a {
                    RouteAttribute::Oif(i) => to.oif = *i,
                    RouteAttribute::Gateway(g) => to.gateway = ip(g),
                    RouteAttribute::PrefSource(s) => to.source = ip(s),
                    _ => {}
                }
            }
            Some(to)
        }
        _ => None,
    }))
}
