//! Routed mode's forwarding, userspace half: what the agent writes so the
//! XDP program can send a packet it does not accept to the node that does
//! (`xnlb_common::forward`). Two things, both pure here and written by the
//! shell: each slot's owner and lingering holder, installed with every
//! table, and how each member is reached ([`MemberRoute`]):
//!
//! - on the data segment: its MAC, from the data interface's neighbour
//!   table (heartbeats to the members' addresses on that segment keep
//!   those entries resolved);
//! - on another subnet, routed through the data interface: IPIP to its
//!   address, through the gateway's MAC, from our source address on that
//!   route. The member takes apart tunnel packets sent to its
//!   [`tunnel_local`] address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use xnlb_common::{addr_words, route_kind, MemberRoute, Table, MAX_BUCKETS, NO_MEMBER};

use crate::host::RouteTo;
use xnlb_proto::Routes;

use crate::config::Config;

/// Writes `routes` (buckets then single slots, `buckets` of them first)
/// into `table`, with this node's id and its fallback: the lowest-id
/// member other than us that owns something in this epoch (the member a
/// node past its lease sends its own stale slots' packets to).
pub fn fill_routes(table: &mut Table, me: u8, buckets: usize, routes: &Routes) {
    table.me = me;
    for (slots, from) in [
        (&routes.owners, &mut table.owner),
        (&routes.holders, &mut table.holder),
        (&routes.holders2, &mut table.holder2),
    ] {
        let n = buckets.min(slots.len()).min(MAX_BUCKETS as usize);
        from[..n].copy_from_slice(&slots[..n]);
        for (i, id) in slots.iter().skip(buckets).enumerate() {
            if let Some(x) = from.get_mut(MAX_BUCKETS as usize + i) {
                *x = *id;
            }
        }
    }
    table.fallback = routes
        .owners
        .iter()
        .copied()
        .filter(|&o| o != NO_MEMBER && o != me)
        .min()
        .unwrap_or(NO_MEMBER);
}

/// Whether any VIP of `cfg` is routed (only then are MACs learnt).
pub fn routed(cfg: &Config) -> bool {
    cfg.vips
        .iter()
        .any(|v| v.mode == crate::config::VipMode::Routed)
}

/// How each other member is reached from the data interface (index
/// `data_if`), given its neighbour table and the kernel's routes: on the
/// segment by MAC (the first of its addresses the neighbour table
/// resolves), else by IPIP to the first of its IPv4 addresses routed
/// through a resolved gateway on the data interface. A member reached
/// neither way is left out: forwarding to it drops.
pub fn member_routes(
    cfg: &Config,
    data_if: u32,
    neighbours: &[(IpAddr, [u8; 6])],
    route_to: impl Fn(Ipv4Addr) -> Option<RouteTo>,
) -> BTreeMap<u8, MemberRoute> {
    let mac_of = |ip: IpAddr| {
        neighbours
            .iter()
            .find(|(n, _)| *n == ip)
            .map(|(_, mac)| *mac)
    };
    let word = |ip: Ipv4Addr| addr_words(&crate::flow::ip_bytes(IpAddr::V4(ip)))[0];
    cfg.members
        .iter()
        .filter(|m| m.id != cfg.node_id)
        .filter_map(|m| {
            let on_segment = m.addrs.iter().find_map(|a| mac_of(a.ip()));
            let route = on_segment
                .map(|mac| MemberRoute {
                    mac,
                    kind: route_kind::L2,
                    ..MemberRoute::default()
                })
                .or_else(|| {
                    m.addrs.iter().find_map(|a| {
                        let IpAddr::V4(dst) = a.ip() else {
                            return None;
                        };
                        let to = route_to(dst)?;
                        let (Some(gw), Some(IpAddr::V4(src))) = (to.gateway, to.source) else {
                            return None;
                        };
                        (to.oif == data_if).then_some(())?;
                        Some(MemberRoute {
                            mac: mac_of(gw)?,
                            kind: route_kind::IPIP,
                            _pad: 0,
                            tunnel_dst: word(dst),
                            tunnel_src: word(src),
                        })
                    })
                })?;
            Some((m.id, route))
        })
        .collect()
}

/// How `route` reaches its member, in words (the log and `xnlb doctor`):
/// `at MAC`, or `on another subnet: IPIP to ADDRESS via MAC`.
pub fn describe(route: &MemberRoute) -> String {
    let mac = crate::host::mac_text(route.mac);
    if route.kind == route_kind::L2 {
        format!("at {mac}")
    } else {
        format!(
            "on another subnet: IPIP to {} via {mac}",
            Ipv4Addr::from(route.tunnel_dst.to_le_bytes())
        )
    }
}

/// The address this node's members send tunnel packets to: the first of
/// its own IPv4 heartbeat addresses that is on the data interface.
pub fn tunnel_local(cfg: &Config, on_data_if: &[IpAddr]) -> Option<Ipv4Addr> {
    cfg.members
        .iter()
        .find(|m| m.id == cfg.node_id)?
        .addrs
        .iter()
        .find_map(|a| match a.ip() {
            IpAddr::V4(v4) if on_data_if.contains(&a.ip()) => Some(v4),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Member 1 (us), 2 on our data segment, 3 on another subnet, 4
    /// reachable neither way; each with a heartbeat address and a data one.
    fn cfg() -> Config {
        let src = r#"
[node]
id = 1
interface = "eth0"
[cluster]
name = "t"
key_file = "/nonexistent"
listen = ["198.19.1.1:7450", "198.18.1.1:7450"]
[[cluster.member]]
id = 1
addrs = ["198.19.1.1:7450", "198.18.1.1:7450"]
[[cluster.member]]
id = 2
addrs = ["198.19.1.2:7450", "198.18.1.2:7450"]
[[cluster.member]]
id = 3
addrs = ["198.19.1.3:7450", "198.18.2.3:7450"]
[[cluster.member]]
id = 4
addrs = ["198.19.1.4:7450", "198.18.3.4:7450"]
"#;
        Config::parse(std::path::Path::new("t.toml"), src).expect("valid config")
    }

    #[test]
    fn members_are_reached_on_the_segment_or_through_a_tunnel() {
        const DATA: u32 = 7;
        let mac2 = [2, 0, 0, 0, 0, 2];
        let gw = [2, 0, 0, 0, 0, 0xfe];
        let neighbours = [
            ("198.18.1.2".parse().expect("ip"), mac2),
            ("198.18.1.254".parse().expect("ip"), gw),
        ];
        let routes = member_routes(&cfg(), DATA, &neighbours, |dst| {
            let o = dst.octets();
            match (o[2], o[3]) {
                // The heartbeat link: another interface.
                (1, _) if o[1] == 19 => Some(RouteTo {
                    oif: 9,
                    gateway: None,
                    source: Some("198.19.1.1".parse().expect("ip")),
                }),
                (2, _) => Some(RouteTo {
                    oif: DATA,
                    gateway: Some("198.18.1.254".parse().expect("ip")),
                    source: Some("198.18.1.1".parse().expect("ip")),
                }),
                // Through a gateway whose MAC is not resolved.
                (3, _) => Some(RouteTo {
                    oif: DATA,
                    gateway: Some("198.18.1.253".parse().expect("ip")),
                    source: Some("198.18.1.1".parse().expect("ip")),
                }),
                _ => None,
            }
        });
        assert_eq!(routes.len(), 2, "{routes:?}");
        assert_eq!(routes[&2].kind, route_kind::L2);
        assert_eq!(routes[&2].mac, mac2);
        let t = routes[&3];
        assert_eq!((t.kind, t.mac), (route_kind::IPIP, gw));
        assert_eq!(t.tunnel_dst.to_le_bytes(), [198, 18, 2, 3]);
        assert_eq!(t.tunnel_src.to_le_bytes(), [198, 18, 1, 1]);
        assert_eq!(
            tunnel_local(&cfg(), &["198.18.1.1".parse().expect("ip")]),
            Some("198.18.1.1".parse().expect("ip"))
        );
        assert_eq!(
            tunnel_local(&cfg(), &["198.18.9.9".parse().expect("ip")]),
            None
        );
    }

    #[test]
    fn routes_land_in_their_slots_and_the_fallback_is_another_owner() {
        let mut t = Table::empty();
        let routes = Routes {
            owners: vec![2, 1, 3, 2, 9],
            holders: vec![0, 2, 0, 0, 1],
            holders2: vec![0, 4, 0, 0, 0],
        };
        fill_routes(&mut t, 2, 4, &routes);
        assert_eq!(&t.owner[..4], &[2, 1, 3, 2]);
        assert_eq!(t.owner[4], NO_MEMBER);
        assert_eq!(t.owner[MAX_BUCKETS as usize], 9);
        assert_eq!((t.holder[1], t.holder2[1]), (2, 4));
        assert_eq!(t.holder[MAX_BUCKETS as usize], 1);
        assert_eq!((t.me, t.fallback), (2, 1));
        let alone = Routes {
            owners: vec![2, 2],
            holders: vec![0, 0],
            holders2: vec![0, 0],
        };
        fill_routes(&mut t, 2, 2, &alone);
        assert_eq!(t.fallback, NO_MEMBER);
    }
}
