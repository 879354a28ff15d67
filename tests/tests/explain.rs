//! `xnlb explain` tells the truth: for random flows in every slot state,
//! with the lease valid, within held delivery and expired, its verdict and the counters it names
//! are what the XDP program does through `BPF_PROG_TEST_RUN` with the same
//! table; and against real agents an owned flow is answered by the node
//! explain says accepts it, a not-owned one by the owner it names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;

use rand::{Rng, SeedableRng};
use xnlb::explain::{explain, Explanation, Lease, SlotHold};
use xnlb::flow::FlowSpec;
use xnlb_common::{counter, slot_state, Counters, Table, MAX_SLOTS};
use xnlb_tests::cluster::checks::CONVERGE;
use xnlb_tests::cluster::{agent_binary, Cluster, ClusterSpec, CLIENT, TCP_PORT, VIP};
use xnlb_tests::fixture::{Fixture, DROP, PASS};
use xnlb_tests::frames::{frame, l4_of, IpOpts, Kind, ACK, SYN};
use xnlb_tests::tables::{table, VIP4, VIP4B, VIP6};

/// A table whose slots are in random states.
fn mixed_table(rng: &mut impl Rng) -> Box<Table> {
    let mut t = table(slot_state::NOT_OWNED);
    for s in t.state.iter_mut().take(MAX_SLOTS) {
        *s = rng.gen_range(0..4);
    }
    t
}

/// One random flow, the frame of one of its packets (SYN, ACK, UDP or
/// ICMP echo) and the name explain gives that packet kind.
fn random_packet(rng: &mut impl Rng, i: u32) -> (FlowSpec, Vec<u8>, &'static str) {
    let (vip, client): (IpAddr, IpAddr) = match i % 3 {
        0 => (
            VIP4.into(),
            Ipv4Addr::from(0xc612_0000 | rng.gen_range(0..1u32 << 17)).into(),
        ),
        1 => (
            VIP4B.into(),
            Ipv4Addr::from(0xc612_0000 | rng.gen_range(0..1u32 << 17)).into(),
        ),
        _ => (
            VIP6.into(),
            Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, rng.gen(), rng.gen()).into(),
        ),
    };
    let dport = match rng.gen_range(0..7) {
        0 => 80,
        1 => 53,
        2 => 443,
        3 => rng.gen_range(8000..=8100),
        4 => 9000,
        _ => rng.gen_range(1..=u16::MAX),
    };
    let sport: u16 = rng.gen_range(1..=u16::MAX);
    let (kind, packet) = [
        (Kind::Tcp(SYN), "tcp-syn"),
        (Kind::Tcp(ACK), "tcp"),
        (Kind::Udp, "udp"),
        (Kind::Echo, "icmp"),
    ][rng.gen_range(0..4)];
    let (l4, proto, cport, vport) = l4_of(kind, sport, dport, vip.is_ipv6());
    let flow = FlowSpec {
        vip,
        client,
        proto,
        client_port: cport,
        vip_port: vport,
    };
    let t = table(slot_state::NOT_OWNED);
    let mac = xnlb::flow::classify(&t, &flow)
        .map(|c| t.vips[c.vip_index].cluster_mac())
        .unwrap_or_default();
    (
        flow,
        frame(mac, client, vip, &l4, &IpOpts::default()),
        packet,
    )
}

fn moved(before: &Counters, after: &Counters) -> Vec<String> {
    let mut v: Vec<String> = (0..counter::COUNT)
        .filter(|&i| after.c[i] != before.c[i])
        .map(|i| counter::NAMES[i].to_string())
        .collect();
    v.sort();
    v
}

/// What explain predicts for `packet`: the action and the counters (no
/// socket is held in this namespace, so `accept-if-held` is a drop).
fn predicted(e: &Explanation, packet: &str) -> (u32, Vec<String>) {
    let v = e
        .verdicts
        .iter()
        .find(|v| v.packet == packet)
        .unwrap_or_else(|| panic!("explain gave no verdict for {packet}: {e:?}"));
    let (action, mut counters) = match v.verdict.as_str() {
        "accept" => (PASS, v.counters.clone()),
        "drop" => (DROP, v.counters.clone()),
        // No socket in the fixture's namespace for these flows.
        _ => (DROP, v.counters_if_not_held.clone()),
    };
    counters.sort();
    (action, counters)
}

#[test]
fn explain_agrees_with_the_xdp_program_in_every_slot_state_and_lease() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6578_706c);
    let mut fx = Fixture::new();
    let t = mixed_table(&mut rng);
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for (lease, rounds) in [
        (Lease::Valid, 3000u32),
        (Lease::Holding, 600),
        (Lease::Expired, 600),
    ] {
        fx.serve(&t);
        let now = xnlb::dataplane::boottime_ns();
        match lease {
            Lease::Valid => fx.dp.set_hold(0).expect("no hold"),
            Lease::Holding => {
                fx.dp.set_hold(now + 3_600_000_000_000).expect("hold");
                fx.dp.set_lease(1).expect("expire the lease");
            }
            Lease::Expired => {
                fx.dp.set_hold(1).expect("no hold");
                fx.dp.set_lease(1).expect("expire the lease");
            }
        }
        for i in 0..rounds {
            let (flow, pkt, packet) = random_packet(&mut rng, i);
            let e = explain(&t, &flow, lease).expect("a VIP flow");
            let (want_action, want_counters) = predicted(&e, packet);
            let before = fx.counters();
            let out = fx.run(&pkt);
            let got = moved(&before, &fx.counters());
            assert_eq!(
                (out.action, &got),
                (want_action, &want_counters),
                "{packet} {flow:?}, lease {lease:?}: the program did (action, counters) = ({}, {got:?}), explain said {e:#?}",
                out.action
            );
            let hold = serde_json::to_string(&e.here).unwrap_or_default();
            let verdict = &e
                .verdicts
                .iter()
                .find(|v| v.packet == packet)
                .map(|v| v.verdict.clone());
            *seen
                .entry(format!("{hold} {packet} {verdict:?}"))
                .or_default() += 1;
        }
    }
    println!("cases checked (slot state, packet, verdict): {seen:#?}");
    for hold in ["owned", "not-owned", "releasing", "acquiring", "fenced"] {
        assert!(
            seen.keys().any(|k| k.starts_with(&format!("\"{hold}\""))),
            "no flow met slot state {hold}: {seen:?}"
        );
    }
    assert!(seen.keys().any(|k| k.contains("accept-if-held")));
    assert!(seen
        .keys()
        .any(|k| k.contains("dropped") || k.contains("drop")));
}

fn explain_cli(c: &Cluster, node: u8, client_port: u16) -> Explanation {
    let out = Command::new(agent_binary())
        .args(["explain", "tcp"])
        .arg(SocketAddr::from((CLIENT, client_port)).to_string())
        .arg(SocketAddr::from((VIP, TCP_PORT)).to_string())
        .args(["--json", "--socket"])
        .arg(c.socket_path(node))
        .output()
        .expect("run xnlb explain");
    assert!(
        out.status.success(),
        "xnlb explain: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("explain --json is an Explanation")
}

#[test]
fn explain_against_real_agents_names_who_answers() {
    let c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let mut owned = None;
    let mut not_owned = None;
    for port in 20_000..20_200u16 {
        let e = explain_cli(&c, 1, port);
        match e.here {
            SlotHold::Owned if owned.is_none() => owned = Some((port, e)),
            SlotHold::NotOwned if not_owned.is_none() => not_owned = Some((port, e)),
            _ => {}
        }
        if owned.is_some() && not_owned.is_some() {
            break;
        }
    }
    let (port, e) = owned.expect("node 1 owns some flow");
    assert_eq!(e.owner, Some(1), "{e:?}");
    assert_eq!(e.verdicts[0].verdict, "accept", "{e:?}");
    let answered = c.tcp_probe(port, std::time::Duration::from_secs(3));
    assert_eq!(answered, Some(1), "owned flow from port {port}: {e:#?}");
    let (port, e) = not_owned.expect("node 1 does not own some flow");
    assert_eq!(e.verdicts[0].verdict, "drop", "{e:?}");
    let owner = e.owner.expect("a converged cluster has an owner");
    assert_ne!(owner, 1);
    let answered = c.tcp_probe(port, std::time::Duration::from_secs(3));
    assert_eq!(
        answered,
        Some(owner),
        "not-owned flow from port {port}: {e:#?}"
    );
    // The text form names the same facts.
    let out = Command::new(agent_binary())
        .args([
            "explain",
            "tcp",
            &format!("{CLIENT}:{port}"),
            "80",
            "--socket",
        ])
        .arg(c.socket_path(1))
        .output()
        .expect("run xnlb explain");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        text.contains(&format!("owner    node {owner}")) && text.contains("not-owned"),
        "{text}"
    );
}
