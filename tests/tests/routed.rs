//! Routed mode's announcement with real BIRD: a router namespace peers over
//! eBGP with BIRD on every node (the configs are examples/bird-router.conf
//! and examples/bird-node.conf, addresses and ASNs substituted per node);
//! the router's kernel must hold one ECMP route to the VIP through every
//! healthy node, and lose a node's next hop when its agent is killed or it
//! falls into a minority. Times from the fault to the withdrawal (in the
//! node's table 4242, then in the router's kernel) are printed; the asserts
//! are on behaviour, with generous bounds.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xnlb::announce::ROUTED_TABLE;
use xnlb_tests::cluster::checks::CONVERGE;
use xnlb_tests::cluster::{
    connect_between, echo_round, read_node_id, Cluster, ClusterSpec, Conn, REMOTE_NET, TCP_PORT,
    VIP, VIP6,
};
use xnlb_tests::netns::{fresh_dir, veth, Netns};

/// The router's address on the data bridge (as in bird-router.conf).
const ROUTER: &str = "198.18.1.254";
/// Bound for BGP sessions to come up and a route to reach the router
/// (BIRD's connect delay and retry are 1 s and 2 s in the examples).
const BGP_UP: Duration = Duration::from_secs(30);
/// Bound for a withdrawal to reach the router.
const WITHDRAWN: Duration = Duration::from_secs(10);

const NODE_CONF: &str = include_str!("../../examples/bird-node.conf");
const ROUTER_CONF: &str = include_str!("../../examples/bird-router.conf");

/// One bird process, killed by its PID (and waited for) on drop.
struct Bird {
    child: Child,
    log: PathBuf,
}

impl Bird {
    /// Runs `bird` in the foreground in `ns` with `conf` and its own
    /// control socket and pid file under `dir`.
    fn start(ns: &Netns, dir: &Path, name: &str, conf: &str) -> Bird {
        let cfg = dir.join(format!("{name}.conf"));
        std::fs::write(&cfg, conf).expect("bird config");
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("bird log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "bird", "-f", "-c"])
            .arg(&cfg)
            .arg("-s")
            .arg(dir.join(format!("{name}.ctl")))
            .arg("-P")
            .arg(dir.join(format!("{name}.pid")))
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("bird (scripts/setup.sh installs bird2)");
        Bird { child, log }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        // `ip netns exec` execs bird: the child's PID is bird's.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The router's kernel route to `vip`, as `ip route` prints it.
fn router_route(router: &Netns, vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(v) => router.sh(&format!("ip -4 route show {v}/32")),
        IpAddr::V6(v) => router.sh(&format!("ip -6 route show {v}/128")),
    }
}

/// The node ids the router's kernel routes `vip` through (nodes are
/// 198.18.1.ID and fd00:1::ID on the data bridge).
fn router_next_hops(router: &Netns, vip: IpAddr) -> BTreeSet<u8> {
    let text = router_route(router, vip);
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| {
            let id = w[1]
                .strip_prefix("198.18.1.")
                .or_else(|| w[1].strip_prefix("198.18.2."))
                .or_else(|| w[1].strip_prefix("fd00:1::"))?;
            id.parse().ok()
        })
        .collect()
}

/// Whether node `id` has the VIP in its announcement table.
fn node_announces(c: &Cluster, id: u8) -> bool {
    c.ns(id)
        .sh(&format!("ip route show table {ROUTED_TABLE}"))
        .contains(&VIP.to_string())
}

/// Whether node `id` has the IPv6 VIP in its announcement table.
fn node_announces6(c: &Cluster, id: u8) -> bool {
    c.ns(id)
        .sh(&format!("ip -6 route show table {ROUTED_TABLE}"))
        .contains(&VIP6.to_string())
}

/// Polls `f` every 5 ms for at most `bound`; how long it took, if it held.
fn time_until(bound: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < bound {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// BIRD on node `id`: the shipped snippet with its address and AS.
fn node_conf(id: u8) -> String {
    let conf = NODE_CONF
        .replace(
            "router id 198.18.1.1;",
            &format!("router id 198.18.1.{id};"),
        )
        .replace(
            "local 198.18.1.1 as 65001;",
            &format!("local 198.18.1.{id} as {};", 65000 + id as u32),
        );
    assert!(
        conf.contains(&format!("local 198.18.1.{id} as")),
        "examples/bird-node.conf changed shape"
    );
    conf
}

/// Checks the router's ECMP set reaches `want` within `bound`, printing
/// how long it took; panics with the route and the BIRD logs otherwise.
fn expect_next_hops(
    router: &Netns,
    birds: &[Bird],
    vip: IpAddr,
    want: &[u8],
    bound: Duration,
    what: &str,
) {
    let want: BTreeSet<u8> = want.iter().copied().collect();
    match time_until(bound, || router_next_hops(router, vip) == want) {
        Some(t) => eprintln!("{what}: router routes {vip} via nodes {want:?} after {t:?}"),
        None => {
            let logs: String = birds
                .iter()
                .map(|b| std::fs::read_to_string(&b.log).unwrap_or_default())
                .collect();
            panic!(
                "{what}: expected next hops {want:?} within {bound:?}, the router has {:?}:\n{}\nbird logs:\n{logs}",
                router_next_hops(router, vip),
                router_route(router, vip),
            );
        }
    }
}

/// Times one fault: to the withdrawal in node `id`'s table, then to the
/// router's route change to `remaining`.
fn expect_withdrawal(
    c: &Cluster,
    router: &Netns,
    birds: &[Bird],
    id: u8,
    remaining: &[u8],
    fault: &str,
) {
    let t0 = Instant::now();
    let local = time_until(WITHDRAWN, || !node_announces(c, id));
    assert!(
        local.is_some(),
        "{fault}: node {id} still announces the VIP after {WITHDRAWN:?}:\n{}",
        c.log_tail(id, 30)
    );
    expect_next_hops(router, birds, VIP.into(), remaining, WITHDRAWN, fault);
    eprintln!(
        "{fault}: withdrawn from node {id}'s table {:?} after the fault, from the router {:?} after",
        local.unwrap_or_default(),
        t0.elapsed()
    );
}

/// Three routed nodes behind a BIRD router: an ECMP route through all
/// three, for the IPv4 and the IPv6 VIP; a heartbeat-only partition makes
/// the minority node withdraw (the others stay); healed, it returns; a
/// SIGKILLed agent's next hop goes, and a SIGTERMed one's.
#[test]
fn the_router_routes_the_vip_through_every_healthy_node_only() {
    let started = Instant::now();
    let spec = ClusterSpec {
        vip_mode: "routed",
        vip6: true,
        ..ClusterSpec::actives(3)
    };
    let mut c = Cluster::start(&spec);
    let router = Netns::new("r");
    c.plug_into_data(&router, "eth0", ROUTER);
    router.sh(
        "sysctl -qw net.ipv4.fib_multipath_hash_policy=1 net.ipv6.fib_multipath_hash_policy=1 \
         && ip -6 addr add fd00:1::fe/64 dev eth0 nodad",
    );
    let dir = fresh_dir(Path::new("/tmp"), "xnlb-bird-");
    let mut birds = vec![Bird::start(&router, &dir, "router", ROUTER_CONF)];
    for id in 1..=3 {
        birds.push(Bird::start(
            c.ns(id),
            &dir,
            &format!("node{id}"),
            &node_conf(id),
        ));
    }
    c.wait_converged(&[1, 2, 3], CONVERGE);
    for id in 1..=3 {
        assert!(
            time_until(Duration::from_secs(5), || node_announces(&c, id)
                && node_announces6(&c, id))
            .is_some(),
            "node {id} is converged but does not announce both VIPs:\n{}",
            c.log_tail(id, 30)
        );
    }
    // Both VIPs, the IPv6 one over the same (IPv4) sessions.
    for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
        expect_next_hops(&router, &birds, vip, &[1, 2, 3], BGP_UP, "start");
    }

    // Heartbeats only: node 3 still has its data link (and BGP session),
    // but alone it is a minority of three.
    c.cut_heartbeats(3);
    expect_withdrawal(
        &c,
        &router,
        &birds,
        3,
        &[1, 2],
        "heartbeat partition of node 3",
    );
    assert!(
        node_announces(&c, 1) && node_announces(&c, 2),
        "the majority must keep announcing"
    );
    // The agent's own account: the withdrawal is logged with its cause, in
    // the same step as the quorum loss (before the lease even ends).
    let log = c.log_tail(3, 200);
    let withdrew: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("quorum lost") || l.contains("withdrew"))
        .collect();
    eprintln!("node 3's log:\n{}", withdrew.join("\n"));
    assert!(
        withdrew.iter().any(|l| l.contains("withdrew")),
        "node 3 logged no withdrawal:\n{log}"
    );
    c.heal_heartbeats(3);
    c.wait_converged(&[1, 2, 3], CONVERGE);
    expect_next_hops(&router, &birds, VIP.into(), &[1, 2, 3], BGP_UP, "healed");

    // SIGKILL: nothing of the agent runs, its device and route go with it.
    c.kill(2);
    expect_withdrawal(&c, &router, &birds, 2, &[1, 3], "SIGKILL of node 2's agent");

    // SIGTERM: the announcement goes first, before the leave's handoff
    // (node 1, alone of three, may then lose quorum and withdraw too).
    let t0 = Instant::now();
    c.sigterm(3);
    let local = time_until(WITHDRAWN, || !node_announces(&c, 3));
    assert!(local.is_some(), "node 3 still announces after SIGTERM");
    assert!(
        time_until(WITHDRAWN, || !router_next_hops(&router, VIP.into())
            .contains(&3))
        .is_some(),
        "the router still routes via node 3 after its SIGTERM"
    );
    eprintln!(
        "SIGTERM of node 3's agent: withdrawn from its table {:?} after, from the router {:?} after",
        local.unwrap_or_default(),
        t0.elapsed()
    );
    let _ = c.wait_exit(3, Duration::from_secs(10));
    drop(birds);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("routed test took {:?}", started.elapsed());
}

/// The client behind the router (its own subnet: every packet it sends
/// the VIP goes through the router's ECMP route).
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 200, 2);

/// Makes node `id` a heartbeat minority: its heartbeats on both links
/// (the heartbeat bridge and the data bridge) are cut; its data path, and
/// so its BGP session, stays.
fn isolate_heartbeats(c: &Cluster, id: u8) {
    c.cut_heartbeats(id);
    c.ns(id).sh("nft add table inet xnlbiso && \
         nft add chain inet xnlbiso in '{ type filter hook input priority 0; }' && \
         nft add chain inet xnlbiso out '{ type filter hook output priority 0; }' && \
         nft add rule inet xnlbiso in udp dport 7450 drop && \
         nft add rule inet xnlbiso out udp dport 7450 drop");
}

/// Undoes [`isolate_heartbeats`].
fn heal_isolation(c: &Cluster, id: u8) {
    c.ns(id).sh("nft delete table inet xnlbiso");
    c.heal_heartbeats(id);
}

/// One connection from the outside client's `port`: the node that
/// answered, if any did within `timeout`.
fn outside_probe(outside: &Netns, port: u16, timeout: Duration) -> Option<u8> {
    outside.enter(|| {
        let s = connect_between(
            SocketAddr::from((OUTSIDE, port)),
            SocketAddr::from((VIP, TCP_PORT)),
            timeout,
        )?;
        read_node_id(s)
    })
}

/// Connections from `ports` of the outside client, each checked against
/// the owner `xnlb owner` names on node `ask`: how many were answered by
/// another node than the owner (with the first few), and how many not at
/// all.
fn answered_by_owner(
    c: &Cluster,
    outside: &Netns,
    ask: u8,
    ports: std::ops::Range<u16>,
) -> (usize, usize, Vec<String>) {
    let (mut wrong, mut silent, mut first) = (0, 0, Vec::new());
    for port in ports {
        let owner = c.owner_of(
            ask,
            IpAddr::V4(VIP),
            "tcp",
            SocketAddr::from((OUTSIDE, port)),
            TCP_PORT,
        );
        match outside_probe(outside, port, Duration::from_secs(3)) {
            None => {
                silent += 1;
                if first.len() < 5 {
                    first.push(format!("port {port}: unanswered (owner {owner:?})"));
                }
            }
            Some(n) if Some(n) != owner => {
                wrong += 1;
                if first.len() < 5 {
                    first.push(format!("port {port}: node {n} answered, owner {owner:?}"));
                }
            }
            Some(_) => {}
        }
    }
    (wrong, silent, first)
}

/// Opens `n` long-lived echo connections from the outside client.
fn open_outside(outside: &Netns, ports: std::ops::Range<u16>) -> Vec<Conn> {
    outside.enter(|| {
        ports
            .map(|port| {
                let mut s = connect_between(
                    SocketAddr::from((OUTSIDE, port)),
                    SocketAddr::from((VIP, TCP_PORT)),
                    Duration::from_secs(3),
                )
                .unwrap_or_else(|| panic!("outside connection from port {port}"));
                s.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                let mut b = [0u8; 1];
                s.read_exact(&mut b).expect("node id");
                Conn {
                    port,
                    node: b[0],
                    stream: s,
                    sent: 0,
                }
            })
            .collect()
    })
}

/// Waits until the listed nodes serve one epoch (quorum, lease): what a
/// client needs. Not "converged": with long-lived connections open, the
/// handoffs of a change stay open while they live.
fn wait_serving(c: &Cluster, ids: &[u8], what: &str) {
    let ok = xnlb_tests::cluster::wait_until(CONVERGE, || {
        let st: Vec<_> = ids.iter().map(|&i| c.status(i)).collect();
        st.iter()
            .all(|s| s.as_ref().is_some_and(|s| s.quorum.has && s.lease_ms > 0))
            && st
                .windows(2)
                .all(|w| w[0].as_ref().map(|s| s.epoch) == w[1].as_ref().map(|s| s.epoch))
    });
    assert!(ok, "{what}: nodes {ids:?} do not serve one epoch");
}

/// Waits until node `ask` sees member `id` own nothing (its buckets moved:
/// until then `xnlb owner` still names it).
fn wait_buckets_moved(c: &Cluster, ask: u8, id: u8, what: &str) {
    let moved = xnlb_tests::cluster::wait_until(CONVERGE, || {
        c.status(ask)
            .is_some_and(|s| s.members.iter().any(|m| m.id == id && m.buckets == 0))
    });
    assert!(moved, "{what}: node {id}'s buckets did not move");
}

/// 1,000 connections from the outside client (after a warm-up: until
/// every node passed its first barrier, a SYN may need retransmitting),
/// each answered by the owner node 1 names, with no packet unroutable on
/// `live`; how many packets `forwarders` forwarded meanwhile.
fn thousand_by_owner(c: &Cluster, outside: &Netns, live: &[u8], forwarders: &[u8]) -> u64 {
    let (wrong, _, first) = answered_by_owner(c, outside, 1, 19_900..19_950);
    assert_eq!(wrong, 0, "{first:?}");
    let unroutable = sum_counter(c, live, "dropped_unroutable");
    let forwarded = sum_counter(c, forwarders, "forwarded");
    let t0 = Instant::now();
    let (wrong, silent, first) = answered_by_owner(c, outside, 1, 20_000..21_000);
    let forwarded = sum_counter(c, forwarders, "forwarded") - forwarded;
    eprintln!(
        "1,000 connections through the router over nodes {live:?} in {:?}: {wrong} answered by another node than the owner, {silent} unanswered; nodes {forwarders:?} forwarded {forwarded} packets",
        t0.elapsed()
    );
    assert_eq!((wrong, silent), (0, 0), "{first:?}");
    assert_eq!(
        sum_counter(c, live, "dropped_unroutable") - unroutable,
        0,
        "no packet of a converged cluster is unroutable"
    );
    forwarded
}

/// After a change: every long-lived connection still echoes, and 200 new
/// connections from `ports` are each answered by the owner node `ask`
/// names; no client connection was answered by two nodes.
fn after_change(c: &Cluster, outside: &Netns, conns: &mut [Conn], what: &str, ask: u8, ports: u16) {
    let broken = echo_round(conns);
    let (wrong, silent, first) = answered_by_owner(c, outside, ask, ports..ports + 200);
    eprintln!(
        "{what}: {} of {} long-lived connections broken; 200 new ones: {wrong} by another node than the owner, {silent} unanswered",
        broken.len(),
        conns.len()
    );
    assert!(broken.is_empty(), "{what}: broken connections {broken:?}");
    assert_eq!((wrong, silent), (0, 0), "{what}: {first:?}");
    c.assert_no_overlap(what);
}

fn sum_counter(c: &Cluster, ids: &[u8], name: &str) -> u64 {
    ids.iter()
        .filter_map(|&i| c.status(i))
        .map(|s| s.counters.get(name).copied().unwrap_or(0))
        .sum()
}

/// Four routed nodes (node 4 deferred: started by the test) behind a
/// BIRD router with an ECMP route, and a client on its own subnet behind
/// the router ([`OUTSIDE`]), the nodes answering it directly (direct
/// server return through the router).
struct RoutedCluster {
    c: Cluster,
    router: Netns,
    outside: Netns,
    birds: Vec<Bird>,
    dir: PathBuf,
}

impl RoutedCluster {
    /// Starts it and waits until nodes 1-3 serve and the router routes the
    /// VIP through them. Two heartbeat links: the second, on the data
    /// bridge, keeps the members' MACs there in each node's neighbour
    /// table (where routed mode learns them).
    fn start() -> RoutedCluster {
        RoutedCluster::start_with(false)
    }

    /// With `remote`, node 4 is on another subnet ([`REMOTE_NET`], behind
    /// the router) and started with the others: the nodes reach it, and it
    /// them, through routed mode's tunnel.
    fn start_with(remote: bool) -> RoutedCluster {
        let spec = &ClusterSpec {
            vip_mode: "routed",
            links: 2,
            deferred: if remote { vec![] } else { vec![4] },
            remote: if remote { vec![4] } else { vec![] },
            ..ClusterSpec::actives(4)
        };
        let c = Cluster::start(spec);
        let router = Netns::new("r");
        c.plug_into_data(&router, "eth0", ROUTER);
        router.sh(
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
             net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0",
        );
        let outside = Netns::new("o");
        veth(&outside, "eth0", &router, "eth1");
        router.sh("ip addr add 198.19.200.1/24 dev eth1");
        outside.sh("ip addr add 198.19.200.2/24 dev eth0 && ip route add default via 198.19.200.1");
        if remote {
            c.plug_into_remote(&router, "eth2", &format!("{REMOTE_NET}.254"));
        }
        for n in &spec.nodes {
            if spec.remote.contains(&n.id) {
                c.ns(n.id)
                    .sh(&format!("ip route add default via {REMOTE_NET}.254"));
            } else {
                c.ns(n.id).sh(&format!(
                    "ip route add 198.19.200.0/24 via {ROUTER} && ip route add {REMOTE_NET}.0/24 via {ROUTER}"
                ));
            }
        }
        let dir = fresh_dir(Path::new("/tmp"), "xnlb-bird-");
        let node4 = if remote {
            format!("local {REMOTE_NET}.254 as 65000; neighbor {REMOTE_NET}.4 as 65004;")
        } else {
            "neighbor 198.18.1.4 as 65004;".to_string()
        };
        let router_conf =
            format!("{ROUTER_CONF}\nprotocol bgp node4 from xnlb_node {{ {node4} }}\n");
        let mut birds = vec![Bird::start(&router, &dir, "router", &router_conf)];
        for n in &spec.nodes {
            let id = n.id;
            let mut conf = node_conf(id);
            if spec.remote.contains(&id) {
                conf = conf
                    .replace(&format!("198.18.1.{id}"), &format!("{REMOTE_NET}.{id}"))
                    .replace(ROUTER, &format!("{REMOTE_NET}.254"));
            }
            birds.push(Bird::start(c.ns(id), &dir, &format!("node{id}"), &conf));
        }
        let live: &[u8] = if remote { &[1, 2, 3, 4] } else { &[1, 2, 3] };
        c.wait_converged(live, CONVERGE);
        expect_next_hops(&router, &birds, VIP.into(), live, BGP_UP, "start");
        RoutedCluster {
            c,
            router,
            outside,
            birds,
            dir,
        }
    }
}

/// Routed mode end to end: a client behind a BIRD router whose ECMP route
/// spreads its connections over the nodes; each node forwards what it does
/// not own to the owner in XDP. 1,000 connections are each answered by
/// the node `xnlb owner` names, whatever next hop the router picked;
/// long-lived connections survive a join, a drain (each changes the
/// router's ECMP set), a heartbeat minority and a SIGKILLed agent; new
/// connections keep being answered by their owner throughout.
#[test]
fn every_connection_is_answered_by_its_owner_whatever_next_hop_the_router_picked() {
    let started = Instant::now();
    let RoutedCluster {
        mut c,
        router,
        outside,
        birds,
        dir,
    } = RoutedCluster::start();

    let forwarded = thousand_by_owner(&c, &outside, &[1, 2, 3], &[1, 2, 3]);
    assert!(forwarded > 0, "the router spread nothing over non-owners?");

    let mut conns = open_outside(&outside, 30_000..30_040);
    after_change(&c, &outside, &mut conns, "before any change", 1, 21_000);

    // A join: the router's ECMP set grows.
    c.start_agent(4);
    wait_serving(&c, &[1, 2, 3, 4], "4 nodes");
    expect_next_hops(
        &router,
        &birds,
        VIP.into(),
        &[1, 2, 3, 4],
        BGP_UP,
        "join of node 4",
    );
    after_change(&c, &outside, &mut conns, "after node 4 joined", 1, 22_000);

    // A drain: node 1 withdraws, its connections are forwarded to it.
    let r = c.control(1, xnlb::control::Request::Drain { timeout_s: None });
    assert!(r.ok, "drain: {r:?}");
    expect_next_hops(
        &router,
        &birds,
        VIP.into(),
        &[2, 3, 4],
        WITHDRAWN,
        "drain of node 1",
    );
    wait_serving(&c, &[1, 2, 3, 4], "4 nodes");
    after_change(&c, &outside, &mut conns, "node 1 drained", 2, 23_000);
    let r = c.control(1, xnlb::control::Request::Resume);
    assert!(r.ok, "resume: {r:?}");
    wait_serving(&c, &[1, 2, 3, 4], "4 nodes");
    expect_next_hops(
        &router,
        &birds,
        VIP.into(),
        &[1, 2, 3, 4],
        BGP_UP,
        "resume of node 1",
    );
    after_change(&c, &outside, &mut conns, "node 1 resumed", 1, 24_000);

    // A heartbeat minority: node 3 withdraws and serves nothing new.
    isolate_heartbeats(&c, 3);
    expect_withdrawal(
        &c,
        &router,
        &birds,
        3,
        &[1, 2, 4],
        "heartbeat minority of node 3",
    );
    wait_serving(&c, &[1, 2, 4], "majority");
    wait_buckets_moved(&c, 1, 3, "node 3 in a minority");
    after_change(&c, &outside, &mut conns, "node 3 in a minority", 1, 25_000);
    heal_isolation(&c, 3);
    wait_serving(&c, &[1, 2, 3, 4], "4 nodes");
    expect_next_hops(
        &router,
        &birds,
        VIP.into(),
        &[1, 2, 3, 4],
        BGP_UP,
        "node 3 healed",
    );

    // A frozen agent: its BIRD keeps announcing it, so the router still
    // sends it a share of the flows; past its lease its program forwards
    // them (its own stale buckets to a live member, which knows the new
    // owner) and keeps delivering the connections its kernel holds.
    c.freeze(3);
    wait_buckets_moved(&c, 1, 3, "node 3 frozen");
    assert!(
        router_next_hops(&router, VIP.into()).contains(&3),
        "the frozen node's BIRD still announces it (the case this phase is about)"
    );
    // Every new connection answered by its owner. The buckets the frozen
    // node handed to node 4 are the test: node 1, their first previous
    // holder, used to send a connection's packet it got from the router on
    // to the second, the frozen node, instead of to the owner first, and
    // 3-9 handshakes of 200 were lost that way.
    after_change(
        &c,
        &outside,
        &mut conns,
        "node 3's agent frozen, still announced",
        1,
        25_500,
    );
    c.thaw(3);
    wait_serving(&c, &[1, 2, 3, 4], "4 nodes");

    // SIGKILL: node 2's agent is gone (its kernel and XDP program stay,
    // and deliver its connections, forwarded to it, while held).
    let owned_by_2: Vec<u16> = (26_000..26_200)
        .filter(|&p| {
            c.owner_of(
                1,
                IpAddr::V4(VIP),
                "tcp",
                SocketAddr::from((OUTSIDE, p)),
                TCP_PORT,
            ) == Some(2)
        })
        .take(20)
        .collect();
    let t0 = Instant::now();
    c.kill(2);
    let mut served_after = None;
    let mut probe = owned_by_2.iter().cycle();
    while t0.elapsed() < Duration::from_secs(10) {
        let port = *probe.next().expect("ports");
        if outside_probe(&outside, port, Duration::from_millis(200)).is_some_and(|n| n != 2) {
            served_after = Some(t0.elapsed());
            break;
        }
        // Each try is a new connection from a recycled port: let it close.
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("SIGKILL of node 2's agent: its buckets' new connections served by another node after {served_after:?}");
    assert!(
        served_after.is_some(),
        "node 2's buckets were not taken over"
    );
    expect_withdrawal(
        &c,
        &router,
        &birds,
        2,
        &[1, 3, 4],
        "SIGKILL of node 2's agent",
    );
    wait_serving(&c, &[1, 3, 4], "survivors");
    wait_buckets_moved(&c, 1, 2, "node 2 killed");
    after_change(&c, &outside, &mut conns, "node 2's agent killed", 1, 27_000);
    let unroutable = sum_counter(&c, &[1, 3, 4], "dropped_unroutable");
    eprintln!("unroutable drops at the end: {unroutable}");

    drop(conns);
    drop(birds);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("routed forwarding test took {:?}", started.elapsed());
}

/// Real HTTP through the router while its ECMP set changes twice (node 4
/// joins, then node 1 drains and withdraws): nginx on every node, wrk on
/// the client behind the router with 64 keep-alive connections and a
/// closed-loop new-connection load. No socket error, no failed status, one
/// server connection per keep-alive client, no client connection answered
/// by two nodes (nginx's logs).
#[test]
fn http_through_the_router_survives_a_join_and_a_drain() {
    use xnlb_tests::cluster::http::{served, Load, LoadSpec, Nginx, KEEPALIVE_PATH};
    let RoutedCluster {
        mut c,
        router,
        outside,
        birds,
        dir,
    } = RoutedCluster::start();
    let nginx = Nginx::start(&c);
    let load = LoadSpec {
        keepalive_conns: 64,
        keepalive_delay_ms: 20,
        new_conns: 64,
        new_threads: 2,
        max_duration_s: 30,
        timeout_s: 20,
    };
    let running = Load::start(&outside, &load, nginx.dir());
    std::thread::sleep(Duration::from_secs(1));
    c.start_agent(4);
    wait_serving(&c, &[1, 2, 3, 4], "join");
    expect_next_hops(
        &router,
        &birds,
        VIP.into(),
        &[1, 2, 3, 4],
        BGP_UP,
        "join under load",
    );
    std::thread::sleep(Duration::from_secs(1));
    let r = c.control(1, xnlb::control::Request::Drain { timeout_s: None });
    assert!(r.ok, "drain: {r:?}");
    expect_next_hops(
        &router,
        &birds,
        VIP.into(),
        &[2, 3, 4],
        WITHDRAWN,
        "drain under load",
    );
    std::thread::sleep(Duration::from_secs(2));
    let r = running.stop();
    let conns = served::connections(&nginx.requests());
    let ka = conns.iter().filter(|k| k.path == KEEPALIVE_PATH).count();
    let overlaps = served::overlaps(&conns);
    let forwarded = sum_counter(&c, &[1, 2, 3, 4], "forwarded");
    eprintln!(
        "HTTP through the router, join + drain:\n  keep-alive: {}\n  new conns:  {}\n  {} server connections ({ka} keep-alive), {} overlaps, {forwarded} packets forwarded",
        r.keepalive,
        r.new_conns,
        conns.len(),
        overlaps.len()
    );
    assert!(
        r.keepalive.socket_errors() == 0 && r.keepalive.status == 0,
        "keep-alive connections broke: {}",
        r.keepalive
    );
    assert!(
        r.new_conns.socket_errors() == 0 && r.new_conns.status == 0,
        "new connections failed: {}",
        r.new_conns
    );
    assert_eq!(
        ka, load.keepalive_conns as usize,
        "a keep-alive connection was reopened"
    );
    assert!(
        overlaps.is_empty(),
        "answered by two nodes: {:?}",
        &overlaps[..overlaps.len().min(5)]
    );
    assert!(conns.len() > 1_000, "no load");
    drop(nginx);
    drop(birds);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A member on another subnet (node 4, behind the router): the nodes on
/// the segment reach it, and it them, through routed mode's IPIP tunnel.
/// 1,000 connections, spread by the router over all four, are each
/// answered by their owner; long-lived ones survive node 4's SIGKILL (its
/// kernel keeps delivering what it holds, tunnelled to it).
#[test]
fn a_member_on_another_subnet_is_reached_through_the_tunnel() {
    let RoutedCluster {
        mut c,
        router,
        outside,
        birds,
        dir,
    } = RoutedCluster::start_with(true);
    for id in 1..=3 {
        assert!(
            c.log(id)
                .contains("member 4 is on another subnet: IPIP to 198.18.2.4"),
            "node {id} did not learn the tunnel to node 4:\n{}",
            c.log_tail(id, 30)
        );
    }
    let tunnelled = thousand_by_owner(&c, &outside, &[1, 2, 3, 4], &[4]);
    assert!(tunnelled > 0, "node 4 tunnelled nothing");

    let mut conns = open_outside(&outside, 30_000..30_040);
    assert!(echo_round(&mut conns).is_empty());
    let on4 = conns.iter().filter(|k| k.node == 4).count();
    c.kill(4);
    expect_withdrawal(
        &c,
        &router,
        &birds,
        4,
        &[1, 2, 3],
        "SIGKILL of node 4's agent",
    );
    wait_serving(&c, &[1, 2, 3], "survivors");
    wait_buckets_moved(&c, 1, 4, "node 4 killed");
    let what = format!("node 4 killed ({on4} long-lived connections were on it)");
    after_change(&c, &outside, &mut conns, &what, 1, 22_000);
    drop(conns);
    drop(birds);
    let _ = std::fs::remove_dir_all(&dir);
}
