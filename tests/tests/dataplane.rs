//! Every parse path of the XDP program through `BPF_PROG_TEST_RUN`, with
//! frames built by pnet: verdicts, rewritten bytes and counters.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pnet::packet::ethernet::EtherTypes;
use xnlb_common::{counter, ipproto, single_slot_index, slot_state, Table};
use xnlb_tests::cluster::{abort, connect_between};
use xnlb_tests::fixture::{Fixture, DROP, IF_MAC, PASS, TX};
use xnlb_tests::frames::*;
use xnlb_tests::netns::Netns;
use xnlb_tests::tables::*;

const CMAC4: [u8; 6] = [0x03, 0xbf, 198, 18, 0, 100];
const CMAC4B: [u8; 6] = [0x02, 0xbf, 198, 18, 0, 101];
const CMAC6: [u8; 6] = [0x03, 0xbf, 0, 0, 0x01, 0x00];

/// A client port whose flow to `vip:dport` lands in a slot with `state`.
fn port_in(t: &Table, vip: IpAddr, client: IpAddr, proto: u8, dport: u16, state: u8) -> u16 {
    port_where(t, vip, client, proto, dport, |_, slot| {
        t.state[slot] == state
    })
}

#[test]
fn non_vip_traffic_passes_untouched() {
    let mut fx = Fixture::new();
    fx.serve(&half_table());
    let before = fx.counters();
    let other: IpAddr = Ipv4Addr::new(198, 18, 0, 7).into();
    let pkt = frame(
        IF_MAC,
        client4(1),
        other,
        &tcp(1000, 80, SYN),
        &IpOpts::default(),
    );
    let out = fx.run(&pkt);
    assert_eq!(out.action, PASS);
    assert_eq!(out.frame, pkt, "non-VIP frame must not be modified");
    let after = fx.counters();
    assert_eq!(delta(&before, &after, counter::NON_VIP), 1);
    assert_eq!(delta(&before, &after, counter::VIP_PACKETS), 0);
}

#[test]
fn owned_buckets_pass_with_interface_mac_and_others_drop() {
    let mut fx = Fixture::new();
    let t = half_table();
    fx.serve(&t);
    for (vip, client, cmac) in [
        (IpAddr::from(VIP4), client4(2), CMAC4),
        (IpAddr::from(VIP6), client6(2), CMAC6),
        (IpAddr::from(VIP4B), client4(3), CMAC4B),
    ] {
        let owned = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::OWNED);
        let foreign = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::NOT_OWNED);
        let before = fx.counters();
        let out = fx.run(&frame(
            cmac,
            client,
            vip,
            &tcp(owned, 80, ACK),
            &IpOpts::default(),
        ));
        assert_eq!(out.action, PASS, "{vip}: owned bucket must pass");
        assert_eq!(
            out.frame[..6],
            IF_MAC,
            "{vip}: cluster MAC rewritten to the interface MAC"
        );
        let out = fx.run(&frame(
            cmac,
            client,
            vip,
            &tcp(foreign, 80, ACK),
            &IpOpts::default(),
        ));
        assert_eq!(out.action, DROP, "{vip}: foreign bucket must drop");
        let after = fx.counters();
        assert_eq!(delta(&before, &after, counter::VIP_PACKETS), 2);
        assert_eq!(delta(&before, &after, counter::PASSED), 1);
        assert_eq!(delta(&before, &after, counter::DROPPED_NOT_OWNER), 1);
        // Sent to the node's own MAC: passes, MAC untouched.
        let pkt = frame(
            IF_MAC,
            client,
            vip,
            &tcp(owned, 80, ACK),
            &IpOpts::default(),
        );
        let out = fx.run(&pkt);
        assert_eq!((out.action, &out.frame), (PASS, &pkt));
    }
}

#[test]
fn an_expired_lease_fences_every_vip_packet_but_not_other_traffic() {
    let mut fx = Fixture::new();
    let t = table(slot_state::OWNED);
    fx.serve(&t);
    fx.dp.set_lease(0).expect("lease");
    let before = fx.counters();
    let vip4 = frame(
        CMAC4,
        client4(1),
        VIP4.into(),
        &tcp(1000, 80, SYN),
        &IpOpts::default(),
    );
    let vip6 = frame(
        CMAC6,
        client6(1),
        VIP6.into(),
        &tcp(1000, 80, SYN),
        &IpOpts::default(),
    );
    assert_eq!(fx.run(&vip4).action, DROP);
    assert_eq!(fx.run(&vip6).action, DROP);
    assert_eq!(
        fx.run(&arp_request(Ipv4Addr::new(198, 18, 0, 9), VIP4))
            .action,
        DROP
    );
    let other = frame(
        IF_MAC,
        client4(1),
        Ipv4Addr::new(198, 18, 0, 7).into(),
        &tcp(1, 2, SYN),
        &IpOpts::default(),
    );
    assert_eq!(fx.run(&other).action, PASS);
    let after = fx.counters();
    assert_eq!(delta(&before, &after, counter::DROPPED_FENCED), 3);
    // Extending the lease restores service.
    fx.dp
        .set_lease(xnlb::dataplane::boottime_ns() + 10_000_000_000)
        .expect("lease");
    assert_eq!(fx.run(&vip4).action, PASS);
}

/// The program trusts a lease without a precise clock read only while
/// jiffies stand still since its last reading, for at most `MAX_USES`
/// packets, and with more than `TRUST_NS` left (`common/src/lease_clock.rs`):
/// a lease still ends on time, to the packet, and a revoked one at once.
/// Packets come in pairs that share a tick (so the kept reading is used:
/// checked through the per-CPU map), 10 ms apart, so `MAX_USES` of them
/// span longer than the lease has left at the first reading: a program
/// that skipped the jiffies check would still trust that reading after the
/// lease's end, and fails here (checked with such a build).
#[test]
fn a_lease_ends_on_time_though_the_program_keeps_its_clock_reading() {
    use std::time::{Duration, Instant};
    use xnlb::dataplane::boottime_ns;
    use xnlb_common::lease_clock::TRUST_NS;
    let mut fx = Fixture::new();
    fx.serve(&table(slot_state::OWNED));
    let syn = frame(
        CMAC4,
        client4(1),
        VIP4.into(),
        &tcp(1000, 80, SYN),
        &IpOpts::default(),
    );
    // Revoked while a reading with a long lease left is kept.
    fx.dp
        .set_lease(boottime_ns() + 10_000_000_000)
        .expect("lease");
    assert_eq!(fx.run(&syn).action, PASS);
    assert_eq!(fx.run(&syn).action, PASS);
    fx.dp.set_lease(0).expect("lease");
    assert_eq!(
        fx.run(&syn).action,
        DROP,
        "a revoked lease must fence at once"
    );
    // Runs out while the first reading had more than TRUST_NS left.
    let lease = boottime_ns() + TRUST_NS + 30_000_000;
    fx.dp.set_lease(lease).expect("lease");
    let deadline =
        Instant::now() + Duration::from_nanos(lease - boottime_ns()) + Duration::from_secs(1);
    let (mut passed, mut dropped_after, mut stalls, mut most_uses) = (0, 0, 0, 0);
    let mut prev_after = boottime_ns();
    while dropped_after < 20 && Instant::now() < deadline {
        for _ in 0..2 {
            let before = boottime_ns();
            let action = fx.run(&syn).action;
            let after = boottime_ns();
            // A VM stall of this size may stop jiffies too; what the
            // program then admits is bounded (SAFETY.md), not checked here.
            if before - prev_after > 50_000_000 {
                stalls += 1;
            } else if after < lease {
                assert_eq!(
                    action,
                    PASS,
                    "dropped {} ms before the lease's end",
                    (lease - after) / 1_000_000
                );
                passed += 1;
            } else if before >= lease {
                assert_eq!(
                    action,
                    DROP,
                    "accepted {} us after the lease's end",
                    (before - lease) / 1_000
                );
                dropped_after += 1;
            }
            prev_after = after;
        }
        if boottime_ns() < lease {
            let uses = fx.dp.clock_readings().expect("clock readings");
            most_uses = most_uses.max(uses.iter().map(|r| r.uses).max().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        passed >= 3 && dropped_after >= 20,
        "{passed} before, {dropped_after} after the lease's end ({stalls} after a stall)"
    );
    assert!(
        most_uses >= 1,
        "no packet was accepted on a kept reading: the test did not exercise it"
    );
}

#[test]
fn vlan_tags_and_ipv4_options_do_not_change_the_verdict() {
    let mut fx = Fixture::new();
    let t = half_table();
    fx.serve(&t);
    let vip: IpAddr = VIP4.into();
    let c = client4(4);
    for (state, want) in [(slot_state::OWNED, PASS), (slot_state::NOT_OWNED, DROP)] {
        let p = port_in(&t, vip, c, ipproto::TCP, 80, state);
        for words in [0u8, 1, 3, 10] {
            let o = IpOpts {
                v4_option_words: words,
                ..IpOpts::default()
            };
            let ip = ip_packet(c, vip, &tcp(p, 80, ACK), &o);
            for vlans in [
                &[][..],
                &[(0x8100, 7)][..],
                &[(0x88a8, 100), (0x8100, 7)][..],
            ] {
                let f = ethernet(CMAC4, CLIENT_MAC, vlans, EtherTypes::Ipv4, &ip);
                let out = fx.run(&f);
                assert_eq!(out.action, want, "options {words} words, vlans {vlans:?}");
                if want == PASS {
                    assert_eq!(out.frame[..6], IF_MAC);
                    assert_eq!(out.frame[6..], f[6..], "only the destination MAC changes");
                }
            }
        }
    }
    // Three tags: deeper than parsed. To a cluster MAC that is malformed;
    // to another MAC it is not ours to judge.
    let ip = ip_packet(c, vip, &tcp(1, 80, ACK), &IpOpts::default());
    let deep = [(0x88a8, 1), (0x8100, 2), (0x8100, 3)];
    let before = fx.counters();
    assert_eq!(
        fx.run(&ethernet(CMAC4, CLIENT_MAC, &deep, EtherTypes::Ipv4, &ip))
            .action,
        DROP
    );
    assert_eq!(
        fx.run(&ethernet(IF_MAC, CLIENT_MAC, &deep, EtherTypes::Ipv4, &ip))
            .action,
        PASS
    );
    assert_eq!(
        delta(&before, &fx.counters(), counter::DROPPED_MALFORMED),
        1
    );
}

#[test]
fn ipv6_extension_headers_are_walked_up_to_the_bound() {
    let mut fx = Fixture::new();
    let t = half_table();
    fx.serve(&t);
    let vip: IpAddr = VIP6.into();
    let c = client6(5);
    let p = port_in(&t, vip, c, ipproto::TCP, 80, slot_state::OWNED);
    for n in 0..=6 {
        let o = IpOpts {
            v6_ext: [0u8, 60, 43, 60, 60, 60][..n.min(6)].to_vec(),
            ..IpOpts::default()
        };
        let f = frame(CMAC6, c, vip, &tcp(p, 80, ACK), &o);
        assert_eq!(fx.run(&f).action, PASS, "{n} extension headers");
    }
    let before = fx.counters();
    let o = IpOpts {
        v6_ext: vec![0, 60, 43, 60, 60, 60, 60],
        ..IpOpts::default()
    };
    assert_eq!(
        fx.run(&frame(CMAC6, c, vip, &tcp(p, 80, ACK), &o)).action,
        DROP,
        "7 extension headers"
    );
    assert_eq!(
        delta(&before, &fx.counters(), counter::DROPPED_MALFORMED),
        1
    );
}

#[test]
fn later_fragments_follow_the_node_that_took_the_first() {
    let mut fx = Fixture::new();
    let t = half_table();
    fx.serve(&t);
    for (vip, c, cmac) in [
        (IpAddr::from(VIP4), client4(6), CMAC4),
        (VIP6.into(), client6(6), CMAC6),
    ] {
        for (state, want) in [(slot_state::OWNED, PASS), (slot_state::NOT_OWNED, DROP)] {
            let p = port_in(&t, vip, c, ipproto::UDP, 80, state);
            let id = 0x1234 + p as u32;
            let first = IpOpts {
                id,
                frag: Some((0, true)),
                ..IpOpts::default()
            };
            let udp = L4::Udp {
                sport: p,
                dport: 80,
                len: 64,
            };
            assert_eq!(
                fx.run(&frame(cmac, c, vip, &udp, &first)).action,
                want,
                "{vip} first fragment"
            );
            let later = IpOpts {
                id,
                frag: Some((9, false)),
                ..IpOpts::default()
            };
            let raw = L4::Raw {
                proto: ipproto::UDP,
                payload: vec![0xab; 40],
            };
            let before = fx.counters();
            assert_eq!(
                fx.run(&frame(cmac, c, vip, &raw, &later)).action,
                want,
                "{vip} later fragment"
            );
            if want == PASS {
                assert_eq!(
                    delta(&before, &fx.counters(), counter::PASSED_FRAGMENT),
                    1,
                    "{vip}: {:?}",
                    fx.counters()
                );
            }
            // A later fragment of a datagram nobody here took: dropped.
            let stray = IpOpts {
                id: id ^ 0x5555,
                frag: Some((9, false)),
                ..IpOpts::default()
            };
            assert_eq!(fx.run(&frame(cmac, c, vip, &raw, &stray)).action, DROP);
        }
    }
}

#[test]
fn icmp_errors_go_to_the_owner_of_the_quoted_flow() {
    let mut fx = Fixture::new();
    let t = half_table();
    fx.serve(&t);
    let router4: IpAddr = Ipv4Addr::new(198, 18, 9, 1).into();
    let router6: IpAddr = Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 1).into();
    for (vip, c, router, ty) in [
        (IpAddr::from(VIP4), client4(7), router4, 3u8),
        (VIP6.into(), client6(7), router6, 2u8),
    ] {
        for tcp_flow in [true, false] {
            let proto = if tcp_flow { ipproto::TCP } else { ipproto::UDP };
            for (state, want) in [(slot_state::OWNED, PASS), (slot_state::NOT_OWNED, DROP)] {
                let p = port_in(&t, vip, c, proto, 80, state);
                let before = fx.counters();
                let f = icmp_error(router, vip, c, 80, p, tcp_flow, ty);
                assert_eq!(
                    fx.run(&f).action,
                    want,
                    "{vip} ICMP error about {proto}/{p}"
                );
                if want == PASS {
                    assert_eq!(
                        delta(&before, &fx.counters(), counter::PASSED_ICMP_ERROR),
                        1
                    );
                }
            }
        }
    }
}

#[test]
fn icmp_echo_hashes_on_source_and_identifier() {
    let mut fx = Fixture::new();
    let t = half_table();
    fx.serve(&t);
    for (vip, c, cmac, proto) in [
        (IpAddr::from(VIP4), client4(8), CMAC4, ipproto::ICMP),
        (VIP6.into(), client6(8), CMAC6, ipproto::ICMPV6),
    ] {
        let mut seen = [false; 2];
        for id in 0..64u16 {
            let want = if t.state[slot_of(&t, vip, c, proto, id, 0)] == slot_state::OWNED {
                PASS
            } else {
                DROP
            };
            seen[(want == PASS) as usize] = true;
            assert_eq!(
                fx.run(&frame(cmac, c, vip, &L4::Echo { id }, &IpOpts::default()))
                    .action,
                want
            );
        }
        assert_eq!(
            seen,
            [true, true],
            "{vip}: echo ids spread over owned and foreign buckets"
        );
    }
}

#[test]
fn disabled_and_single_rules() {
    let mut fx = Fixture::new();
    let mut t = table(slot_state::OWNED);
    fx.serve(&t);
    let before = fx.counters();
    let f = frame(
        CMAC4,
        client4(9),
        VIP4.into(),
        &tcp(1000, 9000, SYN),
        &IpOpts::default(),
    );
    assert_eq!(fx.run(&f).action, DROP);
    assert_eq!(delta(&before, &fx.counters(), counter::DROPPED_DISABLED), 1);
    // Single rule: the verdict follows its slot, whatever the bucket.
    let f = frame(
        CMAC4,
        client4(9),
        VIP4.into(),
        &tcp(1000, 8050, SYN),
        &IpOpts::default(),
    );
    assert_eq!(fx.run(&f).action, PASS);
    t.state[single_slot_index(SLOT_RULE_SINGLE)] = slot_state::NOT_OWNED;
    fx.dp.install(&t).expect("install");
    assert_eq!(fx.run(&f).action, DROP);
    // VIP4B's default is single: ICMP follows the default slot.
    let echo = frame(
        CMAC4B,
        client4(9),
        VIP4B.into(),
        &L4::Echo { id: 1 },
        &IpOpts::default(),
    );
    assert_eq!(fx.run(&echo).action, PASS);
    t.state[single_slot_index(SLOT_DEFAULT)] = slot_state::NOT_OWNED;
    fx.dp.install(&t).expect("install");
    assert_eq!(fx.run(&echo).action, DROP);
}

#[test]
fn arp_requests_for_a_vip_are_answered_with_the_cluster_mac() {
    let mut fx = Fixture::new();
    fx.serve(&half_table());
    let asker = Ipv4Addr::new(198, 18, 0, 9);
    let before = fx.counters();
    for (vip, cmac) in [(VIP4, CMAC4), (VIP4B, CMAC4B)] {
        let out = fx.run(&arp_request(asker, vip));
        assert_eq!(out.action, TX, "ARP for {vip}");
        let f = &out.frame;
        assert_eq!(f[0..6], CLIENT_MAC, "back to the asker");
        assert_eq!(
            f[6..12],
            IF_MAC,
            "from the node's own MAC, never the cluster MAC"
        );
        assert_eq!(f[20..22], [0, 2], "ARP reply");
        assert_eq!(
            f[22..28],
            cmac,
            "sender hardware address is the cluster MAC"
        );
        assert_eq!(f[28..32], vip.octets());
        assert_eq!(f[32..38], CLIENT_MAC);
        assert_eq!(f[38..42], asker.octets());
    }
    assert_eq!(
        fx.run(&arp_request(asker, Ipv4Addr::new(198, 18, 0, 7)))
            .action,
        PASS
    );
    assert_eq!(delta(&before, &fx.counters(), counter::ARP_REPLIES), 2);
}

#[test]
fn a_routed_vip_gets_no_arp_or_neighbour_answer_from_the_program() {
    // Routers reach a routed VIP through the nodes' own addresses: the
    // program leaves ARP and NS for it to the stack (which, with the VIP on
    // lo and arp_ignore, does not answer either).
    let mut fx = Fixture::new();
    let mut t = half_table();
    for v in t.vips.iter_mut().take(t.nvips as usize) {
        v.mac_mode = xnlb_common::mac_mode::ROUTED;
    }
    fx.serve(&t);
    let before = fx.counters();
    let asker = Ipv4Addr::new(198, 18, 0, 9);
    assert_eq!(fx.run(&arp_request(asker, VIP4)).action, PASS);
    let asker6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9);
    assert_eq!(fx.run(&neighbour_solicitation(asker6, VIP6)).action, PASS);
    assert_eq!(delta(&before, &fx.counters(), counter::ARP_REPLIES), 0);
    assert_eq!(delta(&before, &fx.counters(), counter::ND_REPLIES), 0);
}

#[test]
fn neighbour_solicitations_for_a_vip_get_an_advertisement_with_a_valid_checksum() {
    use pnet::packet::icmpv6;
    let mut fx = Fixture::new();
    fx.serve(&half_table());
    let asker = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9);
    let out = fx.run(&neighbour_solicitation(asker, VIP6));
    assert_eq!(out.action, TX);
    let f = &out.frame;
    assert_eq!(f[0..6], CLIENT_MAC);
    assert_eq!(f[6..12], IF_MAC);
    let ip = &f[14..];
    assert_eq!(ip[8..24], VIP6.octets(), "from the VIP");
    assert_eq!(ip[24..40], asker.octets(), "to the solicitor");
    let icmp = &ip[40..72];
    assert_eq!(icmp[0], 136, "neighbour advertisement");
    assert_eq!(icmp[4], 0x60, "solicited + override");
    assert_eq!(icmp[8..24], VIP6.octets(), "target");
    assert_eq!(icmp[24..26], [2, 1], "target link-layer address option");
    assert_eq!(icmp[26..32], CMAC6);
    let pkt = icmpv6::Icmpv6Packet::new(icmp).expect("icmpv6");
    let want = icmpv6::checksum(&pkt, &VIP6, &asker);
    assert_eq!(
        u16::from_be_bytes([icmp[2], icmp[3]]),
        want,
        "ICMPv6 checksum"
    );
    // Not for a VIP: to the stack.
    let other = neighbour_solicitation(asker, Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7));
    assert_eq!(fx.run(&other).action, PASS);
}

/// A namespace with the VIP and a client address on `lo`, a server
/// listening on VIP:80: connections made there are real kernel sockets,
/// which the program's lookup (run by `BPF_PROG_TEST_RUN` in the same
/// namespace) finds.
fn socket_table_ns(client: IpAddr) -> Netns {
    let ns = Netns::new("sk");
    ns.sh(&format!(
        "ip link set lo up && ip addr add {VIP4}/32 dev lo && ip addr add {client}/32 dev lo"
    ));
    ns
}

fn connect(client: IpAddr, port: u16) -> std::net::TcpStream {
    connect_between(
        SocketAddr::new(client, port),
        SocketAddr::new(VIP4.into(), 80),
        std::time::Duration::from_secs(2),
    )
    .unwrap_or_else(|| panic!("connect from {client}:{port}"))
}

#[test]
fn handed_over_buckets_follow_the_kernels_socket_table() {
    let vip: IpAddr = VIP4.into();
    let c = client4(10);
    let ns = socket_table_ns(c);
    ns.enter(|| {
        let listener = std::net::TcpListener::bind((VIP4, 80)).expect("listen on the VIP");
        let mut fx = Fixture::new();
        let mut t = table(slot_state::OWNED);
        fx.serve(&t);
        let a = 40_000;
        let slot = slot_of(&t, vip, c, ipproto::TCP, a, 80);
        let pkt =
            |port: u16, flags: u8| frame(CMAC4, c, vip, &tcp(port, 80, flags), &IpOpts::default());
        // Connection A is established in this kernel.
        let conn_a = connect(c, a);
        let (_server_a, _) = listener.accept().expect("accept A");
        // B and D: other ports in the same bucket, with no connection.
        let b = port_where(&t, vip, c, ipproto::TCP, 80, |p, s| p != a && s == slot);

        // RELEASING: only connections this kernel holds.
        t.state[slot] = slot_state::RELEASING;
        fx.dp.install(&t).expect("install");
        let before = fx.counters();
        assert_eq!(
            fx.run(&pkt(a, ACK)).action,
            PASS,
            "held connection keeps flowing"
        );
        assert_eq!(delta(&before, &fx.counters(), counter::PASSED_HELD), 1);
        assert_eq!(
            fx.run(&pkt(b, ACK)).action,
            DROP,
            "no socket here (only the listener): another node's connection"
        );
        assert_eq!(
            fx.run(&pkt(b, SYN)).action,
            DROP,
            "new connections go to the acquirer"
        );
        let u = port_where(&t, vip, c, ipproto::UDP, 80, |_, s| s == slot);
        let udp = frame(
            CMAC4,
            c,
            vip,
            &L4::Udp {
                sport: u,
                dport: 80,
                len: 4,
            },
            &IpOpts::default(),
        );
        assert_eq!(fx.run(&udp).action, DROP, "UDP moves at once");
        // A spoofed RST does not end anything: the kernel still holds A.
        assert_eq!(fx.run(&pkt(a, RST)).action, PASS);
        assert_eq!(fx.run(&pkt(a, ACK)).action, PASS);
        // A real reset does: the socket is gone at once, so is A.
        abort(conn_a);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            fx.run(&pkt(a, ACK)).action,
            DROP,
            "reset connection is over"
        );

        // ACQUIRING: new connections and our own, not the releaser's.
        t.state[slot] = slot_state::ACQUIRING;
        fx.dp.install(&t).expect("install");
        let d = port_where(&t, vip, c, ipproto::TCP, 80, |p, s| {
            p != a && p != b && s == slot
        });
        assert_eq!(
            fx.run(&pkt(d, ACK)).action,
            DROP,
            "established flow of the old owner"
        );
        assert_eq!(fx.run(&pkt(d, SYN)).action, PASS, "new connection");
        let _conn_d = connect(c, d);
        let (_server_d, _) = listener.accept().expect("accept D");
        assert_eq!(fx.run(&pkt(d, ACK)).action, PASS, "now held here");
        assert_eq!(fx.run(&udp).action, PASS, "UDP is the acquirer's at once");

        // Past the lease, within held delivery: only connections this
        // kernel holds, in any slot it does not mark NOT_OWNED; nothing new.
        let now = xnlb::dataplane::boottime_ns();
        fx.dp.set_hold(now + 10_000_000_000).expect("hold");
        fx.dp.set_lease(0).expect("lease");
        for state in [
            slot_state::OWNED,
            slot_state::ACQUIRING,
            slot_state::RELEASING,
        ] {
            t.state[slot] = state;
            fx.dp.install(&t).expect("install");
            let before = fx.counters();
            assert_eq!(
                fx.run(&pkt(d, ACK)).action,
                PASS,
                "held connection, state {state}"
            );
            assert_eq!(delta(&before, &fx.counters(), counter::PASSED_HELD), 1);
            assert_eq!(
                fx.run(&pkt(b, SYN)).action,
                DROP,
                "no new connection, state {state}"
            );
            assert_eq!(
                fx.run(&pkt(b, ACK)).action,
                DROP,
                "not held here, state {state}"
            );
            assert_eq!(fx.run(&udp).action, DROP, "no UDP, state {state}");
            assert_eq!(
                delta(&before, &fx.counters(), counter::DROPPED_FENCED),
                3,
                "state {state}"
            );
        }
        t.state[slot] = slot_state::NOT_OWNED;
        fx.dp.install(&t).expect("install");
        assert_eq!(fx.run(&pkt(d, ACK)).action, DROP, "a slot it let go of");

        // Past the hold too: nothing at all (S3).
        t.state[slot] = slot_state::RELEASING;
        fx.dp.install(&t).expect("install");
        fx.dp.set_hold(now).expect("hold");
        let before = fx.counters();
        assert_eq!(fx.run(&pkt(d, ACK)).action, DROP, "fail closed");
        assert_eq!(delta(&before, &fx.counters(), counter::DROPPED_FENCED), 1);
    });
}

#[test]
fn installing_a_table_switches_every_verdict_at_once() {
    let mut fx = Fixture::new();
    let owned = table(slot_state::OWNED);
    let none = table(slot_state::NOT_OWNED);
    fx.serve(&owned);
    let f = frame(
        CMAC4,
        client4(11),
        VIP4.into(),
        &tcp(1234, 80, ACK),
        &IpOpts::default(),
    );
    for round in 0..20 {
        let (t, want) = if round % 2 == 0 {
            (&none, DROP)
        } else {
            (&owned, PASS)
        };
        fx.dp.install(t).expect("install");
        assert_eq!(fx.run(&f).action, want, "round {round}");
        assert_eq!(fx.dp.current_table().expect("table").state[..], t.state[..]);
    }
}

#[test]
fn a_later_fragment_is_not_taken_once_its_slot_moved_away() {
    let mut fx = Fixture::new();
    let mut t = table(slot_state::OWNED);
    fx.serve(&t);
    let (vip, c) = (IpAddr::from(VIP4), client4(7));
    let p = 4242;
    let slot = slot_of(&t, vip, c, ipproto::UDP, p, 80);
    let first = IpOpts {
        id: 0x7777,
        frag: Some((0, true)),
        ..IpOpts::default()
    };
    let udp = L4::Udp {
        sport: p,
        dport: 80,
        len: 64,
    };
    assert_eq!(fx.run(&frame(CMAC4, c, vip, &udp, &first)).action, PASS);
    // The slot moves to another node; the IP id comes round again there.
    t.state[slot] = slot_state::NOT_OWNED;
    fx.dp.install(&t).expect("install");
    let later = IpOpts {
        id: 0x7777,
        frag: Some((9, false)),
        ..IpOpts::default()
    };
    let raw = L4::Raw {
        proto: ipproto::UDP,
        payload: vec![0xab; 40],
    };
    assert_eq!(
        fx.run(&frame(CMAC4, c, vip, &raw, &later)).action,
        DROP,
        "a stale fragment entry must not outlive its slot"
    );
}

#[test]
fn a_fenced_node_tracks_nothing_it_dropped_and_reads_no_clock_for_slots_it_lacks() {
    let mut fx = Fixture::new();
    let vip: IpAddr = VIP4.into();
    let c = client4(11);
    let mut t = table(slot_state::OWNED);
    fx.serve(&t);
    fx.dp.set_lease(0).expect("lease");
    let port = 41_000;
    let slot = slot_of(&t, vip, c, ipproto::TCP, port, 80);
    let pkt = |flags: u8| frame(CMAC4, c, vip, &tcp(port, 80, flags), &IpOpts::default());
    let before = fx.counters();
    assert_eq!(fx.run(&pkt(SYN)).action, DROP, "fenced");
    assert_eq!(delta(&before, &fx.counters(), counter::DROPPED_FENCED), 1);
    // Serving again, the slot releasing: the SYN it dropped while fenced
    // must not have been tracked (another node took that connection).
    t.state[slot] = slot_state::RELEASING;
    fx.dp.install(&t).expect("install");
    fx.dp
        .set_lease(xnlb::dataplane::boottime_ns() + 10_000_000_000)
        .expect("lease");
    assert_eq!(fx.run(&pkt(ACK)).action, DROP);
    // A slot it does not hold is a plain not-owner drop, fenced or not.
    t.state[slot] = slot_state::NOT_OWNED;
    fx.dp.install(&t).expect("install");
    fx.dp.set_lease(0).expect("lease");
    let before = fx.counters();
    assert_eq!(fx.run(&pkt(SYN)).action, DROP);
    assert_eq!(
        delta(&before, &fx.counters(), counter::DROPPED_NOT_OWNER),
        1
    );
    assert_eq!(delta(&before, &fx.counters(), counter::DROPPED_FENCED), 0);
}
