//! Connections survive every change their host survives (issue 9, DESIGN
//! S6), with real software: nginx on every node, wrk on the client. Each
//! test starts a 3-node cluster, runs 64 keep-alive connections plus as
//! many new connections per second as wrk and the machine allow (target
//! 5,000/s) through one change (join, drain, resume, rebalance, weight
//! change, agent SIGKILL + restart, agent SIGSTOP 2 s + SIGCONT, a minority
//! heartbeat partition), and asserts:
//!
//! - wrk counted no socket error (connect, read, write, timeout) and no
//!   failed status, on either load; its `--timeout` (20 s) is longer than
//!   any planned stall, whose length shows in the latency maximum;
//! - from nginx's logs: each keep-alive client had one server connection
//!   for the whole run (wrk reopens a closed connection silently) and was
//!   still answered at the end (wrk never counts a request that is never
//!   answered), and no client connection was answered by two nodes
//!   ([`served::overlaps`]);
//! - the change touched keep-alive connections (some were in buckets that
//!   moved, or on the faulted node), and the cluster converges within 3 s
//!   once the load stops (`a_drain_ends_when_a_server_closed_connection_ends`
//!   covers the orphaned FIN-WAIT-2 sockets nginx leaves behind).
//!
//! The load runs from 1 s before the change until every keep-alive
//! connection has been answered again after it (at most 10 s: a connection
//! a fault stalled resumes at its next TCP retransmission), plus 3 s.
//!
//! Each prints its figures: requests, rates, errors, latency maxima, when
//! the keep-alive connections were all answered again, how many of them
//! the change touched, the lowest new
//! connection rate over 500 ms, and how close a client port reuse on
//! another node came to the overlap check's clock granularity.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use xnlb::control::Request;
use xnlb_tests::cluster::checks::{drain, fenced_by_others, status, wait_owns_buckets, CONVERGE};
use xnlb_tests::cluster::http::{
    served, Load, LoadReport, LoadSpec, Nginx, ServedConn, HTTP_PORT, KEEPALIVE_PATH, NEW_CONN_PATH,
};
use xnlb_tests::cluster::{connect_between, wait_until, Cluster, ClusterSpec, CLIENT, VIP};

/// How long the cluster may take to converge once the load stopped (the
/// issue's target: a handoff ends within 1 s of the last connection
/// closing; slack for a loaded 2-core machine).
const SETTLE: Duration = Duration::from_secs(3);
/// The target rate of new connections.
const TARGET_NEW_PER_S: f64 = 5_000.0;
/// Load before the change starts.
const LEAD: Duration = Duration::from_secs(1);
/// A keep-alive connection whose last answer is older than this at the
/// end of the load is stuck (it asks every 20 ms).
const STUCK: Duration = Duration::from_millis(1500);

/// Load kept running once every keep-alive connection is answered again
/// after the change.
const TAIL: Duration = Duration::from_secs(3);
/// How long after the change ended every keep-alive connection must be
/// answered again: a stalled connection resumes at its next TCP
/// retransmission, seconds apart after a fault of a few seconds.
const RESUME_BOUND: Duration = Duration::from_secs(10);

/// The load: at least 32 keep-alive connections (64 here, one
/// request each 20 ms) and as many new connections as 64 closed-loop
/// clients get (the target is 5,000/s; this machine reaches 7,000-17,000).
const LOAD: LoadSpec = LoadSpec {
    keepalive_conns: 64,
    keepalive_delay_ms: 20,
    new_conns: 64,
    new_threads: 2,
    max_duration_s: 30,
    timeout_s: 20,
};

/// What a change touches, to prove the test exercised it.
#[derive(Clone, Copy)]
enum Touches {
    /// Keep-alive connections in buckets that moved (their holder is not
    /// the owner node `ask` names after the change).
    Moved { ask: u8 },
    /// Keep-alive connections held by the faulted node.
    HeldBy(u8),
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn per_node<'a>(conns: impl Iterator<Item = &'a ServedConn>) -> BTreeMap<u8, usize> {
    let mut m = BTreeMap::new();
    for c in conns {
        *m.entry(c.node).or_default() += 1;
    }
    m
}

/// The lowest rate of new connections (by their start) over 500 ms
/// windows of the load, first and last window left out.
fn min_rate(new: &[&ServedConn], r: &LoadReport) -> f64 {
    let (from, to) = (ms(r.started), ms(r.ended));
    let bins = ((to - from) / 500) as usize;
    let mut n = vec![0usize; bins.max(1)];
    for c in new {
        let b = (c.start_ms.saturating_sub(from) / 500) as usize;
        if b < n.len() {
            n[b] += 1;
        }
    }
    let inner = if n.len() > 2 {
        &n[1..n.len() - 1]
    } else {
        &n[..]
    };
    inner.iter().copied().min().unwrap_or(0) as f64 * 2.0
}

/// The agent log lines a reader needs to see what the change did.
fn agent_story(c: &Cluster) -> String {
    let mut out = String::new();
    for n in &c.spec().nodes {
        out += &format!("--- agent {} ---\n", n.id);
        for l in c.log(n.id).lines().filter(|l| {
            [
                "epoch", "fence", "handoff", "dead", "drain", "lease", "rejoin", "error",
            ]
            .iter()
            .any(|k| l.contains(k))
        }) {
            out += l;
            out.push('\n');
        }
    }
    out
}

/// Runs one change under load and checks that no connection broke.
fn under_load(
    name: &str,
    spec: ClusterSpec,
    touches: Touches,
    setup: impl FnOnce(&mut Cluster),
    change: impl FnOnce(&mut Cluster),
) {
    let t0 = std::time::Instant::now();
    let all: Vec<u8> = spec.nodes.iter().map(|n| n.id).collect();
    let live: Vec<u8> = all
        .iter()
        .copied()
        .filter(|i| !spec.deferred.contains(i))
        .collect();
    let mut c = Cluster::start(&spec);
    c.wait_converged(&live, CONVERGE);
    let nginx = Nginx::start(&c);
    setup(&mut c);
    let spec = LOAD;
    let mut follow = nginx.follow();
    let running = Load::start(&c.client, &spec, nginx.dir());
    std::thread::sleep(LEAD);
    let changed = SystemTime::now();
    change(&mut c);
    let change_ended = SystemTime::now();
    // Until every keep-alive connection is answered again after the change
    // (those a fault stalled resume at their next retransmission), then a
    // little longer.
    let mut last_answer: BTreeMap<(u8, u64), u64> = BTreeMap::new();
    let resumed = wait_until(RESUME_BOUND, || {
        for q in follow
            .poll()
            .into_iter()
            .filter(|q| q.path == KEEPALIVE_PATH)
        {
            let e = last_answer.entry((q.node, q.serial)).or_default();
            *e = (*e).max(q.end_ms);
        }
        last_answer.len() >= spec.keepalive_conns as usize
            && last_answer.values().all(|&e| e > ms(change_ended))
    });
    let resume = change_ended.elapsed().unwrap_or_default();
    std::thread::sleep(TAIL);
    let r = running.stop();
    let conns = served::connections(&nginx.requests());

    let ka: Vec<&ServedConn> = conns.iter().filter(|k| k.path == KEEPALIVE_PATH).collect();
    let new: Vec<&ServedConn> = conns.iter().filter(|k| k.path == NEW_CONN_PATH).collect();
    let stuck: Vec<&&ServedConn> = ka
        .iter()
        .filter(|k| k.end_ms + (STUCK.as_millis() as u64) < ms(r.ended))
        .collect();
    let touched = match touches {
        Touches::Moved { ask } => ka
            .iter()
            .filter(|k| {
                let src = std::net::SocketAddr::from((CLIENT, k.client.port()));
                c.owner_of(ask, VIP.into(), "tcp", src, HTTP_PORT) != Some(k.node)
            })
            .count(),
        Touches::HeldBy(id) => ka.iter().filter(|k| k.node == id).count(),
    };
    let overlaps = served::overlaps(&conns);
    let failed: u64 = conns.iter().map(|k| k.failed).sum();
    let load_s = (ms(r.ended) - ms(r.started)) as f64 / 1e3;
    let new_rate = new.len() as f64 / load_s;
    let after = ms(changed);
    let new_before = per_node(new.iter().copied().filter(|k| k.start_ms < after));
    let new_after = per_node(new.iter().copied().filter(|k| k.start_ms >= after));
    println!(
        "{name}: the change took {:?}; every keep-alive connection answered again {}",
        change_ended.duration_since(changed).unwrap_or_default(),
        if resumed {
            format!("{resume:?} after it ended")
        } else {
            format!("NOT within {RESUME_BOUND:?}")
        }
    );
    println!(
        "  keep-alive: {}\n  new conns:  {}\n  servers: {} keep-alive connections (wrk opened {}), {touched} touched by the change ({}), {} stuck at the end, per node {:?}; \
         {} new connections ({new_rate:.0}/s, target {TARGET_NEW_PER_S:.0}/s {}; lowest over 500 ms: {:.0}/s), per node before the change {new_before:?}, after {new_after:?}; \
         {} overlaps (closest client port reuse on another node: {:?} ms); {failed} failed statuses; {:?} in all",
        r.keepalive,
        r.new_conns,
        ka.len(),
        spec.keepalive_conns,
        match touches {
            Touches::Moved { .. } => "in buckets that moved",
            Touches::HeldBy(_) => "on the faulted node",
        },
        stuck.len(),
        per_node(ka.iter().copied()),
        new.len(),
        if new_rate >= TARGET_NEW_PER_S { "met" } else { "NOT met on this machine" },
        min_rate(&new, &r),
        overlaps.len(),
        served::closest_reuse_ms(&conns),
        t0.elapsed(),
    );

    // The cluster settles once the load's connections are gone (the
    // handoffs end when the old holders' kernels hold no socket).
    let settle = std::time::Instant::now();
    let settled = wait_until(SETTLE, || converged(&c, &all));
    let held: Vec<(u8, Lingering)> = all.iter().map(|&i| (i, lingering(&c, i))).collect();
    if settled {
        println!("  converged {:?} after the load ended", settle.elapsed());
    } else {
        println!(
            "  NOT converged {SETTLE:?} after the load ended; server sockets still held per node (FIN-WAIT-2 timewait, other): {:?}",
            held.iter()
                .map(|(i, l)| (*i, l.fin_wait2_timewait, l.other.len()))
                .collect::<Vec<_>>()
        );
    }
    let story = agent_story(&c);
    assert!(
        r.keepalive.socket_errors() == 0 && r.keepalive.status == 0,
        "{name}: keep-alive connections broke: {}\n{story}",
        r.keepalive
    );
    assert!(
        r.new_conns.socket_errors() == 0 && r.new_conns.status == 0,
        "{name}: new connections failed: {}\n{story}",
        r.new_conns
    );
    assert_eq!(
        ka.len(),
        spec.keepalive_conns as usize,
        "{name}: server connections of the keep-alive clients (more: broken connections wrk reopened silently; fewer: clients never answered)\n{story}"
    );
    assert!(
        stuck.is_empty(),
        "{name}: keep-alive connections not answered in the last {STUCK:?}: {stuck:?}\n{story}"
    );
    assert!(
        overlaps.is_empty(),
        "{name}: client connections answered by two nodes: {:?}",
        &overlaps[..overlaps.len().min(5)]
    );
    assert_eq!(failed, 0, "{name}: failed statuses in nginx's logs");
    assert!(
        new.len() >= 1_000,
        "{name}: only {} new connections: no load",
        new.len()
    );
    assert!(
        touched > 0,
        "{name}: the change touched no keep-alive connection"
    );
    // Any socket still held means a connection never finished; none held,
    // a protocol that does not settle.
    assert!(
        settled,
        "{name}: no convergence {SETTLE:?} after the load stopped; sockets held: {held:?}\n{:#?}\n{story}\n--- client sockets ---\n{}",
        all.iter().map(|&i| c.status(i)).collect::<Vec<_>>(),
        c.client.sh("ss -tan | grep -v TIME-WAIT")
    );
}

/// Whether every node reports converged with quorum at one epoch.
fn converged(c: &Cluster, ids: &[u8]) -> bool {
    let st: Vec<_> = ids.iter().map(|&i| c.status(i)).collect();
    st.iter()
        .all(|s| s.as_ref().is_some_and(|s| s.converged && s.quorum.has))
        && st
            .windows(2)
            .all(|w| w[0].as_ref().map(|s| s.epoch) == w[1].as_ref().map(|s| s.epoch))
}

/// The server sockets on the HTTP port a node's kernel still holds (the
/// socket table that decides who serves a connection and when a handoff
/// ends).
#[derive(Debug)]
struct Lingering {
    /// FIN-WAIT-2 sockets nginx has closed: the kernel keeps them as
    /// timewait sockets in substate FIN_WAIT2 (`ss` shows them with a
    /// `timewait` timer).
    fin_wait2_timewait: usize,
    /// Any other socket carrying a connection (`ss` lines).
    other: Vec<String>,
}

fn lingering(c: &Cluster, id: u8) -> Lingering {
    let out = c.ns(id).sh(&format!("ss -Htano 'sport = :{HTTP_PORT}'"));
    let mut l = Lingering {
        fin_wait2_timewait: 0,
        other: Vec::new(),
    };
    for line in out.lines() {
        if line.starts_with("LISTEN") || line.starts_with("TIME-WAIT") {
            continue;
        }
        if line.starts_with("FIN-WAIT-2") && line.contains("timewait") {
            l.fin_wait2_timewait += 1;
        } else {
            l.other.push(line.to_string());
        }
    }
    l
}

fn deferred_third() -> ClusterSpec {
    ClusterSpec {
        deferred: vec![3],
        ..ClusterSpec::actives(3)
    }
}

#[test]
fn http_load_survives_a_join() {
    under_load(
        "join",
        deferred_third(),
        Touches::Moved { ask: 1 },
        |_| {},
        |c| {
            c.start_agent(3);
            wait_owns_buckets(c, 3);
        },
    );
}

#[test]
fn http_load_survives_a_drain() {
    under_load(
        "drain",
        ClusterSpec::actives(3),
        Touches::Moved { ask: 2 },
        |_| {},
        |c| {
            drain(c, 1);
        },
    );
}

#[test]
fn http_load_survives_a_resume() {
    under_load(
        "resume",
        ClusterSpec::actives(3),
        Touches::Moved { ask: 2 },
        |c| {
            drain(c, 1);
            assert!(
                wait_until(CONVERGE, || {
                    let s = status(c, 1);
                    s.state == "drained" && s.converged
                }),
                "node 1 did not drain: {:?}",
                c.status(1)
            );
            c.wait_converged(&[1, 2, 3], CONVERGE);
        },
        |c| {
            let r = c.control(1, Request::Resume);
            assert!(r.ok, "resume: {r:?}");
        },
    );
}

#[test]
fn http_load_survives_a_rebalance() {
    under_load(
        "rebalance",
        deferred_third(),
        Touches::Moved { ask: 1 },
        |c| {
            // A join takes only the others' surplus: the layout is no
            // longer the canonical one a rebalance restores.
            c.start_agent(3);
            wait_owns_buckets(c, 3);
            c.wait_converged(&[1, 2, 3], CONVERGE);
        },
        |c| {
            let r = c.control(2, Request::Rebalance);
            assert!(r.ok, "rebalance: {r:?}");
        },
    );
}

#[test]
fn http_load_survives_a_weight_change() {
    under_load(
        "weight change",
        ClusterSpec::actives(3),
        Touches::Moved { ask: 1 },
        |_| {},
        |c| c.set_weight(3, 200),
    );
}

#[test]
fn http_load_survives_an_agent_crash_and_restart() {
    under_load(
        "agent SIGKILL + restart",
        ClusterSpec::actives(3),
        Touches::HeldBy(3),
        |_| {},
        |c| {
            c.kill(3);
            fenced_by_others(c, 3);
            std::thread::sleep(Duration::from_millis(500));
            c.start_agent(3);
        },
    );
}

#[test]
fn http_load_survives_a_frozen_agent() {
    under_load(
        "agent SIGSTOP 2 s + SIGCONT",
        ClusterSpec::actives(3),
        Touches::HeldBy(3),
        |_| {},
        |c| {
            c.freeze(3);
            std::thread::sleep(Duration::from_secs(2));
            c.thaw(3);
        },
    );
}

#[test]
fn http_load_survives_a_minority_heartbeat_partition() {
    under_load(
        "heartbeat partition 2 s (node 3 alone)",
        ClusterSpec::actives(3),
        Touches::HeldBy(3),
        |_| {},
        |c| {
            c.cut_heartbeats(3);
            std::thread::sleep(Duration::from_secs(2));
            c.heal_heartbeats(3);
        },
    );
}

/// A connection nginx closed first (`Connection: close`) while its client
/// keeps the socket a while (as an HTTP client does after reading the
/// response, or with an idle keep-alive connection the server times out):
/// the server's socket is an orphaned FIN-WAIT-2, which the kernel keeps as
/// a timewait socket in substate FIN_WAIT2. Its node is drained; then the
/// client closes. Its FIN must reach the server (the client's socket ends)
/// and the drain must end within the 1 s of that close (2 s here).
///
/// On main neither happens: `sock_diag` reports such a socket as
/// FIN_WAIT2, a held state, so the drain waits for it; XDP's
/// `bpf_skc_lookup_tcp` sees its `TIME_WAIT` state, not a held one, so the
/// releasing node drops the client's FIN, and the acquiring node has no
/// socket. The client retransmits its FIN from LAST-ACK, the drain waits
/// for the timewait timer (`tcp_fin_timeout`, 60 s) or `drain_timeout`.
/// Under load, changes leave such sockets behind on both sides of a
/// handoff: on the acquiring node too, a new connection's client FIN is
/// dropped once the server's FIN was acknowledged on its own (the load
/// tests above print them when the cluster has not converged).
#[test]
fn a_drain_ends_when_a_server_closed_connection_ends() {
    let c = Cluster::start(&ClusterSpec::actives(3));
    c.wait_converged(&[1, 2, 3], CONVERGE);
    let _nginx = Nginx::start(&c);
    let owner = |p: u16| {
        let src = std::net::SocketAddr::from((CLIENT, p));
        c.owner_of(2, VIP.into(), "tcp", src, HTTP_PORT)
    };
    let port = (40_000..41_000)
        .find(|&p| owner(p) == Some(1))
        .expect("a client port whose bucket node 1 owns");
    let mut s = c
        .client
        .enter(|| {
            connect_between(
                (CLIENT, port).into(),
                (VIP, HTTP_PORT).into(),
                Duration::from_secs(1),
            )
        })
        .expect("connect to nginx");
    s.write_all(b"GET /close HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .expect("response until nginx closes");
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("node 1\n"),
        "{resp:?}"
    );
    assert!(
        wait_until(Duration::from_secs(2), || lingering(&c, 1)
            .fin_wait2_timewait
            == 1),
        "node 1 holds no orphaned FIN-WAIT-2 socket: {:?}",
        lingering(&c, 1)
    );

    drain(&c, 1);
    std::thread::sleep(Duration::from_millis(300));
    let closed = std::time::Instant::now();
    drop(s);
    let drained = wait_until(Duration::from_secs(2), || status(&c, 1).state == "drained");
    let waited = closed.elapsed();
    let client_left = c.client.sh(&format!("ss -Htan 'sport = :{port}'"));
    println!(
        "server-closed connection: drain {} {waited:?} after the client closed; client socket then: {:?}; node 1 holds {:?}",
        if drained { "ended" } else { "had not ended" },
        client_left.trim(),
        lingering(&c, 1)
    );
    assert!(
        client_left.trim().is_empty(),
        "the client's FIN was never answered: {client_left}"
    );
    assert!(
        drained,
        "the drain did not end within 2 s of the last connection's close: {:?}\n{}",
        c.status(1),
        c.log_tail(1, 10)
    );
}
