//! Malformed frames are dropped (or passed, when not ours) and counted; they
//! never crash the program and are never misrouted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet::packet::ethernet::{EtherTypes, EthernetPacket};
use pnet::packet::ipv4::Ipv4Packet;
use pnet::packet::ipv6::Ipv6Packet;
use pnet::packet::Packet;
use rand::{Rng, SeedableRng};
use xnlb_common::{counter, slot_state};
use xnlb_tests::fixture::{Fixture, DROP, PASS};
use xnlb_tests::frames::*;
use xnlb_tests::tables::*;

const CMAC4: [u8; 6] = [0x03, 0xbf, 198, 18, 0, 100];
const CMAC6: [u8; 6] = [0x03, 0xbf, 0, 0, 0x01, 0x00];

fn c4() -> IpAddr {
    Ipv4Addr::new(198, 18, 1, 1).into()
}

fn c6() -> IpAddr {
    Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 1).into()
}

/// Valid VIP frames, to a cluster MAC, that this node (owning everything)
/// would accept whole.
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let v4: IpAddr = VIP4.into();
    let v6: IpAddr = VIP6.into();
    let tcp = L4::Tcp {
        sport: 1000,
        dport: 80,
        flags: SYN,
    };
    let opts = IpOpts {
        v4_option_words: 2,
        ..IpOpts::default()
    };
    let ext = IpOpts {
        v6_ext: vec![0, 60],
        ..IpOpts::default()
    };
    vec![
        ("ipv4 tcp", frame(CMAC4, c4(), v4, &tcp, &IpOpts::default())),
        ("ipv4 options tcp", frame(CMAC4, c4(), v4, &tcp, &opts)),
        (
            "ipv4 udp",
            frame(
                CMAC4,
                c4(),
                v4,
                &L4::Udp {
                    sport: 1,
                    dport: 53,
                    len: 0,
                },
                &IpOpts::default(),
            ),
        ),
        (
            "ipv4 echo",
            frame(CMAC4, c4(), v4, &L4::Echo { id: 7 }, &IpOpts::default()),
        ),
        (
            "ipv4 qinq tcp",
            ethernet(
                CMAC4,
                CLIENT_MAC,
                &[(0x88a8, 1), (0x8100, 2)],
                EtherTypes::Ipv4,
                &ip_packet(c4(), v4, &tcp, &IpOpts::default()),
            ),
        ),
        ("ipv6 tcp", frame(CMAC6, c6(), v6, &tcp, &IpOpts::default())),
        ("ipv6 ext tcp", frame(CMAC6, c6(), v6, &tcp, &ext)),
        (
            "ipv6 echo",
            frame(CMAC6, c6(), v6, &L4::Echo { id: 7 }, &IpOpts::default()),
        ),
    ]
}

#[test]
fn a_valid_frame_truncated_at_any_offset_is_dropped_as_malformed() {
    let mut fx = Fixture::new();
    fx.serve(&table(slot_state::OWNED));
    for (name, f) in corpus() {
        assert_eq!(fx.run(&f).action, PASS, "{name}: the whole frame passes");
        for len in 0..f.len() {
            let before = fx.counters();
            let cut = &f[..len];
            if len < 14 {
                // The kernel refuses test frames shorter than an Ethernet
                // header; real drivers never deliver them.
                continue;
            }
            let out = fx.run(cut);
            assert_eq!(
                out.action, DROP,
                "{name} truncated to {len} bytes must drop"
            );
            let after = fx.counters();
            assert_eq!(
                after.c[counter::DROPPED_MALFORMED] - before.c[counter::DROPPED_MALFORMED],
                1,
                "{name} truncated to {len}: counted as malformed"
            );
        }
    }
}

fn expect_malformed(fx: &mut Fixture, name: &str, f: &[u8]) {
    let before = fx.counters();
    assert_eq!(fx.run(f).action, DROP, "{name}");
    let after = fx.counters();
    assert_eq!(
        after.c[counter::DROPPED_MALFORMED] - before.c[counter::DROPPED_MALFORMED],
        1,
        "{name}: counted"
    );
}

#[test]
fn bad_headers_are_dropped_and_counted() {
    let mut fx = Fixture::new();
    fx.serve(&table(slot_state::OWNED));
    let v4: IpAddr = VIP4.into();
    let v6: IpAddr = VIP6.into();
    let tcp = L4::Tcp {
        sport: 1000,
        dport: 80,
        flags: SYN,
    };
    let good4 = frame(CMAC4, c4(), v4, &tcp, &IpOpts::default());
    for ihl in 0..5u8 {
        let mut f = good4.clone();
        f[14] = 0x40 | ihl;
        expect_malformed(&mut fx, &format!("IHL {ihl}"), &f);
    }
    let mut f = good4.clone();
    f[14] = 0x4f; // IHL 15 = 60 bytes, longer than the datagram
    expect_malformed(&mut fx, "IHL past total length", &f);
    let mut f = good4.clone();
    f[16..18].copy_from_slice(&200u16.to_be_bytes());
    expect_malformed(&mut fx, "total length past the frame", &f);
    let mut f = good4.clone();
    f[20..22].copy_from_slice(&0x1fffu16.to_be_bytes()); // offset 65528 + payload > 65535
    expect_malformed(&mut fx, "fragment offset past 64 KiB", &f);

    let deep = [(0x88a8, 1), (0x8100, 2), (0x8100, 3)];
    let ip = ip_packet(c4(), v4, &tcp, &IpOpts::default());
    expect_malformed(
        &mut fx,
        "3 VLAN tags",
        &ethernet(CMAC4, CLIENT_MAC, &deep, EtherTypes::Ipv4, &ip),
    );

    let long = IpOpts {
        v6_ext: vec![60; 7],
        ..IpOpts::default()
    };
    expect_malformed(
        &mut fx,
        "7 IPv6 extension headers",
        &frame(CMAC6, c6(), v6, &tcp, &long),
    );
    // An extension header claiming 2 KiB.
    let mut f = frame(
        CMAC6,
        c6(),
        v6,
        &tcp,
        &IpOpts {
            v6_ext: vec![60],
            ..IpOpts::default()
        },
    );
    f[14 + 41] = 255;
    expect_malformed(&mut fx, "huge extension header", &f);
    let mut f = frame(
        CMAC6,
        c6(),
        v6,
        &tcp,
        &IpOpts {
            frag: Some((0x1fff, false)),
            ..IpOpts::default()
        },
    );
    f[14 + 4..14 + 6].copy_from_slice(&28u16.to_be_bytes());
    expect_malformed(&mut fx, "IPv6 fragment offset past 64 KiB", &f);

    // ICMP error quoting a truncated header.
    let router: IpAddr = Ipv4Addr::new(198, 18, 9, 1).into();
    let mut m = vec![3u8, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&[0x45, 0, 0, 40]);
    let err = frame(
        CMAC4,
        router,
        v4,
        &L4::Raw {
            proto: 1,
            payload: m,
        },
        &IpOpts::default(),
    );
    expect_malformed(&mut fx, "ICMP error with a truncated quote", &err);
    // Not IP at all, sent to the cluster MAC.
    let junk = ethernet(
        CMAC4,
        CLIENT_MAC,
        &[],
        pnet::packet::ethernet::EtherType(0x88b5),
        &[0u8; 46],
    );
    expect_malformed(&mut fx, "unknown ethertype to the cluster MAC", &junk);
}

/// Whether a (possibly mutated) frame is addressed to one of the VIPs,
/// judged by pnet, independent of the XDP parser.
fn addressed_to_vip(f: &[u8]) -> bool {
    let Some(eth) = EthernetPacket::new(f) else {
        return false;
    };
    let mut et = eth.get_ethertype();
    let mut payload = eth.payload();
    for _ in 0..3 {
        if et.0 == 0x8100 || et.0 == 0x88a8 {
            if payload.len() < 4 {
                return false;
            }
            et = pnet::packet::ethernet::EtherType(u16::from_be_bytes([payload[2], payload[3]]));
            payload = &payload[4..];
        }
    }
    match et {
        EtherTypes::Ipv4 => Ipv4Packet::new(payload)
            .map(|p| [VIP4, VIP4B].contains(&p.get_destination()))
            .unwrap_or(false),
        EtherTypes::Ipv6 => Ipv6Packet::new(payload)
            .map(|p| p.get_destination() == VIP6)
            .unwrap_or(false),
        _ => false,
    }
}

/// A node that owns nothing must never accept a VIP packet, whatever its
/// bytes: 20,000 random mutations of valid frames.
#[test]
fn mutated_frames_are_never_accepted_by_a_node_that_owns_nothing() {
    let mut fx = Fixture::new();
    fx.serve(&table(slot_state::NOT_OWNED));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let corpus = corpus();
    let mut passed_non_vip = 0;
    for i in 0..20_000 {
        let (name, base) = &corpus[i % corpus.len()];
        let mut f = base.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..f.len());
            f[at] = rng.gen();
        }
        if rng.gen_bool(0.2) {
            f.truncate(rng.gen_range(14..=f.len()));
        }
        let out = fx.run(&f);
        if out.action == PASS {
            assert!(
                !addressed_to_vip(&f),
                "mutation {i} of {name} passed although nothing is owned: {f:02x?}"
            );
            passed_non_vip += 1;
        }
    }
    println!("{passed_non_vip} mutated frames passed as not addressed to a VIP");
}
