//! End-to-end scenarios beyond `cluster.rs` (issue 5 item 2): witness and
//! standby roles, graceful operator actions with long-lived connections,
//! IPv6, fragments, ICMP, VLAN, forged heartbeats, agent restarts. Real
//! agents in namespaces; every test asserts on what the client saw and on
//! what the servers accepted (no UDP probe accepted by two nodes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use xnlb::control::Request;
use xnlb::host::cluster_mac;
use xnlb::status::StatusView;
use xnlb_tests::cluster::checks::{
    node, outage, owned, status, tcp_all_by_owner, udp_all_by_owner, CONVERGE, FAILOVER_BOUND,
    PROBE,
};
use xnlb_tests::cluster::{
    client_addr, echo_round, wait_until, Cluster, ClusterSpec, Conn, CLIENT, HB_PORT, TCP_PORT,
    UDP_PORT, VIP, VIP6,
};
use xnlb_tests::raw::{internet_checksum, mac_of, ping_raw, sniff_udp, PacketSocket};
use xnlb_tests::traffic::Probe;

// ---------------------------------------------------------------- roles

/// Two actives and a witness (the 2-node cluster's tie-breaker). Losing
/// the witness costs nothing (quorum 2 of 3, no bucket moves); after it
/// returns, losing an active leaves the other serving every bucket.
#[test]
fn two_actives_and_a_witness_survive_either_loss() {
    let t0 = Instant::now();
    let spec = ClusterSpec {
        nodes: vec![node(1, "active"), node(2, "active"), node(3, "witness")],
        ..ClusterSpec::actives(3)
    };
    let mut c = Cluster::start(&spec);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let (b1, b2) = (owned(&c, 1), owned(&c, 2));
    assert_eq!((b1.len(), b2.len()), (2048, 2048), "actives split evenly");
    assert_eq!(status(&c, 3).buckets.owned, 0, "the witness owns nothing");
    let split = udp_all_by_owner(&c, 1, 40_000..40_100, 1);
    assert_eq!(split.keys().copied().collect::<Vec<_>>(), vec![1, 2]);

    // Witness lost: nothing moves, nothing goes unanswered.
    let prober = c.prober(10_000_000);
    c.kill(3);
    std::thread::sleep(Duration::from_millis(1500));
    let probes = prober.finish();
    let unanswered: Vec<&Probe> = probes.iter().filter(|p| p.node.is_none()).collect();
    assert!(
        unanswered.is_empty(),
        "witness loss: {} of {} probes unanswered, e.g. {:?}",
        unanswered.len(),
        probes.len(),
        unanswered.first()
    );
    c.wait_converged(&[1, 2], CONVERGE);
    let s1 = status(&c, 1);
    assert!(
        s1.quorum.has && s1.quorum.votes == 2,
        "quorum 2 of 3: {s1:?}"
    );
    assert_eq!(owned(&c, 1), b1, "witness loss moved node 1's buckets");
    assert_eq!(owned(&c, 2), b2, "witness loss moved node 2's buckets");
    c.assert_no_overlap("witness loss");

    // Witness back, then an active lost: the other serves everything.
    c.start_agent(3);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let prober = c.prober(11_000_000);
    std::thread::sleep(Duration::from_millis(100));
    c.kill(2);
    std::thread::sleep(Duration::from_millis(1500));
    let probes = prober.finish();
    let kill_offset = probes
        .iter()
        .map(|p| p.at)
        .find(|&at| at >= Duration::from_millis(100))
        .unwrap_or_default();
    let (last_fail, who) = outage(&probes, kill_offset + FAILOVER_BOUND);
    let gap = last_fail.saturating_sub(kill_offset);
    println!(
        "witness: active lost, last unanswered probe {gap:?} after the kill; then answered by {who:?}"
    );
    assert!(gap < FAILOVER_BOUND, "failover took {gap:?}");
    assert_eq!(who.keys().copied().collect::<Vec<_>>(), vec![1]);
    c.wait_converged(&[1, 3], CONVERGE);
    assert_eq!(status(&c, 1).buckets.owned, 4096, "node 1 owns everything");
    let split = tcp_all_by_owner(&c, 1, 41_000..41_100);
    assert_eq!(split.keys().copied().collect::<Vec<_>>(), vec![1]);
    c.assert_no_overlap("active loss");
    println!("two_actives_and_a_witness: {:?}", t0.elapsed());
}

/// N+1: a standby owns nothing until an active fails, then takes exactly
/// that active's buckets (the survivor's do not move: S5), and gives them
/// back when the active returns (failback auto).
#[test]
fn a_standby_takes_exactly_the_failed_actives_buckets_and_gives_them_back() {
    let t0 = Instant::now();
    let spec = ClusterSpec {
        nodes: vec![node(1, "active"), node(2, "active"), node(3, "standby")],
        ..ClusterSpec::actives(3)
    };
    let mut c = Cluster::start(&spec);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let (b1, b2) = (owned(&c, 1), owned(&c, 2));
    assert_eq!(status(&c, 3).buckets.owned, 0, "standby owns nothing");
    assert_eq!(b1.len() + b2.len(), 4096);
    assert!(
        b1.len().abs_diff(b2.len()) <= 1,
        "{} vs {}",
        b1.len(),
        b2.len()
    );
    let split = udp_all_by_owner(&c, 3, 40_000..40_100, 1);
    assert!(!split.contains_key(&3), "standby answered: {split:?}");

    let prober = c.prober(20_000_000);
    std::thread::sleep(Duration::from_millis(100));
    c.kill(1);
    std::thread::sleep(Duration::from_millis(1500));
    let probes = prober.finish();
    let (last_fail, who) = outage(&probes, Duration::from_millis(100) + FAILOVER_BOUND);
    let gap = last_fail.saturating_sub(Duration::from_millis(100));
    println!("standby: last unanswered probe {gap:?} after the kill; then {who:?}");
    assert!(gap < FAILOVER_BOUND, "failover took {gap:?}");
    c.wait_converged(&[2, 3], CONVERGE);
    assert_eq!(owned(&c, 3), b1, "standby took exactly node 1's buckets");
    assert_eq!(owned(&c, 2), b2, "node 2's buckets moved (S5)");
    assert_eq!(who.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    c.assert_no_overlap("active loss");

    let prober = c.prober(21_000_000);
    c.start_agent(1);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    assert!(
        wait_until(Duration::from_secs(5), || status(&c, 3).buckets.owned == 0),
        "standby kept buckets after failback: {:?}",
        status(&c, 3)
    );
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let probes = prober.finish();
    assert_eq!(owned(&c, 1), b1, "node 1 back in its buckets");
    assert_eq!(owned(&c, 2), b2, "node 2's buckets moved on failback (S5)");
    let split = udp_all_by_owner(&c, 2, 42_000..42_100, 22_000_000);
    assert!(!split.contains_key(&3), "standby still answers: {split:?}");
    c.assert_no_overlap("failback");
    println!(
        "standby: {} probes during failback; total {:?}",
        probes.len(),
        t0.elapsed()
    );
}

// ------------------------------------------- graceful changes (S5, S6)

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
    let r = c.control(1, Request::Drain { timeout_s: None });
    assert!(r.ok, "drain: {r:?}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let s = status(&c, 1);
            s.state == "draining" && s.buckets.owned == 0
        }),
        "node 1 not draining: {:?}",
        status(&c, 1)
    );
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
    // Close node 1's connections: the drain finishes.
    conns.retain(|k| k.node != 1);
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
        "drain finished {:?} after node 1's connections closed",
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
    assert!(
        wait_until(Duration::from_secs(10), || c
            .status(3)
            .is_some_and(|s| s.buckets.owned > 0)),
        "node 3 got no buckets: {:?}",
        c.status(3)
    );
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

// ----------------------------------------------------- traffic shapes

/// How long a receive on a client packet socket waits.
const RAW_TIMEOUT: Duration = Duration::from_millis(20);

/// The IPv6 VIP: TCP and UDP answered once, by the owner, on every node.
#[test]
fn an_ipv6_vip_is_served_once_by_the_owner() {
    let t0 = Instant::now();
    let spec = ClusterSpec {
        vip6: true,
        ..ClusterSpec::actives(3)
    };
    let c = Cluster::start(&spec);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let vip = IpAddr::V6(VIP6);
    let mut split: BTreeMap<u8, usize> = BTreeMap::new();
    for p in 40_000..40_150u16 {
        let owner = c.owner_of(1, vip, "tcp", client_addr(vip, p), TCP_PORT);
        let got = c.tcp_probe_at(vip, p, PROBE);
        assert!(owner.is_some(), "[{VIP6}] port {p}: no owner");
        assert_eq!(got, owner, "[{VIP6}] tcp from port {p}");
        *split.entry(got.unwrap_or(0)).or_default() += 1;
    }
    println!("IPv6 TCP: {split:?}");
    assert_eq!(split.len(), 3, "all three nodes serve the IPv6 VIP");
    for (i, p) in (41_000..41_150u16).enumerate() {
        let owner = c.owner_of(1, vip, "udp", client_addr(vip, p), UDP_PORT);
        let got = c.udp_probe_at(vip, p, 50_000_000 + i as u64, 8, PROBE);
        assert_eq!(got, owner, "[{VIP6}] udp from port {p}");
    }
    // The IPv4 VIP keeps working next to it.
    let split4 = tcp_all_by_owner(&c, 2, 42_000..42_050);
    assert_eq!(split4.values().sum::<usize>(), 50);
    c.assert_no_overlap("IPv6");
    println!("IPv6: {:?}", t0.elapsed());
}

/// UDP datagrams of 4000 bytes leave the client in three fragments (MTU
/// 1500): each is received whole by exactly one node, its owner, for the
/// IPv4 and the IPv6 VIP.
#[test]
fn fragmented_udp_datagrams_are_received_whole_by_the_owner_only() {
    let t0 = Instant::now();
    let spec = ClusterSpec {
        vip6: true,
        ..ClusterSpec::actives(3)
    };
    let c = Cluster::start(&spec);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    const LEN: usize = 4000;
    let mut by_node: BTreeMap<u8, usize> = BTreeMap::new();
    for (fam, vip, base) in [
        ("IPv4", IpAddr::V4(VIP), 60_000_000u64),
        ("IPv6", IpAddr::V6(VIP6), 61_000_000u64),
    ] {
        for i in 0..120u64 {
            let port = 43_000 + i as u16;
            let id = base + i;
            let owner = c.owner_of(1, vip, "udp", client_addr(vip, port), UDP_PORT);
            let got = c.udp_probe_at(vip, port, id, LEN, PROBE);
            assert!(owner.is_some());
            assert_eq!(got, owner, "{fam} datagram {id} from port {port}");
            *by_node.entry(got.unwrap_or(0)).or_default() += 1;
            let sizes = c.recorder.udp_sizes.lock().expect("rec")[&id].clone();
            assert_eq!(sizes, vec![LEN], "{fam} datagram {id}: copies received");
            let nodes = c.recorder.udp.lock().expect("rec")[&id].clone();
            assert_eq!(nodes, vec![owner.unwrap_or(0)], "{fam} datagram {id}");
        }
    }
    println!("fragmented datagrams: {by_node:?}");
    assert_eq!(by_node.len(), 3, "fragments served by all three nodes");
    let frag: u64 = [1, 2, 3]
        .iter()
        .map(|&i| status(&c, i).counters["passed_fragment"])
        .sum();
    assert!(
        frag >= 240,
        "later fragments passed by the fragment table: {frag}"
    );
    c.assert_no_overlap("fragments");
    println!("fragments: {:?}", t0.elapsed());
}

/// ICMP echo to the VIP (default mode `multiple`): exactly one reply per
/// request, whatever the ICMP id.
#[test]
fn icmp_echo_to_the_vip_is_answered_once() {
    let t0 = Instant::now();
    let c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let ids: Vec<u16> = (0..60u16).map(|i| 0x1000 + i * 7).collect();
    let seqs = 5u16;
    let echo_before: u64 = [1, 2, 3]
        .iter()
        .map(|&i| status(&c, i).counters["passed"])
        .sum();
    let counts = c.client.enter(|| ping_raw(VIP, &ids, seqs));
    let mut missing = Vec::new();
    let mut dup = Vec::new();
    for &id in &ids {
        for seq in 1..=seqs {
            match counts.get(&(id, seq)).copied().unwrap_or(0) {
                0 => missing.push((id, seq)),
                1 => {}
                n => dup.push((id, seq, n)),
            }
        }
    }
    println!(
        "ICMP: {} requests, {} replies, {} missing, {} duplicated",
        ids.len() * seqs as usize,
        counts.values().sum::<usize>(),
        missing.len(),
        dup.len()
    );
    assert!(
        dup.is_empty(),
        "echo requests answered more than once: {dup:?}"
    );
    assert!(missing.is_empty(), "echo requests unanswered: {missing:?}");
    let passed: u64 = [1, 2, 3]
        .iter()
        .map(|&i| status(&c, i).counters["passed"])
        .sum::<u64>()
        - echo_before;
    assert!(passed >= (ids.len() * seqs as usize) as u64);
    // Also the system ping (one id): no "DUP!" and every reply back.
    let out = c
        .client
        .sh(&format!("ping -n -c 10 -i 0.05 -W 1 {VIP} || true"));
    assert!(!out.contains("DUP!"), "ping saw duplicates:\n{out}");
    assert!(out.contains(" 10 received"), "ping lost replies:\n{out}");
    println!("ICMP: {:?}", t0.elapsed());
}

/// Ethernet + one 802.1Q tag (`vid`) + IPv4/UDP from CLIENT:`sport` to
/// the VIP's UDP port, payload `id`.
fn tagged_udp(src_mac: [u8; 6], vid: u16, sport: u16, id: u64) -> Vec<u8> {
    let vip = VIP.octets();
    let cl = CLIENT.octets();
    let mut f = Vec::new();
    f.extend_from_slice(&cluster_mac(IpAddr::V4(VIP), false));
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    f.extend_from_slice(&[0x08, 0x00]);
    let payload = id.to_le_bytes();
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&(id as u16).to_be_bytes());
    ip.extend_from_slice(&[0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&cl);
    ip.extend_from_slice(&vip);
    let ck = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&UDP_PORT.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (IPv4)
    f.extend_from_slice(&payload);
    f
}

/// 802.1Q-tagged client frames on the data bridge (tags kept in the frames,
/// parsed by the nodes' XDP program on eth0). This kernel has no 8021q
/// module, so frames are built raw: with VLAN id 0 (priority tag) the
/// owner's stack takes the datagram and answers it, so exactly one node
/// answers, the owner; with VLAN 10 (no VLAN interface on the nodes) the
/// XDP verdict is read from the counters: exactly the owner passes it. An
/// ARP request for the VIP on VLAN 10 is answered by XDP with the cluster
/// MAC.
#[test]
fn vlan_tagged_client_traffic_is_judged_by_the_owner_only() {
    let t0 = Instant::now();
    let c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    c.vlan_tags_in_frames();
    let cmac = mac_of(&c.client, "eth0");
    // Learn the VIP's MAC through a normal probe so the reply path works.
    assert!(c
        .udp_probe(45_999, 71_999_999, Duration::from_secs(1))
        .is_some());

    // Priority-tagged (VLAN 0) datagrams: answered once, by the owner.
    let mut split: BTreeMap<u8, usize> = BTreeMap::new();
    for i in 0..120u16 {
        let port = 45_000 + i;
        let id = 71_000_000 + i as u64;
        let owner = c.owner_of(
            1,
            IpAddr::V4(VIP),
            "udp",
            SocketAddr::from((CLIENT, port)),
            UDP_PORT,
        );
        let got = c.client.enter(|| {
            let s = UdpSocket::bind((CLIENT, port)).ok()?;
            s.set_read_timeout(Some(PROBE)).ok()?;
            PacketSocket::bind("eth0", RAW_TIMEOUT).send(&tagged_udp(cmac, 0, port, id));
            let mut b = [0u8; 8];
            let (n, _) = s.recv_from(&mut b).ok()?;
            (n >= 1).then_some(b[0])
        });
        assert!(owner.is_some());
        assert_eq!(got, owner, "VLAN 0 datagram {id} from port {port}");
        let nodes = c.recorder.udp.lock().expect("rec")[&id].clone();
        assert_eq!(nodes, vec![owner.unwrap_or(0)], "VLAN 0 datagram {id}");
        *split.entry(got.unwrap_or(0)).or_default() += 1;
    }
    println!("VLAN 0 datagrams: {split:?}");
    assert_eq!(split.len(), 3, "all three nodes serve tagged traffic");

    // VLAN 10: the XDP verdict, from the counters.
    let passed = |c: &Cluster| -> Vec<u64> {
        [1, 2, 3]
            .iter()
            .map(|&i| status(c, i).counters["passed"])
            .collect()
    };
    for i in 0..30u16 {
        let port = 46_000 + i;
        let owner = c
            .owner_of(
                1,
                IpAddr::V4(VIP),
                "udp",
                SocketAddr::from((CLIENT, port)),
                UDP_PORT,
            )
            .expect("owner");
        let before = passed(&c);
        c.client.enter(|| {
            PacketSocket::bind("eth0", RAW_TIMEOUT).send(&tagged_udp(
                cmac,
                10,
                port,
                72_000_000 + i as u64,
            ));
        });
        let ok = wait_until(Duration::from_secs(1), || {
            let after = passed(&c);
            after.iter().zip(&before).map(|(a, b)| a - b).sum::<u64>() >= 1
        });
        std::thread::sleep(Duration::from_millis(20));
        let delta: Vec<u64> = passed(&c).iter().zip(&before).map(|(a, b)| a - b).collect();
        let mut want = vec![0u64; 3];
        want[owner as usize - 1] = 1;
        assert!(ok, "VLAN 10 frame from port {port} passed by no node");
        assert_eq!(
            delta, want,
            "VLAN 10 frame from port {port}: passed per node (owner {owner})"
        );
    }

    // ARP for the VIP on VLAN 10: answered by XDP with the cluster MAC.
    let vip = VIP.octets();
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&cmac);
    arp.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&cmac);
    arp.extend_from_slice(&CLIENT.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&vip);
    let replies = c.client.enter(|| {
        let sock = PacketSocket::bind("eth0", RAW_TIMEOUT);
        sock.send(&arp);
        let mut found = 0;
        let end = Instant::now() + Duration::from_millis(500);
        let mut buf = [0u8; 256];
        while Instant::now() < end {
            let Some(f) = sock.recv(&mut buf) else {
                continue;
            };
            if f.len() < 42 {
                continue;
            }
            // The client's kernel moves the tag out of the frame: ARP follows
            // the MACs directly.
            let arp_at = if f[12..14] == [0x81, 0x00] { 18 } else { 14 };
            if f[arp_at - 2..arp_at] == [0x08, 0x06]
                && f[arp_at + 6..arp_at + 8] == [0, 2]
                && f[arp_at + 14..arp_at + 18] == vip
            {
                assert_eq!(
                    f[arp_at + 8..arp_at + 14],
                    [0x03, 0xbf, vip[0], vip[1], vip[2], vip[3]],
                    "ARP reply with the cluster MAC"
                );
                found += 1;
            }
        }
        found
    });
    println!("ARP on VLAN 10: {replies} replies (one per serving node)");
    assert_eq!(
        replies, 3,
        "every node with a lease answers ARP on the VLAN"
    );
    c.assert_no_overlap("VLAN");
    println!("VLAN: {:?}", t0.elapsed());
}

// ------------------------------------------------------ heartbeats

fn drops(s: &StatusView, reason: &str) -> u64 {
    s.protocol_drops.get(reason).copied().unwrap_or(0)
}

fn member_states(s: &StatusView) -> Vec<(u8, String)> {
    s.members.iter().map(|m| (m.id, m.state.clone())).collect()
}

fn member_log_lines(c: &Cluster, id: u8) -> usize {
    c.log_tail(id, 100_000)
        .lines()
        .filter(|l| l.contains("member ") || l.contains("epoch "))
        .count()
}

/// Random bytes, forged heartbeats (right magic, no key), a captured real
/// heartbeat replayed (to its destination and to another node) and
/// bit-flipped copies, sent from the client to every node's heartbeat
/// port on the data bridge: nothing changes (epoch, member states, logs,
/// service) and each is counted in `protocol_drops`.
#[test]
fn forged_and_replayed_heartbeats_change_nothing_and_are_counted() {
    let t0 = Instant::now();
    let spec = ClusterSpec {
        links: 2,
        ..ClusterSpec::actives(3)
    };
    let c = Cluster::start(&spec);
    let epoch = c.wait_converged(&[1, 2, 3], CONVERGE);
    // Let the startup settle: no member-state lines may follow.
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<StatusView> = [1, 2, 3].iter().map(|&i| status(&c, i)).collect();
    let log_before: Vec<usize> = [1, 2, 3].iter().map(|&i| member_log_lines(&c, i)).collect();
    let (src, dst, hb) = sniff_udp(c.hb_bridge(), HB_PORT, Duration::from_secs(2))
        .expect("no heartbeat seen on the heartbeat bridge");
    let to = dst.octets()[3];
    let from = src.octets()[3];
    assert!(
        hb.starts_with(b"XN"),
        "captured {} bytes: not a heartbeat",
        hb.len()
    );
    println!("captured a {}-byte heartbeat {from} -> {to}", hb.len());
    let other = [1u8, 2, 3]
        .into_iter()
        .find(|&i| i != to && i != from)
        .unwrap_or(1);

    let prober = c.prober(80_000_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut sent: HashMap<u8, u64> = HashMap::new();
    // Sent from a member's address (node `from`'s, another port): the
    // agents' prefilter drops datagrams from any other source before the
    // core sees them (counted as unknown_source, checked below), so only
    // a forger who spoofs or holds a member's address reaches the checks
    // this test is about.
    c.ns(from).enter(|| {
        let s = UdpSocket::bind((Ipv4Addr::new(198, 18, 1, from), 0)).expect("bind");
        let mut send = |node: u8, bytes: &[u8]| {
            s.send_to(bytes, (Ipv4Addr::new(198, 18, 1, node), HB_PORT))
                .expect("send");
            *sent.entry(node).or_default() += 1;
            std::thread::sleep(Duration::from_millis(2));
        };
        for node in [1u8, 2, 3] {
            // Random garbage (never starting with the magic).
            for _ in 0..20 {
                let n = rng.gen_range(1..300);
                let mut b: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                b[0] = b'Z';
                send(node, &b);
            }
            // Forged: magic and version right (the captured heartbeat's
            // version byte), MAC made up.
            for _ in 0..20 {
                let mut b = vec![b'X', b'N', hb[2]];
                b.extend((0..rng.gen_range(40..200)).map(|_| rng.gen::<u8>()));
                send(node, &b);
            }
        }
        // The real heartbeat, replayed to its destination and elsewhere.
        for _ in 0..10 {
            send(to, &hb);
            send(other, &hb);
        }
        // One bit flipped, at every 8th byte past the magic.
        for pos in (3..hb.len()).step_by(8) {
            let mut b = hb.clone();
            b[pos] ^= 1 << (pos % 8);
            send(to, &b);
        }
    });
    // The same junk from a stranger (the client) never reaches the core.
    c.client.enter(|| {
        let s = UdpSocket::bind((CLIENT, 0)).expect("bind");
        for node in [1u8, 2, 3] {
            for _ in 0..20 {
                s.send_to(b"XN\x01junk", (Ipv4Addr::new(198, 18, 1, node), HB_PORT))
                    .expect("send");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    let probes = prober.finish();
    let after: Vec<StatusView> = [1, 2, 3].iter().map(|&i| status(&c, i)).collect();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let id = i as u8 + 1;
        assert_eq!(a.epoch, epoch, "node {id}: epoch changed");
        assert!(a.converged && a.quorum.has, "node {id}: {a:?}");
        assert_eq!(
            member_states(a),
            member_states(b),
            "node {id}: member states"
        );
        assert_eq!(a.buckets, b.buckets, "node {id}: buckets");
        let total = |s: &StatusView| s.protocol_drops.values().sum::<u64>();
        let delta = total(a) - total(b);
        println!(
            "node {id}: protocol_drops {:?} (+{delta})",
            a.protocol_drops
        );
        assert!(
            delta >= sent[&id],
            "node {id}: sent {} bad datagrams, {delta} counted",
            sent[&id]
        );
        // Random bytes: shorter than magic + version + MAC is "truncated".
        let garbage = drops(a, "bad_magic") + drops(a, "truncated")
            - drops(b, "bad_magic")
            - drops(b, "truncated");
        assert!(garbage >= 20, "node {id}: random bytes counted: {garbage}");
        assert!(
            drops(a, "bad_mac") - drops(b, "bad_mac") >= 20,
            "node {id}: bad_mac"
        );
        assert!(
            drops(a, "unknown_source") - drops(b, "unknown_source") >= 20,
            "node {id}: datagrams from a stranger counted as unknown_source"
        );
    }
    let (ib, ia) = (&before[to as usize - 1], &after[to as usize - 1]);
    assert!(
        drops(ia, "replay") - drops(ib, "replay") >= 10,
        "replays to {to} counted"
    );
    let (ob, oa) = (&before[other as usize - 1], &after[other as usize - 1]);
    assert!(
        drops(oa, "wrong_destination") - drops(ob, "wrong_destination") >= 10,
        "heartbeat for {to} sent to {other} counted"
    );
    let flips = (3..hb.len()).step_by(8).count() as u64;
    assert!(
        drops(ia, "bad_mac") - drops(ib, "bad_mac") >= 20 + flips - 1,
        "bit flips counted as bad MACs"
    );
    let log_after: Vec<usize> = [1, 2, 3].iter().map(|&i| member_log_lines(&c, i)).collect();
    assert_eq!(log_after, log_before, "member/epoch log lines appeared");
    let unanswered = probes.iter().filter(|p| p.node.is_none()).count();
    assert_eq!(
        unanswered,
        0,
        "service disturbed: {unanswered} of {} probes",
        probes.len()
    );
    c.assert_no_overlap("forged heartbeats");
    println!("forged heartbeats: {:?}", t0.elapsed());
}

// ------------------------------------------------------ restarts

/// SIGKILL and an immediate restart, then a restart after the node was
/// declared dead, then SIGTERM (graceful leave) and start: never an
/// overlap, and the node is back in its share after each.
#[test]
fn restarted_agents_never_overlap_and_get_their_buckets_back() {
    let t0 = Instant::now();
    let mut c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let b3 = owned(&c, 3);
    let e0 = status(&c, 1).epoch;

    // SIGKILL + immediate restart.
    let prober = c.prober(90_000_000);
    std::thread::sleep(Duration::from_millis(200));
    c.kill(3);
    c.start_agent(3);
    let t_restart = Instant::now();
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let took = t_restart.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let probes = prober.finish();
    let (last_fail, who) = outage(&probes, Duration::ZERO);
    let unanswered = probes.iter().filter(|p| p.node.is_none()).count();
    let a3 = owned(&c, 3);
    println!(
        "kill+restart: converged {took:?} later, epoch {e0} -> {}, {unanswered} of {} probes unanswered (last at {last_fail:?}), {who:?}; same buckets: {}",
        status(&c, 1).epoch,
        probes.len(),
        a3 == b3
    );
    c.assert_no_overlap("SIGKILL + restart");
    assert!(
        (1365..=1366).contains(&a3.len()),
        "node 3 share: {}",
        a3.len()
    );
    let split = tcp_all_by_owner(&c, 3, 46_000..46_100);
    assert_eq!(split.len(), 3, "{split:?}");

    // SIGKILL, restart after the others declared it dead.
    let prober = c.prober(91_000_000);
    c.kill(3);
    std::thread::sleep(Duration::from_millis(600));
    c.start_agent(3);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    std::thread::sleep(Duration::from_millis(300));
    let probes = prober.finish();
    c.assert_no_overlap("SIGKILL + late restart");
    let a3 = owned(&c, 3);
    assert!(
        (1365..=1366).contains(&a3.len()),
        "node 3 share: {}",
        a3.len()
    );
    println!(
        "kill, 600 ms, restart: {} probes, {} unanswered",
        probes.len(),
        probes.iter().filter(|p| p.node.is_none()).count()
    );

    // SIGTERM: a graceful leave, then start again.
    let prober = c.prober(92_000_000);
    std::thread::sleep(Duration::from_millis(100));
    let st = c.terminate(3).expect("agent 3 exit status");
    assert!(
        st.success(),
        "SIGTERM exit status {st:?}\n{}",
        c.log_tail(3, 10)
    );
    c.wait_converged(&[1, 2], CONVERGE);
    let counts = (status(&c, 1).buckets.owned, status(&c, 2).buckets.owned);
    assert_eq!(counts, (2048, 2048), "after node 3 left");
    assert!(c.status(3).is_none(), "stopped agent still answers");
    c.start_agent(3);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    std::thread::sleep(Duration::from_millis(300));
    let probes = prober.finish();
    let unanswered: Vec<&Probe> = probes.iter().filter(|p| p.node.is_none()).collect();
    println!(
        "SIGTERM + start: {} probes, {} unanswered",
        probes.len(),
        unanswered.len()
    );
    c.assert_no_overlap("SIGTERM + start");
    let a3 = owned(&c, 3);
    assert!(
        (1365..=1366).contains(&a3.len()),
        "node 3 share: {}",
        a3.len()
    );
    let split = tcp_all_by_owner(&c, 1, 47_000..47_100);
    assert_eq!(split.len(), 3, "{split:?}");
    println!("restarts: {:?}", t0.elapsed());
}
