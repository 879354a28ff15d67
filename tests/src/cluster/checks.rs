//! Checks and timing bounds shared by the end-to-end tests: how long to wait
//! for convergence, what a node owns, how long a failover left probes
//! unanswered, and whether every flow is answered by the owner the map names.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use xnlb::status::StatusView;

use super::{Cluster, NodeSpec, CLIENT, UDP_PORT, VIP};
use crate::traffic::Probe;

/// How long a (re)started cluster may take to converge.
pub const CONVERGE: Duration = Duration::from_secs(15);
/// How long a single TCP or UDP probe waits for its answer.
pub const PROBE: Duration = Duration::from_millis(300);
/// A failed member's buckets must be served again within this (DESIGN S7:
/// dead_after 250 ms + two heartbeats, plus probe granularity and slack for
/// a loaded 2-core machine; the 100 ms liveness period of a node that lost
/// its data plane fits in the same slack).
pub const FAILOVER_BOUND: Duration = Duration::from_millis(700);

/// Polls `f` every 50 ms until it holds; false after `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Member `id` in `role`, weight 100.
pub fn node(id: u8, role: &'static str) -> NodeSpec {
    NodeSpec {
        id,
        role,
        weight: 100,
    }
}

/// Whether the others (node 1 asked) have fenced member `id`: dead, or
/// owning nothing.
pub fn is_fenced(c: &Cluster, id: u8) -> bool {
    c.status(1).is_some_and(|s| {
        s.members
            .iter()
            .any(|m| m.id == id && (m.state == "dead" || m.buckets == 0))
    })
}

/// Waits until [`is_fenced`]. Panics after 5 s.
pub fn fenced_by_others(c: &Cluster, id: u8) {
    let ok = wait_until(Duration::from_secs(5), || is_fenced(c, id));
    assert!(ok, "member {id} was not fenced: {:?}", c.status(1));
}

/// Asks node `id` to drain and waits until it owns nothing (it stays
/// `draining` while its kernel holds connections in the buckets it gave
/// up, then becomes `drained`). Panics after 5 s.
pub fn drain(c: &Cluster, id: u8) {
    let r = c.control(id, xnlb::control::Request::Drain { timeout_s: None });
    assert!(r.ok, "drain: {r:?}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = status(c, id);
            (s.state == "draining" || s.state == "drained") && s.buckets.owned == 0
        }),
        "node {id} not draining: {:?}",
        c.status(id)
    );
}

/// Waits until node `id` owns buckets (after it joined or resumed).
/// Panics after 10 s.
pub fn wait_owns_buckets(c: &Cluster, id: u8) {
    assert!(
        wait_until(Duration::from_secs(10), || c
            .status(id)
            .is_some_and(|s| s.buckets.owned > 0)),
        "node {id} got no buckets: {:?}",
        c.status(id)
    );
}

/// Node `id`'s status; panics if its agent does not answer.
pub fn status(c: &Cluster, id: u8) -> StatusView {
    c.status(id)
        .unwrap_or_else(|| panic!("node {id} does not answer status"))
}

/// Buckets node `id` owns, from `owned_ranges`.
pub fn owned(c: &Cluster, id: u8) -> BTreeSet<usize> {
    status(c, id)
        .buckets
        .owned_ranges
        .iter()
        .flat_map(|[a, b]| *a..=*b)
        .collect()
}

/// The last unanswered probe's send time (zero if none), and who answered
/// the probes sent after `after`.
pub fn outage(probes: &[Probe], after: Duration) -> (Duration, BTreeMap<u8, usize>) {
    let last = probes
        .iter()
        .filter(|p| p.node.is_none())
        .map(|p| p.at)
        .max()
        .unwrap_or_default();
    let mut who = BTreeMap::new();
    for p in probes.iter().filter(|p| p.at > after) {
        if let Some(n) = p.node {
            *who.entry(n).or_default() += 1;
        }
    }
    (last, who)
}

/// A TCP connection to the IPv4 VIP from each of `ports`, each answered
/// by the owner that node `ask` names; the split per node.
pub fn tcp_all_by_owner(c: &Cluster, ask: u8, ports: std::ops::Range<u16>) -> BTreeMap<u8, usize> {
    let mut split = BTreeMap::new();
    for p in ports {
        let owner = c.owner(ask, p);
        let got = c.tcp_probe(p, PROBE);
        assert!(owner.is_some(), "client port {p}: no owner");
        assert_eq!(
            got, owner,
            "client port {p}: answered by {got:?}, xnlb owner says {owner:?}"
        );
        *split.entry(got.unwrap_or(0)).or_default() += 1;
    }
    split
}

/// A UDP datagram to the IPv4 VIP from each of `ports` (ids from
/// `first_id`), each answered by its owner; the split per node.
pub fn udp_all_by_owner(
    c: &Cluster,
    ask: u8,
    ports: std::ops::Range<u16>,
    first_id: u64,
) -> BTreeMap<u8, usize> {
    let mut split = BTreeMap::new();
    for (i, p) in ports.enumerate() {
        let owner = c.owner_of(
            ask,
            IpAddr::V4(VIP),
            "udp",
            SocketAddr::from((CLIENT, p)),
            UDP_PORT,
        );
        let got = c.udp_probe(p, first_id + i as u64, PROBE);
        assert!(owner.is_some(), "udp client port {p}: no owner");
        assert_eq!(got, owner, "udp client port {p}: answered by {got:?}");
        *split.entry(got.unwrap_or(0)).or_default() += 1;
    }
    split
}
