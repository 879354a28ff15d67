//! Hostile input: random, truncated, bit-flipped, replayed and foreign
//! datagrams are dropped and counted by reason; nothing panics.

use xnlb_proto::{Config, MemberConfig, Node, Report, Role, Time};

fn config(id: u8) -> Config {
    let members = (1..=3)
        .map(|i| MemberConfig {
            id: i,
            role: Role::Active,
            weight: 100,
            addrs: 2,
        })
        .collect();
    Config::with_defaults(id, members)
}

/// SplitMix64, so the test is deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn dropped(n: &Node, reason: &str) -> u64 {
    n.status(Time(0))
        .dropped
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |&(_, v)| v)
}

fn datagrams_from_2_to_1() -> Vec<Vec<u8>> {
    let mut sender = Node::new(config(2), Time(1_000), 7).expect("valid config");
    sender.handle_timeout(Time(1_000));
    while sender.poll_action().is_some() {}
    let mut out = Vec::new();
    while let Some(t) = sender.poll_transmit() {
        if t.to == 1 {
            out.push(t.bytes);
        }
    }
    assert!(!out.is_empty());
    out
}

#[test]
fn random_truncated_and_bit_flipped_datagrams_never_panic_and_are_counted() {
    let mut node = Node::new(config(1), Time(1_000), 1).expect("valid config");
    let valid = datagrams_from_2_to_1();
    let mut rng = Rng(99);
    let mut fed = 0u64;
    for i in 0..20_000u64 {
        let base = &valid[(i as usize) % valid.len()];
        let bytes: Vec<u8> = match i % 4 {
            0 => (0..rng.next() % 1600).map(|_| rng.next() as u8).collect(),
            1 => base[..(rng.next() as usize % base.len())].to_vec(),
            2 => {
                let mut b = base.clone();
                let bit = rng.next() as usize % (b.len() * 8);
                b[bit / 8] ^= 1 << (bit % 8);
                b
            }
            _ => {
                let mut b = base.clone();
                b.extend((0..1 + rng.next() % 8).map(|_| rng.next() as u8));
                b
            }
        };
        node.handle_datagram(Time(2_000 + i), (i % 3) as usize, &bytes);
        fed += 1;
        while node.poll_action().is_some() {}
        while node.poll_report().is_some() {}
        while node.poll_transmit().is_some() {}
    }
    let total: u64 = node.status(Time(0)).dropped.iter().map(|&(_, v)| v).sum();
    assert_eq!(total, fed, "every hostile datagram is dropped and counted");
    assert!(dropped(&node, "bad_mac") > 0);
    assert!(dropped(&node, "truncated") > 0);
}

#[test]
fn replayed_datagrams_are_dropped_as_replays() {
    let mut node = Node::new(config(1), Time(1_000), 1).expect("valid config");
    let valid = datagrams_from_2_to_1();
    node.handle_datagram(Time(2_000), 0, &valid[0]);
    node.handle_datagram(Time(2_001), 0, &valid[0]);
    assert_eq!(dropped(&node, "replay"), 1);
}

#[test]
fn datagrams_of_an_older_incarnation_are_refused_after_a_restart() {
    let mut node = Node::new(config(1), Time(1_000), 1).expect("valid config");
    let old = datagrams_from_2_to_1();
    let mut restarted = Node::new(config(2), Time(5_000), 8).expect("valid config");
    restarted.handle_timeout(Time(5_000));
    while restarted.poll_action().is_some() {}
    let new = std::iter::from_fn(|| restarted.poll_transmit())
        .find(|t| t.to == 1)
        .expect("sent");
    node.handle_datagram(Time(6_000), 0, &new.bytes);
    node.handle_datagram(Time(6_001), 0, &old[0]);
    assert_eq!(dropped(&node, "stale_incarnation"), 1);
}

#[test]
fn a_member_with_another_config_is_refused_and_named() {
    let mut node = Node::new(config(1), Time(1_000), 1).expect("valid config");
    let mut other = config(2);
    other.buckets = 1024;
    other.fingerprint = [1; 32];
    let mut sender = Node::new(other, Time(1_000), 3).expect("valid config");
    sender.handle_timeout(Time(1_000));
    while sender.poll_action().is_some() {}
    let t = std::iter::from_fn(|| sender.poll_transmit())
        .find(|t| t.to == 1)
        .expect("sent");
    node.handle_datagram(Time(2_000), 0, &t.bytes);
    let reports: Vec<Report> = std::iter::from_fn(|| node.poll_report()).collect();
    let what = reports.iter().find_map(|r| match r {
        Report::ConfigMismatch { member: 2, what } => Some(what.clone()),
        _ => None,
    });
    assert!(
        what.as_deref().is_some_and(|w| w.contains("buckets 1024")),
        "{reports:?}"
    );
    assert_eq!(dropped(&node, "fingerprint_mismatch"), 1);
}

#[test]
fn a_datagram_for_another_member_is_refused() {
    let mut node3 = Node::new(config(3), Time(1_000), 1).expect("valid config");
    let for_1 = datagrams_from_2_to_1();
    node3.handle_datagram(Time(2_000), 0, &for_1[0]);
    assert_eq!(dropped(&node3, "wrong_destination"), 1);
}
