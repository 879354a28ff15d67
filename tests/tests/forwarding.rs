//! Routed mode's forwarding in the XDP program, through
//! `BPF_PROG_TEST_RUN`: a packet this node does not accept leaves by
//! `XDP_TX` to the node that does, with that node's MAC, ours as source and
//! the shim that counts its hops; a forwarded packet is judged by the same
//! verdicts, loses the shim when accepted, and is never forwarded past the
//! bound, back to where it came from, or to a member whose MAC is unknown.
//! Flood VIPs never forward.

use std::net::{IpAddr, Ipv4Addr};

use pnet::packet::ethernet::EtherType;
use xnlb_common::{counter, ethertype, ipproto, mac_mode, slot_state, Table};
use xnlb_tests::fixture::{Fixture, DROP, IF_MAC, PASS, TX};
use xnlb_tests::frames::*;
use xnlb_tests::tables::*;

/// This node, and the members it forwards to.
const ME: u8 = 1;
const OWNER: u8 = 2;
const HOLDER: u8 = 3;
const MAC2: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const MAC3: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x03];

/// `half_table` with routed VIPs: this node (1) owns the even buckets,
/// member 2 the odd ones; member 3 still holds every slot's connections.
fn routed_table() -> Box<Table> {
    let mut t = half_table();
    for v in t.vips.iter_mut().take(t.nvips as usize) {
        v.mac_mode = mac_mode::ROUTED;
    }
    for s in 0..t.owner.len() {
        t.owner[s] = if t.state[s] == slot_state::OWNED {
            ME
        } else {
            OWNER
        };
        t.holder[s] = HOLDER;
    }
    t.me = ME;
    t.fallback = OWNER;
    t
}

fn fixture(t: &Table) -> Fixture {
    let mut fx = Fixture::new();
    fx.serve(t);
    fx.dp.set_member_mac(OWNER, Some(MAC2)).expect("member mac");
    fx.dp
        .set_member_mac(HOLDER, Some(MAC3))
        .expect("member mac");
    fx
}

/// A frame from the router (`from`) to this node, for `vip` from `client`.
fn from_router(vip: IpAddr, client: IpAddr, l4: &L4) -> Vec<u8> {
    frame(IF_MAC, client, vip, l4, &IpOpts::default())
}

/// `pkt` as node `from_mac` forwards it here, `hop` times: its MACs, the
/// shim, the rest of `pkt` from its ethertype on.
fn forwarded(pkt: &[u8], from_mac: [u8; 6], hop: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&IF_MAC);
    f.extend_from_slice(&from_mac);
    f.extend_from_slice(&ethertype::FORWARDED.to_be_bytes());
    f.extend_from_slice(&[hop, 0]);
    f.extend_from_slice(&pkt[12..]);
    f
}

/// The shim a frame forwarded `hop` times carries.
fn shim(hop: u8) -> [u8; 4] {
    let [a, b] = ethertype::FORWARDED.to_be_bytes();
    [a, b, hop, 0]
}

fn port_in(t: &Table, vip: IpAddr, client: IpAddr, proto: u8, dport: u16, state: u8) -> u16 {
    port_where(t, vip, client, proto, dport, |_, slot| {
        t.state[slot] == state
    })
}

#[test]
fn a_packet_for_another_nodes_bucket_goes_to_its_owner_and_is_taken_there() {
    let t = routed_table();
    let mut fx = fixture(&t);
    for (vip, client, ip_type) in [
        (IpAddr::from(VIP4), client4(1), ethertype::IPV4),
        (IpAddr::from(VIP6), client6(1), ethertype::IPV6),
    ] {
        let foreign = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::NOT_OWNED);
        let pkt = from_router(vip, client, &tcp(foreign, 80, SYN));
        let before = fx.counters();
        let out = fx.run(&pkt);
        assert_eq!(out.action, TX, "{vip}: forwarded out of the interface");
        assert_eq!(out.frame[..6], MAC2, "{vip}: to the owner's MAC");
        assert_eq!(out.frame[6..12], IF_MAC, "{vip}: from ours");
        assert_eq!(
            out.frame[12..16],
            shim(1),
            "{vip}: marked as forwarded once"
        );
        assert_eq!(out.frame[16..], pkt[12..], "{vip}: the packet untouched");
        let after = fx.counters();
        assert_eq!(delta(&before, &after, counter::FORWARDED), 1);
        assert_eq!(delta(&before, &after, counter::DROPPED_NOT_OWNER), 0);

        // At the owner (here: this node, for one of its own buckets), the
        // forwarded frame is accepted without its shim.
        let owned = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::OWNED);
        let pkt = from_router(vip, client, &tcp(owned, 80, SYN));
        let out = fx.run(&forwarded(&pkt, MAC2, 1));
        assert_eq!(
            out.action, PASS,
            "{vip}: the owner takes a forwarded packet"
        );
        assert_eq!(
            out.frame[..12],
            [IF_MAC, MAC2].concat()[..],
            "{vip}: the shim is out"
        );
        assert_eq!(out.frame[12..14], ip_type.to_be_bytes());
        assert_eq!(out.frame[14..], pkt[14..]);
    }
}

#[test]
fn a_packet_is_forwarded_at_most_max_hops_times_and_never_back() {
    let t = routed_table();
    let mut fx = fixture(&t);
    let vip = IpAddr::from(VIP4);
    let client = client4(2);
    let foreign = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::NOT_OWNED);
    let pkt = from_router(vip, client, &tcp(foreign, 80, ACK));
    // Forwarded once already (by member 3): once more, to the owner.
    let out = fx.run(&forwarded(&pkt, MAC3, 1));
    assert_eq!(out.action, TX);
    assert_eq!(out.frame[..6], MAC2);
    assert_eq!(out.frame[12..16], shim(2));
    assert_eq!(out.frame.len(), pkt.len() + 4, "one shim, not two");
    let before = fx.counters();
    // At the bound: dropped, whatever the tables say.
    let at_bound = forwarded(&pkt, MAC3, xnlb_common::MAX_HOPS);
    assert_eq!(fx.run(&at_bound).action, DROP);
    // From the owner itself: not straight back.
    assert_eq!(fx.run(&forwarded(&pkt, MAC2, 1)).action, DROP);
    // A target whose MAC is not known yet.
    fx.dp.set_member_mac(OWNER, None).expect("member mac");
    assert_eq!(fx.run(&pkt).action, DROP);
    let after = fx.counters();
    assert_eq!(delta(&before, &after, counter::DROPPED_UNROUTABLE), 3);
    assert_eq!(delta(&before, &after, counter::FORWARDED), 0);
}

#[test]
fn the_owner_sends_a_connection_it_does_not_hold_to_the_previous_holder() {
    let mut t = routed_table();
    for s in 0..t.state.len() {
        if t.state[s] == slot_state::OWNED {
            t.state[s] = slot_state::ACQUIRING;
        }
    }
    let mut fx = fixture(&t);
    let vip = IpAddr::from(VIP4);
    let client = client4(3);
    let ours = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::ACQUIRING);
    // No socket here for it: the holder's.
    let out = fx.run(&from_router(vip, client, &tcp(ours, 80, ACK)));
    assert_eq!((out.action, &out.frame[..6]), (TX, &MAC3[..]));
    // A new connection is ours.
    assert_eq!(
        fx.run(&from_router(vip, client, &tcp(ours, 80, SYN)))
            .action,
        PASS
    );
    // The holder sent it back here (it does not hold it either): dropped,
    // not returned.
    let back = forwarded(&from_router(vip, client, &tcp(ours, 80, ACK)), MAC3, 2);
    assert_eq!(fx.run(&back).action, DROP);
}

#[test]
fn the_owner_sends_what_the_first_holder_brought_it_on_to_the_second() {
    // Two previous holders, 3 then 4. The router handed a connection's
    // packet to 3, which does not hold it and sent it here first (the
    // owner may hold it); this node does not either: not back to 3, on to
    // 4, which may (a connection of a bucket moved twice in one handoff).
    let mut t = routed_table();
    for s in 0..t.state.len() {
        if t.state[s] == slot_state::OWNED {
            t.state[s] = slot_state::ACQUIRING;
            t.holder2[s] = 4;
        }
    }
    let mut fx = fixture(&t);
    let mac4 = [0x02, 0, 0, 0, 0, 4];
    fx.dp.set_member_mac(4, Some(mac4)).expect("member mac");
    let vip = IpAddr::from(VIP4);
    let client = client4(5);
    let ours = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::ACQUIRING);
    let pkt = from_router(vip, client, &tcp(ours, 80, ACK));
    let out = fx.run(&forwarded(&pkt, MAC3, 1));
    assert_eq!(
        (out.action, &out.frame[..6]),
        (TX, &mac4[..]),
        "what the first holder brought must go on to the second, not be dropped"
    );
    assert_eq!(out.frame[12..16], shim(2));
    // From the router: the first holder, as before.
    let out = fx.run(&pkt);
    assert_eq!((out.action, &out.frame[..6]), (TX, &MAC3[..]));
}

#[test]
fn the_first_holder_sends_what_it_does_not_hold_to_the_second() {
    // This node (3) is the first of two previous holders of every slot
    // (member 2 owns them, member 4 holds them too).
    let mut t = routed_table();
    t.me = HOLDER;
    for s in 0..t.state.len() {
        t.state[s] = slot_state::RELEASING;
        t.owner[s] = OWNER;
        t.holder[s] = HOLDER;
        t.holder2[s] = 4;
    }
    let mut fx = fixture(&t);
    let mac4 = [0x02, 0, 0, 0, 0, 4];
    fx.dp.set_member_mac(4, Some(mac4)).expect("member mac");
    let vip = IpAddr::from(VIP4);
    let client = client4(9);
    let port = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::RELEASING);
    // From the owner, a connection this kernel does not hold: member 4.
    let pkt = forwarded(&from_router(vip, client, &tcp(port, 80, ACK)), MAC2, 2);
    let out = fx.run(&pkt);
    assert_eq!((out.action, &out.frame[..6]), (TX, &mac4[..]));
    assert_eq!(out.frame[12..16], shim(3));
    // A new connection: to the owner.
    let out = fx.run(&from_router(vip, client, &tcp(port, 80, SYN)));
    assert_eq!((out.action, &out.frame[..6]), (TX, &MAC2[..]));
    // A connection's packet straight from the router has not been to the
    // owner yet, which may hold it (a connection it took during the
    // handoff): to the owner first, not along the holders. (Sent to member
    // 4, a frozen second holder, such packets were lost: the routed test's
    // frozen phase.)
    let out = fx.run(&from_router(vip, client, &tcp(port, 80, ACK)));
    assert_eq!(
        (out.action, &out.frame[..6]),
        (TX, &MAC2[..]),
        "a connection's packet from the router must go to the owner first"
    );
    assert_eq!(out.frame[12..16], shim(1));
}

#[test]
fn past_its_lease_a_node_sends_its_own_stale_buckets_to_the_fallback() {
    let t = routed_table();
    let mut fx = fixture(&t);
    fx.dp.set_lease(0).expect("lease");
    let vip = IpAddr::from(VIP4);
    let client = client4(4);
    let ours = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::OWNED);
    let before = fx.counters();
    let out = fx.run(&from_router(vip, client, &tcp(ours, 80, SYN)));
    assert_eq!((out.action, &out.frame[..6]), (TX, &MAC2[..]));
    // Its own held connections' packets too (none held here).
    let out = fx.run(&from_router(vip, client, &tcp(ours, 80, ACK)));
    assert_eq!(out.action, TX);
    let after = fx.counters();
    assert_eq!(delta(&before, &after, counter::PASSED), 0);
    assert_eq!(delta(&before, &after, counter::FORWARDED), 2);
}

#[test]
fn flood_vips_and_unknown_destinations_never_forward() {
    let mut t = routed_table();
    t.vips[2].mac_mode = mac_mode::UNICAST;
    let mut fx = fixture(&t);
    let client = client4(5);
    let vip = IpAddr::from(VIP4B);
    let foreign = port_where(&t, vip, client, ipproto::TCP, 80, |_, s| {
        t.state[s] == slot_state::NOT_OWNED
    });
    let cmac = [0x02, 0xbf, 198, 18, 0, 101];
    let out = fx.run(&frame(
        cmac,
        client,
        vip,
        &tcp(foreign, 80, SYN),
        &IpOpts::default(),
    ));
    assert_eq!(
        out.action, DROP,
        "a flood VIP's other nodes see the packet themselves"
    );
    // A forwarded frame for an address that is no VIP here.
    let other: IpAddr = Ipv4Addr::new(198, 18, 0, 7).into();
    let pkt = forwarded(&from_router(other, client, &tcp(1000, 80, SYN)), MAC2, 1);
    let before = fx.counters();
    assert_eq!(fx.run(&pkt).action, DROP);
    assert_eq!(
        delta(&before, &fx.counters(), counter::DROPPED_UNROUTABLE),
        1
    );
    // A forwarding ethertype over something that is not IP.
    let mut junk = pkt.clone();
    junk[14] = 0x50;
    assert_eq!(fx.run(&junk).action, DROP);
}

#[test]
fn the_forwarding_ethertype_is_rewritten_behind_vlan_tags() {
    let t = routed_table();
    let mut fx = fixture(&t);
    let vip = IpAddr::from(VIP4);
    let client = client4(6);
    let foreign = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::NOT_OWNED);
    let ip = {
        let f = from_router(vip, client, &tcp(foreign, 80, SYN));
        f[14..].to_vec()
    };
    let pkt = ethernet(
        IF_MAC,
        CLIENT_MAC,
        &[(0x8100, 7)],
        EtherType(ethertype::IPV4),
        &ip,
    );
    let out = fx.run(&pkt);
    assert_eq!(out.action, TX);
    assert_eq!(out.frame[12..16], shim(1), "the shim right after the MACs");
    assert_eq!(out.frame[16..], pkt[12..], "the tag and the rest follow");
    // Forwarded back here to the owner of the bucket: the tag stays, the
    // shim goes.
    let owned = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::OWNED);
    let mine = ethernet(
        IF_MAC,
        CLIENT_MAC,
        &[(0x8100, 7)],
        EtherType(ethertype::IPV4),
        &from_router(vip, client, &tcp(owned, 80, SYN))[14..],
    );
    let out = fx.run(&forwarded(&mine, MAC2, 1));
    assert_eq!(out.action, PASS);
    assert_eq!(out.frame[12..], mine[12..]);
}

/// Member 2 behind a gateway (another subnet): IPIP from 198.18.1.1 to
/// 198.18.2.2 through the gateway's MAC.
const GW_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xfe];
const TUNNEL_SRC: [u8; 4] = [198, 18, 1, 1];
const TUNNEL_DST: [u8; 4] = [198, 18, 2, 2];

fn tunnel_to_owner(fx: &mut Fixture) {
    fx.dp
        .set_member_route(
            OWNER,
            xnlb_common::MemberRoute {
                mac: GW_MAC,
                kind: xnlb_common::route_kind::IPIP,
                _pad: 0,
                tunnel_dst: u32::from_le_bytes(TUNNEL_DST),
                tunnel_src: u32::from_le_bytes(TUNNEL_SRC),
            },
        )
        .expect("member route");
}

/// The one's-complement sum of an IPv4 header is 0xffff when its checksum
/// is right.
fn header_checksum_ok(h: &[u8]) -> bool {
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

#[test]
fn a_member_on_another_subnet_gets_the_packet_in_an_ipip_tunnel() {
    let t = routed_table();
    let mut fx = fixture(&t);
    tunnel_to_owner(&mut fx);
    for (vip, client, proto) in [
        (IpAddr::from(VIP4), client4(7), ipproto::IPIP),
        (IpAddr::from(VIP6), client6(7), ipproto::IPV6_IN_IPV4),
    ] {
        let foreign = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::NOT_OWNED);
        let pkt = from_router(vip, client, &tcp(foreign, 80, SYN));
        let out = fx.run(&pkt);
        assert_eq!(out.action, TX, "{vip}: sent on");
        assert_eq!(out.frame.len(), pkt.len() + 20, "{vip}: one outer header");
        assert_eq!(out.frame[..6], GW_MAC, "{vip}: to the gateway");
        assert_eq!(out.frame[6..12], IF_MAC);
        assert_eq!(out.frame[12..14], ethertype::IPV4.to_be_bytes());
        let outer = &out.frame[14..34];
        assert_eq!(outer[0], 0x45);
        assert_eq!(
            u16::from_be_bytes([outer[2], outer[3]]) as usize,
            pkt.len() - 14 + 20,
            "{vip}: outer total length"
        );
        assert_eq!(
            u16::from_be_bytes([outer[4], outer[5]]),
            xnlb_common::tunnel::ID_BASE + 1,
            "{vip}: marked forwarded once"
        );
        assert_eq!(outer[9], proto);
        assert_eq!(
            (&outer[12..16], &outer[16..20]),
            (&TUNNEL_SRC[..], &TUNNEL_DST[..])
        );
        assert!(header_checksum_ok(outer), "{vip}: outer checksum");
        assert_eq!(
            out.frame[34..],
            pkt[14..],
            "{vip}: the packet inside untouched"
        );
    }
}

#[test]
fn a_tunnel_packet_from_a_member_is_taken_apart_and_judged_like_any_other() {
    let t = routed_table();
    let mut fx = fixture(&t);
    fx.dp
        .set_tunnel_local(Some(Ipv4Addr::from(TUNNEL_DST)))
        .expect("tunnel address");
    // What a member sends: the tunnel packet of a packet for a bucket
    // this node owns (made by the program itself, towards us).
    let vip = IpAddr::from(VIP4);
    let client = client4(8);
    let owned = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::OWNED);
    let inner = from_router(vip, client, &tcp(owned, 80, SYN));
    let wrap = |id: u16, dst: [u8; 4]| {
        let mut outer = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, ipproto::IPIP, 0, 0];
        let total = (inner.len() - 14 + 20) as u16;
        outer[2..4].copy_from_slice(&total.to_be_bytes());
        outer[4..6].copy_from_slice(&id.to_be_bytes());
        outer.extend_from_slice(&TUNNEL_SRC);
        outer.extend_from_slice(&dst);
        let mut f = Vec::new();
        f.extend_from_slice(&IF_MAC);
        f.extend_from_slice(&GW_MAC);
        f.extend_from_slice(&ethertype::IPV4.to_be_bytes());
        f.extend_from_slice(&outer);
        f.extend_from_slice(&inner[14..]);
        f
    };
    let before = fx.counters();
    let out = fx.run(&wrap(xnlb_common::tunnel::ID_BASE + 1, TUNNEL_DST));
    assert_eq!(out.action, PASS, "the owner takes it");
    assert_eq!(out.frame.len(), inner.len(), "the outer header is gone");
    assert_eq!(out.frame[..12], [IF_MAC, GW_MAC].concat()[..]);
    assert_eq!(out.frame[12..14], ethertype::IPV4.to_be_bytes());
    assert_eq!(out.frame[14..], inner[14..]);
    assert_eq!(delta(&before, &fx.counters(), counter::PASSED), 1);
    // Forwarded to the bound already, for a bucket of another node:
    // dropped there.
    let foreign = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::NOT_OWNED);
    let inner2 = from_router(vip, client, &tcp(foreign, 80, SYN));
    let mut twice = wrap(
        xnlb_common::tunnel::ID_BASE + xnlb_common::MAX_HOPS as u16,
        TUNNEL_DST,
    );
    let cut = twice.len() - (inner.len() - 14);
    twice.truncate(cut);
    twice.extend_from_slice(&inner2[14..]);
    assert_eq!(fx.run(&twice).action, DROP);
    // Not xnlb's marks, or not our tunnel address: the stack's business.
    for pkt in [
        wrap(7, TUNNEL_DST),
        wrap(xnlb_common::tunnel::ID_BASE + 1, [198, 18, 2, 9]),
    ] {
        let out = fx.run(&pkt);
        assert_eq!((out.action, &out.frame), (PASS, &pkt));
    }
}

#[test]
fn within_held_delivery_a_node_sends_new_flows_of_its_stale_slots_to_the_fallback() {
    // Past the lease, within held delivery, in a slot it was taking over
    // from member 3 when it stopped (a frozen agent the routers still
    // send to): a SYN goes to the fallback.
    let mut t = routed_table();
    for s in 0..t.state.len() {
        if t.state[s] == slot_state::OWNED {
            t.state[s] = slot_state::ACQUIRING;
        }
        t.holder[s] = HOLDER;
    }
    let mut fx = fixture(&t);
    let now = xnlb::dataplane::boottime_ns();
    fx.dp.set_lease(now - 1_000_000).expect("lease");
    fx.dp.set_hold(now + 60_000_000_000).expect("hold");
    let vip = IpAddr::from(VIP4);
    let client = client4(10);
    let ours = port_in(&t, vip, client, ipproto::TCP, 80, slot_state::ACQUIRING);
    let before = fx.counters();
    let out = fx.run(&from_router(vip, client, &tcp(ours, 80, SYN)));
    assert_eq!(
        (out.action, &out.frame[..6]),
        (TX, &MAC2[..]),
        "{:?}",
        delta(&before, &fx.counters(), counter::DROPPED_UNROUTABLE)
    );
    let out = fx.run(&from_router(vip, client, &tcp(ours, 80, ACK)));
    assert_eq!((out.action, &out.frame[..6]), (TX, &MAC2[..]));
}
