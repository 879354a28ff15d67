//! Real packets over a veth pair between two namespaces, with the program
//! attached in native (driver) and generic (skb) mode: datagrams and TCP
//! connections to the VIP are accepted exactly for the buckets we own, and
//! the client learns the VIP's cluster MAC from our XDP ARP reply.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use aya::programs::XdpMode;
use xnlb::flow::{classify, FlowSpec};
use xnlb_common::{counter, ipproto, slot_state, PROG_FILTER};
use xnlb_tests::cluster::connect_between;
use xnlb_tests::fixture::Fixture;
use xnlb_tests::netns::{veth, Netns};
use xnlb_tests::raw::mac_of;
use xnlb_tests::tables::{half_table, VIP4B};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 1);
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 2);

fn run_mode(mode: XdpMode) {
    let client = Netns::new("c");
    let node = Netns::new("n");
    veth(&client, "eth0", &node, "eth0");
    // VIP4B uses a unicast cluster MAC (02:bf:...), which a Linux client
    // accepts in an ARP reply.
    let vip = VIP4B;
    // Checksums in software on the client: a veth hands its peer's XDP
    // partially checksummed frames, which a physical wire never carries.
    client.sh(&format!(
        "ip addr add {CLIENT}/24 dev eth0 && ip route add {vip}/32 dev eth0 && \
         ethtool -K eth0 tx off >/dev/null"
    ));
    node.sh(&format!(
        "ip addr add {NODE}/24 dev eth0 && ip addr add {vip}/32 dev lo && \
         sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 && \
         ip link set eth0 promisc on"
    ));
    let mut fx = Fixture::new();
    let t = half_table();
    fx.serve(&t);
    fx.dp.set_if_mac(mac_of(&node, "eth0")).expect("if mac");
    node.enter(|| {
        fx.dp
            .program(PROG_FILTER)
            .expect("program")
            .attach("eth0", mode)
            .unwrap_or_else(|e| panic!("attach in {mode:?} mode: {e:?}"))
    });
    if mode == XdpMode::Driver {
        // Two veth peculiarities, neither of which a physical NIC has:
        // - a veth only receives frames its peer sends with XDP_TX when it
        //   runs native XDP itself, so the client runs our filter too (it
        //   passes everything the client receives: none is for a VIP);
        // - a veth classifies the frame (PACKET_OTHERHOST for a cluster MAC)
        //   before native XDP runs, so rewriting the MAC comes too late and the
        //   stack drops it. A NIC driver classifies after XDP. So here the
        //   client addresses the node's own MAC, as a client with a stale ARP
        //   entry would; the cluster MAC path is covered in generic mode.
        client.enter(|| {
            fx.dp
                .program(PROG_FILTER)
                .expect("program")
                .attach("eth0", XdpMode::Driver)
                .expect("attach client")
        });
        let m = mac_of(&node, "eth0");
        let mac = m
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        client.sh(&format!(
            "ip neigh replace {vip} lladdr {mac} dev eth0 nud permanent"
        ));
    }

    // UDP: 200 source ports, one datagram each.
    let server = node
        .enter(|| UdpSocket::bind((vip, 5353)))
        .expect("bind udp");
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let ports: Vec<u16> = (20_000..20_200).collect();
    let socks: Vec<UdpSocket> = ports
        .iter()
        .map(|&p| {
            client
                .enter(|| UdpSocket::bind((CLIENT, p)))
                .expect("bind client port")
        })
        .collect();
    for s in &socks {
        s.send_to(b"hello", (vip, 5353)).expect("send");
    }
    let mut got = BTreeSet::new();
    let mut buf = [0u8; 64];
    while let Ok((_, from)) = server.recv_from(&mut buf) {
        got.insert(from.port());
    }
    let want: BTreeSet<u16> = ports
        .iter()
        .copied()
        .filter(|&p| {
            let c = classify(
                &t,
                &FlowSpec {
                    vip: vip.into(),
                    client: CLIENT.into(),
                    proto: ipproto::UDP,
                    client_port: p,
                    vip_port: 5353,
                },
            )
            .expect("vip");
            t.state[c.slot] == slot_state::OWNED
        })
        .collect();
    assert!(
        want.len() > 50 && want.len() < 150,
        "about half the ports are owned: {}",
        want.len()
    );
    assert_eq!(
        got,
        want,
        "{mode:?}: the node receives exactly the datagrams of its buckets; counters {:?}; node stats {}",
        fx.counters().c,
        node.sh("nstat -az | grep -E 'UdpIn|UdpNoPorts|InCsum|IpInAddrErrors|IpInHdrErrors|IpInReceives|IpExtInNoRoutes|IpInDiscards' || true")
    );

    // TCP: real connections; owned ones are answered, the others' SYNs drop.
    let listener = node.enter(|| TcpListener::bind((vip, 80))).expect("listen");
    // Answers every connection; ends with the test process.
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut s, b"node");
        }
    });
    let mut answered = 0;
    let mut expected = 0;
    for p in 30_000..30_020u16 {
        let c = classify(
            &t,
            &FlowSpec {
                vip: vip.into(),
                client: CLIENT.into(),
                proto: ipproto::TCP,
                client_port: p,
                vip_port: 80,
            },
        )
        .expect("vip");
        let owned = t.state[c.slot] == slot_state::OWNED;
        expected += owned as usize;
        let res = client.enter(|| {
            connect_between(
                SocketAddr::from((CLIENT, p)),
                SocketAddr::from((vip, 80)),
                Duration::from_millis(400),
            )
        });
        match res {
            Some(mut s) => {
                let mut b = [0u8; 4];
                s.read_exact(&mut b).expect("reply");
                assert_eq!(&b, b"node");
                assert!(
                    owned,
                    "{mode:?}: connection from port {p} answered but its bucket is not ours"
                );
                answered += 1;
            }
            None => assert!(
                !owned,
                "{mode:?}: connection from port {p} to an owned bucket failed"
            ),
        }
    }
    assert_eq!(answered, expected);
    let counters = fx.counters();
    if mode == XdpMode::Skb {
        assert!(
            counters.c[counter::ARP_REPLIES] >= 1,
            "the client learnt the cluster MAC from XDP"
        );
    }
    assert!(counters.c[counter::DROPPED_NOT_OWNER] > 0 && counters.c[counter::PASSED] > 0);
    println!(
        "{mode:?}: {} of {} datagrams and {answered} of 20 connections accepted, as owned; counters {:?}",
        got.len(),
        ports.len(),
        counters.c
    );
}

#[test]
fn native_mode_accepts_exactly_the_owned_buckets() {
    run_mode(XdpMode::Driver);
}

#[test]
fn generic_mode_accepts_exactly_the_owned_buckets() {
    run_mode(XdpMode::Skb);
}
