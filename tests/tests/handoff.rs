//! Graceful changes with live connections (DESIGN S5, S6), real agents in
//! namespaces: drain, resume, rebalance, a weight change and a join while
//! 200 long-lived TCP connections echo. None may break, new connections
//! follow the new map, and nodes present throughout keep their buckets
//! unless the change is about them. Every test also asserts that no UDP
//! probe was accepted by two nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use xnlb::control::Request;
use xnlb_tests::cluster::checks::{
    drain, owned, status, tcp_all_by_owner, wait_owns_buckets, CONVERGE,
};
use xnlb_tests::cluster::{abort, echo_round, wait_until, Cluster, ClusterSpec, Conn};

const CONNS: usize = 200;

fn open_conns(c: &Cluster, ports: impl Iterator<Item = u16>, ask: u8) -> Vec<Conn> {
    let mut out = Vec::new();
    for p in ports {
        let conn = c.open_conn(p, Duration::from_secs(1)).unwrap_or_else(|| {
            panic!(
                "connection from port {p} not answered (owner {:?}): {:?}",
                c.owner(ask, p),
                c.status(ask)
            )
        });
        let owner = c.owner(ask, p);
        assert_eq!(Some(conn.node), owner, "port {p}: accepted by the owner");
        conn.stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        out.push(conn);
    }
    out
}

fn assert_unbroken(conns: &mut [Conn], when: &str) {
    let broken = echo_round(conns);
    assert!(
        broken.is_empty(),
        "{when}: {} of {} established connections broke (S6): {:?}",
        broken.len(),
        conns.len(),
        &broken[..broken.len().min(10)]
    );
}

/// Keeps every connection echoing for `d`.
fn keep_echoing(conns: &mut [Conn], d: Duration, when: &str) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        assert_unbroken(conns, when);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After a graceful change: keeps the connections echoing while the
/// handoff is open, then closes those whose bucket moved (their holder is
/// no longer the owner) so the handoff can end, and waits for convergence
/// while the rest keep echoing. Returns how many were closed.
fn finish_handoff(c: &Cluster, conns: &mut Vec<Conn>, live: &[u8], when: &str) -> usize {
    keep_echoing(conns, Duration::from_millis(1500), when);
    let ask = live[0];
    let before = conns.len();
    conns.retain(|k| c.owner(ask, k.port) == Some(k.node));
    let closed = before - conns.len();
    let deadline = Instant::now() + CONVERGE;
    loop {
        assert_unbroken(conns, when);
        let done = live
            .iter()
            .all(|&i| c.status(i).is_some_and(|s| s.converged && s.quorum.has));
        let epochs: BTreeSet<u64> = live
            .iter()
            .filter_map(|&i| c.status(i).map(|s| s.epoch))
            .collect();
        if done && epochs.len() == 1 {
            break;
        }
        if Instant::now() > deadline {
            let open: Vec<(u16, u8, Option<u8>)> = conns
                .iter()
                .map(|k| (k.port, k.node, c.owner(ask, k.port)))
                .collect();
            panic!(
                "{when}: no convergence after closing the {closed} moved connections: {:?}\n{}\n{}\nopen connections (port, holder, owner): {open:?}",
                live.iter().map(|&i| c.status(i)).collect::<Vec<_>>(),
                live.iter()
                    .map(|&i| c.log_tail(i, 10))
                    .collect::<Vec<_>>()
                    .join("\n"),
                live.iter()
                    .map(|&i| c.dump_flows(i))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_unbroken(conns, when);
    closed
}

fn per_node(conns: &[Conn]) -> BTreeMap<u8, usize> {
    let mut m = BTreeMap::new();
    for k in conns {
        *m.entry(k.node).or_default() += 1;
    }
    m
}

/// Drain, resume, rebalance and a weight change (config edit + SIGHUP)
/// with 200 long-lived TCP connections echoing throughout: none breaks
/// (S6), new connections follow the new map, the drain ends once node 1's
/// connections are gone, and nodes present throughout keep their buckets
/// except on rebalance and weight change (S5).
#[test]
fn drain_resume_rebalance_and_weight_change_keep_established_connections() {
    let t0 = Instant::now();
    let mut c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let mut conns = open_conns(&c, 30_000..30_000 + CONNS as u16, 2);
    println!("{CONNS} connections: {:?}", per_node(&conns));
    assert_unbroken(&mut conns, "steady state");
    let (b1, b2, b3) = (owned(&c, 1), owned(&c, 2), owned(&c, 3));

    // Drain node 1.
    drain(&c, 1);
    keep_echoing(&mut conns, Duration::from_millis(1000), "drain");
    // New connections go to the others, by the owner the map names.
    let split = tcp_all_by_owner(&c, 2, 31_000..31_060);
    assert!(
        !split.contains_key(&1),
        "draining node took new flows: {split:?}"
    );
    assert_unbroken(&mut conns, "drain, after new connections");
    assert_eq!(
        status(&c, 1).state,
        "draining",
        "node 1 finished draining with its connections still open"
    );
    // Close node 1's connections, half with a FIN and half with a reset
    // (the socket table forgets both at once): the drain finishes.
    let (ones, rest): (Vec<Conn>, Vec<Conn>) = conns.into_iter().partition(|k| k.node == 1);
    conns = rest;
    for (i, k) in ones.into_iter().enumerate() {
        if i % 2 == 0 {
            abort(k.stream);
        }
    }
    let t_close = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_unbroken(&mut conns, "drain, finishing");
        let s = status(&c, 1);
        if s.state == "drained" && s.buckets.owned == 0 && s.converged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drain did not finish: {s:?}\n{}",
            c.log_tail(1, 10)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "drain finished {:?} after node 1's connections closed (half by FIN, half by RST)",
        t_close.elapsed()
    );
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let (d2, d3) = (owned(&c, 2), owned(&c, 3));
    assert!(
        b2.is_subset(&d2) && b3.is_subset(&d3),
        "drain moved buckets between 2 and 3 (S5)"
    );
    assert_eq!(d2.len() + d3.len(), 4096);

    // Resume: node 1 takes a share back, only from the others' surplus.
    let r = c.control(1, Request::Resume);
    assert!(r.ok, "resume: {r:?}");
    let closed = finish_handoff(&c, &mut conns, &[1, 2, 3], "resume");
    let (r1, r2, r3) = (owned(&c, 1), owned(&c, 2), owned(&c, 3));
    println!(
        "resume: {closed} moved connections closed; buckets {} / {} / {}; node 1 got back {} of its {} pre-drain buckets",
        r1.len(),
        r2.len(),
        r3.len(),
        r1.intersection(&b1).count(),
        b1.len()
    );
    assert!(
        (1365..=1366).contains(&r1.len()),
        "node 1 share after resume: {}",
        r1.len()
    );
    assert!(
        r2.is_subset(&d2) && r3.is_subset(&d3),
        "resume moved buckets between 2 and 3 (S5)"
    );
    assert_eq!(status(&c, 1).state, "active");

    // Top up, then rebalance.
    conns.extend(open_conns(
        &c,
        32_000..32_000 + (CONNS - conns.len()) as u16,
        2,
    ));
    let r = c.control(2, Request::Rebalance);
    assert!(r.ok, "rebalance: {r:?}");
    let closed = finish_handoff(&c, &mut conns, &[1, 2, 3], "rebalance");
    let counts: Vec<usize> = [1, 2, 3]
        .iter()
        .map(|&i| status(&c, i).buckets.owned)
        .collect();
    println!("rebalance: {closed} moved connections closed; buckets {counts:?}");
    assert!(
        counts.iter().all(|n| (1365..=1366).contains(n)),
        "{counts:?}"
    );

    // Weight change: node 3 to 200 by config edit + SIGHUP.
    conns.extend(open_conns(
        &c,
        33_000..33_000 + (CONNS - conns.len()) as u16,
        2,
    ));
    c.set_weight(3, 200);
    assert!(
        wait_until(Duration::from_secs(5), || status(&c, 3).buckets.owned
            == 2048),
        "weight 200 of 400 not applied: {:?}\n{}",
        status(&c, 3),
        c.log_tail(3, 10)
    );
    let closed = finish_handoff(&c, &mut conns, &[1, 2, 3], "weight change");
    let counts: Vec<usize> = [1, 2, 3]
        .iter()
        .map(|&i| status(&c, i).buckets.owned)
        .collect();
    println!("weight change: {closed} moved connections closed; buckets {counts:?}");
    assert_eq!(counts[2], 2048);
    assert!(
        counts[0].abs_diff(1024) <= 1 && counts[1].abs_diff(1024) <= 1,
        "{counts:?}"
    );
    let split = tcp_all_by_owner(&c, 1, 34_000..34_100);
    println!("after the weight change, 100 new connections: {split:?}");
    assert_unbroken(&mut conns, "end");
    c.assert_no_overlap("graceful changes");
    println!("graceful changes: {:?}", t0.elapsed());
}

/// A third agent joins a running 2-node cluster (configured for 3) while
/// 200 connections echo: none breaks, the newcomer gets its share, and
/// only buckets it takes move (S5).
#[test]
fn a_graceful_join_keeps_established_connections() {
    let t0 = Instant::now();
    let spec = ClusterSpec {
        deferred: vec![3],
        ..ClusterSpec::actives(3)
    };
    let mut c = Cluster::start(&spec);
    c.wait_converged(&[1, 2], CONVERGE);
    let (b1, b2) = (owned(&c, 1), owned(&c, 2));
    assert_eq!(b1.len() + b2.len(), 4096, "two nodes serve everything");
    let mut conns = open_conns(&c, 30_000..30_000 + CONNS as u16, 1);
    println!("before the join: {:?}", per_node(&conns));
    c.start_agent(3);
    wait_owns_buckets(&c, 3);
    let closed = finish_handoff(&c, &mut conns, &[1, 2, 3], "join");
    let (j1, j2, j3) = (owned(&c, 1), owned(&c, 2), owned(&c, 3));
    println!(
        "join: {closed} moved connections closed; buckets {} / {} / {}",
        j1.len(),
        j2.len(),
        j3.len()
    );
    assert!(
        (1365..=1366).contains(&j3.len()),
        "newcomer's share: {}",
        j3.len()
    );
    assert!(
        j1.is_subset(&b1) && j2.is_subset(&b2),
        "join moved buckets between 1 and 2 (S5)"
    );
    let split = tcp_all_by_owner(&c, 3, 35_000..35_100);
    assert!(
        split.contains_key(&3),
        "newcomer takes new flows: {split:?}"
    );
    c.assert_no_overlap("join");
    println!("join: {:?}", t0.elapsed());
}
