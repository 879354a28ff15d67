//! The XDP program and userspace compute the same flow hash and slot: the
//! probe program writes what the kernel computed into the frame, and we
//! compare it with `xnlb::flow::classify` for 10,000 random flows, with the
//! VIPs' rules compiled into port maps (as the agent installs them) and
//! scanned (a VIP left uncompiled).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::{Rng, SeedableRng};
use xnlb::flow::{classify, FlowSpec};
use xnlb_common::{slot_state, Table};
use xnlb_tests::fixture::Fixture;
use xnlb_tests::frames::{frame, l4_of, IpOpts, Kind};
use xnlb_tests::tables::{table, VIP4, VIP4B, VIP6};

#[test]
fn kernel_and_userspace_agree_on_10000_random_flows() {
    let compiled = table(slot_state::NOT_OWNED);
    let mut scanned = table(slot_state::NOT_OWNED);
    for v in scanned.vips.iter_mut() {
        v.compiled = 0;
    }
    agree(&compiled, None);
    agree(&scanned, Some(&compiled));
}

/// Checks 10,000 random flows against `t`; with `same_as`, userspace
/// classifies each the same under both tables.
fn agree(t: &Table, same_as: Option<&Table>) {
    let mut fx = Fixture::new();
    fx.serve(t);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x786e_6c62);
    let mut checked = 0;
    let mut per_kind = [0usize; 6];
    for i in 0..10_000u32 {
        let v6 = i % 3 == 1;
        let (vip, client): (IpAddr, IpAddr) = if v6 {
            let mut o = [0u8; 16];
            rng.fill(&mut o[..]);
            o[0] = 0xfd;
            (VIP6.into(), Ipv6Addr::from(o).into())
        } else {
            let vip = if i % 3 == 0 { VIP4 } else { VIP4B };
            let host: u32 = rng.gen_range(0..(1 << 17));
            (vip.into(), Ipv4Addr::from(0xc612_0000 | host).into())
        };
        // Ports biased towards the rules' ranges so every affinity is hit.
        let dport = match rng.gen_range(0..6) {
            0 => 80,
            1 => 53,
            2 => 443,
            3 => rng.gen_range(8000..=8100),
            _ => rng.gen(),
        };
        let sport: u16 = rng.gen();
        let kind = rng.gen_range(0..3);
        per_kind[kind + if v6 { 3 } else { 0 }] += 1;
        let kinds = [Kind::Tcp(0x10), Kind::Udp, Kind::Echo];
        let (l4, proto, cport, vport) = l4_of(kinds[kind], sport, dport, v6);
        let spec = FlowSpec {
            vip,
            client,
            proto,
            client_port: cport,
            vip_port: vport,
        };
        let want = classify(t, &spec).expect("VIP in table");
        if let Some(other) = same_as {
            let o = classify(other, &spec).expect("VIP in table");
            assert_eq!((o.rule, o.slot), (want.rule, want.slot), "{spec:?}");
        }
        if want.rule.mode == xnlb_common::mode::DISABLED {
            continue;
        }
        let pkt = frame(
            [0x03, 0xbf, 0, 0, 0, 1],
            client,
            vip,
            &l4,
            &IpOpts::default(),
        );
        let (_action, hash, slot) = fx.probe(&pkt);
        assert_eq!(
            (hash, slot as usize),
            (want.hash, want.slot),
            "flow {i}: {spec:?} (rule {:?}): kernel (hash, slot) differs from userspace",
            want.rule
        );
        checked += 1;
    }
    assert!(checked > 9_000, "only {checked} flows checked");
    assert!(
        per_kind.iter().all(|&n| n > 1000),
        "coverage per kind {per_kind:?}"
    );
    println!("{checked} flows agree; per (v4 tcp, udp, icmp, v6 tcp, udp, icmp): {per_kind:?}");
}
