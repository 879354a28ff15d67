//! `[cluster]` and `[[cluster.member]]`: the settings every member shares
//! (name, buckets, timers, the member list) and this node's own heartbeat
//! addresses, checked against its `[node]` section and its member entry.

use std::net::SocketAddr;

use super::context::Ctx;
use super::node::Node;
use super::raw::{given_or, RawCluster, RawNode};
use super::{
    role_name, ConfigError, Member, MAX_DEAD_AFTER_MS, MAX_DRAIN_TIMEOUT_S,
    MAX_HEARTBEAT_INTERVAL_MS, ROLES,
};

/// `[cluster]` validated.
pub(super) struct Cluster {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub buckets: u32,
    pub timers: Timers,
    /// By id, this node's weight from `[node]`.
    pub members: Vec<Member>,
}

/// `cluster.heartbeat_interval_ms`, `dead_after_ms` and `drain_timeout_s`.
pub(super) struct Timers {
    pub heartbeat_interval_ms: u64,
    pub dead_after_ms: u64,
    pub drain_timeout_s: u64,
}

/// Validates `c`; `raw_node` and `node` locate and check this node's entry.
pub(super) fn parse(
    cx: &Ctx,
    c: &RawCluster,
    raw_node: &RawNode,
    node: &Node,
) -> Result<Cluster, ConfigError> {
    let name = c.name.get_ref();
    if name.is_empty() || name.len() > 64 {
        return cx.err(c.name.span(), "cluster.name", "must be 1 to 64 characters");
    }
    let listen = cx.addrs(&c.listen, "cluster.listen")?;
    let buckets = cx.in_range(&c.buckets, 1..=xnlb_common::MAX_BUCKETS, "cluster.buckets")?;
    let hb = *c.heartbeat_interval_ms.get_ref();
    if !(1..=MAX_HEARTBEAT_INTERVAL_MS).contains(&hb) {
        return cx.err(
            c.heartbeat_interval_ms.span(),
            "cluster.heartbeat_interval_ms",
            format!("{hb} is not in 1..={MAX_HEARTBEAT_INTERVAL_MS} (at most 10 s)"),
        );
    }
    let drain_timeout_s = cx.at_most(
        &c.drain_timeout_s,
        MAX_DRAIN_TIMEOUT_S,
        "cluster.drain_timeout_s",
        "(one day)",
    )?;
    let dead = cx.at_most(
        &c.dead_after_ms,
        MAX_DEAD_AFTER_MS,
        "cluster.dead_after_ms",
        "(60 s): a member silent that long is dead",
    )?;
    if dead < 3 * hb {
        // Left at its default, the fault is as much the interval's: point
        // there, not at line 1 where a default's empty span would.
        let defaulted = if c.dead_after_ms.span().is_empty() {
            " (the default; set cluster.dead_after_ms or shorten the interval)"
        } else {
            ""
        };
        return cx.err(
            given_or(&c.dead_after_ms, c.heartbeat_interval_ms.span()),
            "cluster.dead_after_ms",
            format!(
                "{dead} ms{defaulted} is less than 3 heartbeat intervals ({} ms)",
                3 * hb
            ),
        );
    }
    let members = members(cx, c, raw_node, node, &listen)?;
    Ok(Cluster {
        name: name.clone(),
        listen,
        buckets,
        timers: Timers {
            heartbeat_interval_ms: hb,
            dead_after_ms: dead,
            drain_timeout_s,
        },
        members,
    })
}

/// The member list: ids unique, this node present with its `[node]` role
/// and its `cluster.listen` ports link by link, every member with the same
/// number of links. Sorted by id.
fn members(
    cx: &Ctx,
    c: &RawCluster,
    raw_node: &RawNode,
    node: &Node,
    listen: &[SocketAddr],
) -> Result<Vec<Member>, ConfigError> {
    let mut members: Vec<Member> = Vec::new();
    for (i, m) in c.member.iter().enumerate() {
        let key = format!("cluster.member[{i}]");
        let id = cx.member_id(*m.id.get_ref(), m.id.span(), &format!("{key}.id"))?;
        if members.iter().any(|o| o.id == id) {
            return cx.err(
                m.id.span(),
                format!("{key}.id"),
                format!("member {id} is listed twice"),
            );
        }
        let role = cx.choice(&m.role, &format!("{key}.role"), &ROLES)?;
        let weight = cx.in_range(&m.weight, 1..=10_000, format!("{key}.weight"))?;
        let addrs = cx.addrs(&m.addrs, &format!("{key}.addrs"))?;
        members.push(Member {
            id,
            addrs,
            role,
            weight,
        });
    }
    let Some(me) = members.iter_mut().find(|m| m.id == node.id) else {
        return cx.err(
            raw_node.id.span(),
            "node.id",
            format!("node {} is not in [[cluster.member]]", node.id),
        );
    };
    if me.role != node.role {
        let defaulted = if raw_node.role.span().is_empty() {
            " (the default)"
        } else {
            ""
        };
        return cx.err(
            given_or(&raw_node.role, raw_node.id.span()),
            "node.role",
            format!(
                "\"{}\"{defaulted} differs from this node's [[cluster.member]] role \"{}\": set both to the same role",
                role_name(node.role),
                role_name(me.role)
            ),
        );
    }
    if me.addrs.len() != listen.len()
        || me
            .addrs
            .iter()
            .zip(listen)
            .any(|(a, b)| a.port() != b.port())
    {
        return cx.err(
            c.listen.span(),
            "cluster.listen",
            "must list this node's [[cluster.member]] addrs, link by link",
        );
    }
    me.weight = node.weight;
    let links = members[0].addrs.len();
    if let Some(m) = members.iter().find(|m| m.addrs.len() != links) {
        let span = c
            .member
            .iter()
            .find(|r| *r.id.get_ref() == m.id as i64)
            .map(|r| r.addrs.span())
            .unwrap_or(0..0);
        return cx.err(
            span,
            format!("cluster.member (id {}).addrs", m.id),
            format!(
                "has {} links where member {} has {links}: links pair by index",
                m.addrs.len(),
                members[0].id
            ),
        );
    }
    members.sort_by_key(|m| m.id);
    Ok(members)
}
