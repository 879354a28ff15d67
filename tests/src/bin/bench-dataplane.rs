//! `cargo xtask bench dataplane`: nanoseconds per packet through
//! `BPF_PROG_TEST_RUN` for each xnlb path, side by side with a bare
//! `XDP_DROP` program in the same run, as medians of several runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet::packet::ethernet::EtherTypes;
use xnlb::host::cluster_mac;
use xnlb_common::{ipproto, slot_state, PROG_BENCH_BASELINE, PROG_BENCH_MINIMAL, PROG_FILTER};
use xnlb_tests::fixture::Fixture;
use xnlb_tests::fixture::IF_MAC;
use xnlb_tests::frames::*;
use xnlb_tests::tables::{half_table, port_where, slot_of, VIP4, VIP4B, VIP6};

const REPEAT: u32 = 1_000_000;
const RUNS: usize = 7;
/// Single runs per case for the paths that rewrite the frame (a repeated
/// run would see its own output: a forwarded frame is forwarded again,
/// then dropped).
const SINGLES: usize = 20_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut fx = Fixture::new();
    let mut t = half_table();
    // The third VIP is routed: what this node (1) does not own is member
    // 2's, whose MAC it knows.
    t.vips[2].mac_mode = xnlb_common::mac_mode::ROUTED;
    for s in 0..t.owner.len() {
        t.owner[s] = if t.state[s] == slot_state::OWNED {
            1
        } else {
            2
        };
    }
    t.me = 1;
    fx.serve(&t);
    fx.dp
        .set_member_mac(2, Some([2, 0, 0, 0, 0, 2]))
        .expect("member mac");
    fx.dp
        .program(PROG_BENCH_BASELINE)
        .expect("baseline")
        .load()
        .expect("load baseline");
    fx.dp
        .program(PROG_BENCH_MINIMAL)
        .expect("minimal")
        .load()
        .expect("load minimal filter");
    let cmac4 = cluster_mac(VIP4.into(), xnlb::config::MacMode::Multicast);
    let cmac6 = cluster_mac(VIP6.into(), xnlb::config::MacMode::Multicast);
    let c4: IpAddr = Ipv4Addr::new(198, 18, 1, 1).into();
    let c6: IpAddr = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 1).into();
    let port = |vip: IpAddr, c: IpAddr, proto: u8, dport: u16, state: u8| -> (u16, usize) {
        let p = port_where(&t, vip, c, proto, dport, |_, s| t.state[s] == state);
        (p, slot_of(&t, vip, c, proto, p, dport))
    };
    let (own, _) = port(VIP4.into(), c4, ipproto::TCP, 80, slot_state::OWNED);
    let (foreign, _) = port(VIP4.into(), c4, ipproto::TCP, 80, slot_state::NOT_OWNED);
    let (own6, _) = port(VIP6.into(), c6, ipproto::UDP, 5353, slot_state::OWNED);
    let (rel, rel_slot) = port(VIP4.into(), c4, ipproto::TCP, 8200, slot_state::OWNED);
    let (fport, _) = port(VIP4.into(), c4, ipproto::UDP, 5353, slot_state::OWNED);
    let (udp_foreign, _) = port(VIP4.into(), c4, ipproto::UDP, 5353, slot_state::NOT_OWNED);
    let (fwd, _) = port(VIP4B.into(), c4, ipproto::TCP, 80, slot_state::NOT_OWNED);
    let (own_b, _) = port(VIP4B.into(), c4, ipproto::TCP, 80, slot_state::OWNED);
    let ack = |p: u16| L4::Tcp {
        sport: p,
        dport: 80,
        flags: ACK,
    };
    let none = IpOpts::default();

    // A bucket being handed over: its non-SYN TCP packets cost a lookup
    // in the kernel's socket table (a miss here: no connection in this
    // namespace, so the packet is dropped after the lookup).
    t.state[rel_slot] = slot_state::RELEASING;
    fx.dp.install(&t).expect("install");
    // The fragment: first fragment accepted, then time a later one.
    let first = IpOpts {
        id: 77,
        frag: Some((0, true)),
        ..IpOpts::default()
    };
    let later = IpOpts {
        id: 77,
        frag: Some((9, false)),
        ..IpOpts::default()
    };
    assert_eq!(
        fx.run(&frame(
            cmac4,
            c4,
            VIP4.into(),
            &L4::Udp {
                sport: fport,
                dport: 5353,
                len: 64
            },
            &first
        ))
        .action,
        2
    );

    let other: IpAddr = Ipv4Addr::new(198, 18, 0, 7).into();
    let cases: Vec<(&str, &'static str, Vec<u8>, u32)> = vec![
        (
            "bare XDP_DROP program",
            PROG_BENCH_BASELINE,
            frame(cmac4, c4, other, &ack(1), &none),
            1,
        ),
        (
            "minimal hash+lookup filter, owned",
            PROG_BENCH_MINIMAL,
            frame(cmac4, c4, VIP4.into(), &ack(own), &none),
            2,
        ),
        (
            "non-VIP packet (passed)",
            PROG_FILTER,
            frame([2, 0, 0, 0, 0, 9], c4, other, &ack(1), &none),
            2,
        ),
        (
            "owned IPv4 TCP",
            PROG_FILTER,
            frame(cmac4, c4, VIP4.into(), &ack(own), &none),
            2,
        ),
        (
            "not-owned IPv4 TCP",
            PROG_FILTER,
            frame(cmac4, c4, VIP4.into(), &ack(foreign), &none),
            1,
        ),
        (
            // What `bench peers` sends: its rule is the VIP's sixth.
            "not-owned IPv4 UDP, sixth rule",
            PROG_FILTER,
            frame(
                cmac4,
                c4,
                VIP4.into(),
                &L4::Udp {
                    sport: udp_foreign,
                    dport: 5353,
                    len: 32,
                },
                &none,
            ),
            1,
        ),
        (
            "owned IPv6 UDP",
            PROG_FILTER,
            frame(
                cmac6,
                c6,
                VIP6.into(),
                &L4::Udp {
                    sport: own6,
                    dport: 5353,
                    len: 32,
                },
                &none,
            ),
            2,
        ),
        (
            "owned IPv4 TCP, 802.1Q",
            PROG_FILTER,
            ethernet(
                cmac4,
                CLIENT_MAC,
                &[(0x8100, 5)],
                EtherTypes::Ipv4,
                &ip_packet(c4, VIP4.into(), &ack(own), &none),
            ),
            2,
        ),
        (
            "later IPv4 fragment (followed)",
            PROG_FILTER,
            frame(
                cmac4,
                c4,
                VIP4.into(),
                &L4::Raw {
                    proto: ipproto::UDP,
                    payload: vec![0; 32],
                },
                &later,
            ),
            2,
        ),
        (
            "releasing bucket: socket lookup (miss)",
            PROG_FILTER,
            frame(
                cmac4,
                c4,
                VIP4.into(),
                &L4::Tcp {
                    sport: rel,
                    dport: 8200,
                    flags: ACK,
                },
                &none,
            ),
            1,
        ),
    ];
    for (name, prog, f, want) in &cases {
        let action = if *prog != PROG_BENCH_BASELINE {
            fx.run_named(prog, f).action
        } else {
            *want
        };
        assert_eq!(action, *want, "{name}: unexpected verdict");
    }
    // Interleave runs so drift on a shared machine hits every case alike.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..RUNS {
        for (i, (_, prog, f, _)) in cases.iter().enumerate() {
            samples[i].push(fx.time(prog, f, REPEAT));
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    let (base, minimal) = (medians[0], medians[1]);
    println!(
        "xnlb data plane, BPF_PROG_TEST_RUN, {REPEAT} repeats x {RUNS} runs, median ns/packet"
    );
    println!(
        "{:<38} {:>9} {:>9} {:>11}",
        "path", "ns/pkt", "vs bare", "vs minimal"
    );
    for ((name, ..), m) in cases.iter().zip(&medians) {
        println!(
            "{name:<38} {m:>9.1} {:>8.2}x {:>10.2}x",
            m / base,
            m / minimal
        );
    }

    // Routed mode: forwarding rewrites the frame, so each sample is one
    // run on a fresh frame (the kernel's own timing of that run, which
    // includes its clock reads: compare within this table only).
    let forwarded = |p: u16| {
        let f = frame(IF_MAC, c4, VIP4B.into(), &ack(p), &none);
        let mut g = f[..12].to_vec();
        g.extend_from_slice(&xnlb_common::ethertype::FORWARDED.to_be_bytes());
        g.extend_from_slice(&[1, 0]);
        g.extend_from_slice(&f[12..]);
        g
    };
    let singles: Vec<(&str, &'static str, Vec<u8>, u32)> = vec![
        (
            "bare XDP_DROP program",
            PROG_BENCH_BASELINE,
            frame(cmac4, c4, other, &ack(1), &none),
            1,
        ),
        (
            "flood VIP, not owned (dropped)",
            PROG_FILTER,
            frame(cmac4, c4, VIP4.into(), &ack(foreign), &none),
            1,
        ),
        (
            "routed VIP, owned (accepted)",
            PROG_FILTER,
            frame(IF_MAC, c4, VIP4B.into(), &ack(own_b), &none),
            2,
        ),
        (
            "routed VIP, not owned (forwarded)",
            PROG_FILTER,
            frame(IF_MAC, c4, VIP4B.into(), &ack(fwd), &none),
            3,
        ),
        (
            "routed VIP, forwarded here, owned",
            PROG_FILTER,
            forwarded(own_b),
            2,
        ),
    ];
    for (name, prog, f, want) in &singles {
        if *prog != PROG_BENCH_BASELINE {
            assert_eq!(
                fx.run_named(prog, f).action,
                *want,
                "{name}: unexpected verdict"
            );
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); singles.len()];
    for _ in 0..SINGLES {
        for (i, (_, prog, f, _)) in singles.iter().enumerate() {
            samples[i].push(fx.time(prog, f, 1));
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    println!("\nrouted mode, BPF_PROG_TEST_RUN single runs on fresh frames, median of {SINGLES}");
    println!("{:<38} {:>9} {:>9}", "path", "ns/pkt", "vs bare");
    for ((name, ..), m) in singles.iter().zip(&medians) {
        println!("{name:<38} {m:>9.1} {:>8.2}x", m / medians[0]);
    }
    println!(
        "forwarding over the flood drop: +{:.1} ns",
        medians[3] - medians[1]
    );
}
