//! Routed mode's forwarding, userspace half: what the agent writes so the
//! XDP program can send a packet it does not accept to the node that does
//! (`xnlb_common::forward`). Two things, both pure here and written by the
//! shell: each slot's owner and lingering holder, installed with every
//! table, and each member's MAC on the data segment, learnt from the
//! kernel's neighbour table (heartbeats to the members' addresses on that
//! segment keep those entries resolved).

use std::collections::BTreeMap;
use std::net::IpAddr;

use xnlb_common::{Table, MAX_BUCKETS, NO_MEMBER};
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

/// Each other member's MAC: that of the first of its heartbeat addresses
/// found in `neighbours` (the data interface's neighbour table). A member
/// with none there is left out: forwarding to it drops, and
/// `xnlb doctor`/the log say why.
pub fn member_macs(cfg: &Config, neighbours: &[(IpAddr, [u8; 6])]) -> BTreeMap<u8, [u8; 6]> {
    cfg.members
        .iter()
        .filter(|m| m.id != cfg.node_id)
        .filter_map(|m| {
            m.addrs.iter().find_map(|a| {
                neighbours
                    .iter()
                    .find(|(ip, _)| *ip == a.ip())
                    .map(|(_, mac)| (m.id, *mac))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_land_in_their_slots_and_the_fallback_is_another_owner() {
        let mut t = Table::empty();
        let routes = Routes {
            owners: vec![2, 1, 3, 2, 9],
            holders: vec![0, 2, 0, 0, 1],
        };
        fill_routes(&mut t, 2, 4, &routes);
        assert_eq!(&t.owner[..4], &[2, 1, 3, 2]);
        assert_eq!(t.owner[4], NO_MEMBER);
        assert_eq!(t.owner[MAX_BUCKETS as usize], 9);
        assert_eq!(t.holder[1], 2);
        assert_eq!(t.holder[MAX_BUCKETS as usize], 1);
        assert_eq!((t.me, t.fallback), (2, 1));
        let alone = Routes {
            owners: vec![2, 2],
            holders: vec![0, 0],
        };
        fill_routes(&mut t, 2, 2, &alone);
        assert_eq!(t.fallback, NO_MEMBER);
    }
}
