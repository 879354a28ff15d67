//! Traffic shapes with real agents in namespaces: an IPv6 VIP, fragmented
//! datagrams, ICMP echo and 802.1Q-tagged frames, each answered (or, for
//! frames no stack takes, passed) once, by the owner only. Every test also
//! asserts that no UDP probe was accepted by two nodes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use xnlb::host::cluster_mac;
use xnlb_tests::cluster::checks::{status, tcp_all_by_owner, CONVERGE, PROBE};
use xnlb_tests::cluster::{
    client_addr, wait_until, Cluster, ClusterSpec, CLIENT, TCP_PORT, UDP_PORT, VIP, VIP6,
};
use xnlb_tests::raw::{internet_checksum, mac_of, ping_raw, PacketSocket};

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
    f.extend_from_slice(&cluster_mac(
        IpAddr::V4(VIP),
        xnlb::config::MacMode::Multicast,
    ));
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
