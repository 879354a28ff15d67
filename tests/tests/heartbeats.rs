//! Forged, replayed and corrupted heartbeats with real agents in
//! namespaces: nothing changes, and each is counted by reason. The test
//! also asserts that no UDP probe was accepted by two nodes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use xnlb::status::StatusView;
use xnlb_tests::cluster::checks::{status, CONVERGE};
use xnlb_tests::cluster::{Cluster, ClusterSpec, CLIENT, HB_PORT};
use xnlb_tests::raw::sniff_udp;

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
