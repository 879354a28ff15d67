//! Routed mode's announcement with real BIRD: a router namespace peers over
//! eBGP with BIRD on every node (the configs are examples/bird-router.conf
//! and examples/bird-node.conf, addresses and ASNs substituted per node);
//! the router's kernel must hold one ECMP route to the VIP through every
//! healthy node, and lose a node's next hop when its agent is killed or it
//! falls into a minority. Times from the fault to the withdrawal (in the
//! node's table 4242, then in the router's kernel) are printed; the asserts
//! are on behaviour, with generous bounds.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xnlb::announce::ROUTED_TABLE;
use xnlb_tests::cluster::checks::CONVERGE;
use xnlb_tests::cluster::{Cluster, ClusterSpec, VIP, VIP6};
use xnlb_tests::netns::{unique, Netns};

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
    let dir = PathBuf::from(format!("/tmp/{}", unique("xnlb-bird-")));
    std::fs::create_dir_all(&dir).expect("bird dir");
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
