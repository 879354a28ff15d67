//! Small deterministic clusters driven by hand (no simulator feature): the
//! agent-facing behaviour of `Node`.

use xnlb_common::slot_state::{ACQUIRING, NOT_OWNED, OWNED, RELEASING};
use xnlb_proto::wire::{self, Body};
use xnlb_proto::{Action, Config, MemberConfig, Node, NodeState, Role, Time};

const MS: u64 = 1_000_000;

struct Cluster {
    nodes: Vec<Option<Node>>,
    configs: Vec<Config>,
    now: u64,
    states: Vec<Vec<u8>>,
    leases: Vec<u64>,
    /// Last state each node wrote (what a restart reads).
    saved: Vec<Option<Vec<u8>>>,
    /// Writes of this node fail.
    disk_broken: Vec<bool>,
    /// Installs of this node fail.
    install_broken: Vec<bool>,
    /// What this node's shell did to its data plane, in order: `Some(until)`
    /// for a lease, `None` for an install.
    dp_log: Vec<Vec<Option<u64>>>,
    /// Connections this node's kernel holds in its releasing slots (what
    /// its data plane reports).
    held: Vec<u64>,
    /// This node's datagrams are lost.
    mute: Vec<bool>,
    /// This node's commits and snapshots are lost (its other datagrams
    /// arrive).
    mute_commits: Vec<bool>,
    /// Every datagram body each node sent (decoded).
    sent: Vec<Vec<Body>>,
    /// Every datagram each node sent, as (to, link, bytes): what an
    /// on-path attacker could record and replay.
    recorded: Vec<Vec<(u8, usize, Vec<u8>)>>,
    /// Highest write that landed, per node (datagrams waiting for a later
    /// one are dropped: this shell writes synchronously).
    durable: Vec<u64>,
}

impl Cluster {
    fn new(roles: &[Role], buckets: u32) -> Cluster {
        let members: Vec<MemberConfig> = roles
            .iter()
            .enumerate()
            .map(|(i, &role)| MemberConfig {
                id: i as u8 + 1,
                role,
                weight: 100,
                addrs: 1,
            })
            .collect();
        let configs: Vec<Config> = (0..roles.len())
            .map(|i| {
                let mut c = Config::with_defaults(i as u8 + 1, members.clone());
                c.buckets = buckets;
                c
            })
            .collect();
        let nodes = configs
            .iter()
            .map(|c| Some(Node::new(c.clone(), Time(0), 1).expect("valid config")))
            .collect();
        let n = roles.len();
        Cluster {
            nodes,
            configs,
            now: 0,
            states: vec![vec![NOT_OWNED; buckets as usize]; n],
            leases: vec![0; n],
            saved: vec![None; n],
            disk_broken: vec![false; n],
            install_broken: vec![false; n],
            dp_log: vec![Vec::new(); n],
            held: vec![0; n],
            mute: vec![false; n],
            mute_commits: vec![false; n],
            sent: vec![Vec::new(); n],
            recorded: vec![Vec::new(); n],
            durable: vec![0; n],
        }
    }

    /// Kills node `i` and starts it again from its last written state.
    fn restart(&mut self, i: usize, incarnation: u64) {
        let bytes = self.saved[i].clone().expect("node wrote its state");
        self.nodes[i] = Some(
            Node::restore(self.configs[i].clone(), Time(self.now), incarnation, &bytes)
                .expect("restorable"),
        );
        self.durable[i] = 0;
    }

    fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("running")
    }

    fn status(&self, i: usize) -> xnlb_proto::Status {
        self.nodes[i]
            .as_ref()
            .map(|n| n.status(Time(self.now)))
            .expect("running")
    }

    /// Applies node `i`'s actions as a shell would: writes and installs are
    /// reported back, failing where broken.
    fn shell(&mut self, i: usize, now: Time) {
        let Some(n) = self.nodes[i].as_mut() else {
            return;
        };
        loop {
            let mut reports = Vec::new();
            let mut install_failed = false;
            while let Some(e) = n.poll_action() {
                match e {
                    Action::Install { states, .. } => {
                        self.dp_log[i].push(None);
                        if self.install_broken[i] {
                            install_failed = true;
                        } else {
                            self.states[i] = states;
                        }
                    }
                    Action::Lease { until, .. } => {
                        self.dp_log[i].push(Some(until.0));
                        self.leases[i] = until.0;
                    }
                    Action::Persist { seq, state } => {
                        if !self.disk_broken[i] {
                            self.saved[i] = Some(state);
                        }
                        reports.push((seq, !self.disk_broken[i]));
                    }
                    _ => {}
                }
            }
            while n.poll_report().is_some() {}
            if reports.is_empty() && !install_failed {
                return;
            }
            if install_failed {
                n.install_failed(now);
            }
            for (seq, ok) in reports {
                if ok {
                    self.durable[i] = self.durable[i].max(seq);
                }
                n.persisted(now, seq, ok);
            }
        }
    }

    /// Runs in 1 ms steps with instant delivery.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += MS;
            let now = Time(self.now);
            let mut mail = Vec::new();
            for i in 0..self.nodes.len() {
                let Some(n) = self.nodes[i].as_mut() else {
                    continue;
                };
                if n.poll_timeout().is_some_and(|t| t <= now) {
                    n.handle_timeout(now);
                }
                // The data plane reports its releasing slots (empty at once
                // unless a test holds connections there).
                if self.states[i].contains(&RELEASING) {
                    n.report_tracked_flows(now, self.held[i]);
                }
                self.shell(i, now);
                let auth = xnlb_proto::auth::Authenticator::new(&self.configs[i].key);
                let Some(n) = self.nodes[i].as_mut() else {
                    continue;
                };
                while let Some(t) = n.poll_transmit() {
                    if t.after_persist > self.durable[i] {
                        continue;
                    }
                    let mut lost = self.mute[i];
                    if let Ok(m) = wire::decode(&auth, &t.bytes) {
                        lost |= self.mute_commits[i]
                            && matches!(m.body, Body::Commit { .. } | Body::SnapshotChunk { .. });
                        self.sent[i].push(m.body);
                    }
                    self.recorded[i].push((t.to, t.link, t.bytes.clone()));
                    if !lost {
                        mail.push(t);
                    }
                }
            }
            for t in mail {
                let to = t.to as usize - 1;
                if let Some(Some(n)) = self.nodes.get_mut(to) {
                    n.handle_datagram(now, t.link, &t.bytes);
                }
                self.shell(to, now);
            }
        }
    }

    /// The nodes whose data plane accepts new flows of `bucket` now
    /// (OWNED, or ACQUIRING while a previous owner may still hold
    /// connections in it).
    fn owners(&self, bucket: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                matches!(self.states[i][bucket], OWNED | ACQUIRING) && self.leases[i] > self.now
            })
            .collect()
    }
}

#[test]
fn three_nodes_form_a_cluster_and_split_the_buckets() {
    let mut c = Cluster::new(&[Role::Active; 3], 4096);
    c.run(1000);
    for b in 0..4096 {
        assert_eq!(c.owners(b).len(), 1, "bucket {b}");
    }
    let s = c.nodes[0]
        .as_ref()
        .map(|n| n.status(Time(c.now)))
        .expect("running");
    assert_eq!(s.state, NodeState::Active);
    assert!(s.converged);
    assert!(s.quorum.has);
    assert!((1365..=1366).contains(&s.buckets_owned));
    assert!(s.to_json().contains("\"state\": \"active\""));
}

#[test]
fn a_crashed_node_is_replaced_within_dead_after_plus_two_heartbeats() {
    let mut c = Cluster::new(&[Role::Active; 3], 1024);
    c.run(1000);
    let owners_before: Vec<Vec<usize>> = (0..1024).map(|b| c.owners(b)).collect();
    c.nodes[1] = None;
    c.states[1] = vec![NOT_OWNED; 1024];
    let before = c.now;
    while c.now < before + 400 * MS {
        c.run(1);
        if (0..1024).all(|b| c.owners(b).len() == 1) {
            break;
        }
    }
    assert!(
        c.now - before <= 350 * MS,
        "took {} ms",
        (c.now - before) / MS
    );
    c.run(500);
    for (b, owner) in owners_before.iter().enumerate() {
        if owner != &vec![1] {
            assert_eq!(&c.owners(b), owner, "bucket {b} of a survivor moved");
        }
    }
}

#[test]
fn a_witness_votes_but_owns_nothing() {
    let mut c = Cluster::new(&[Role::Active, Role::Active, Role::Witness], 256);
    c.run(1000);
    assert!((0..256).all(|b| !c.owners(b).contains(&2)));
    c.nodes[1] = None;
    c.states[1] = vec![NOT_OWNED; 256];
    c.run(1000);
    assert!(
        (0..256).all(|b| c.owners(b) == vec![0]),
        "node 1 serves alone with the witness's vote"
    );
}

#[test]
fn a_lone_node_without_quorum_never_serves() {
    let mut c = Cluster::new(&[Role::Active; 3], 64);
    c.nodes[1] = None;
    c.nodes[2] = None;
    c.run(2000);
    assert!((0..64).all(|b| c.owners(b).is_empty()));
    let s = c.nodes[0]
        .as_ref()
        .map(|n| n.status(Time(c.now)))
        .expect("running");
    assert!(!s.quorum.has);
}

#[test]
fn drain_then_resume_moves_buckets_away_and_back() {
    let mut c = Cluster::new(&[Role::Active; 3], 300);
    c.run(1000);
    let t = Time(c.now);
    if let Some(n) = c.nodes[2].as_mut() {
        n.drain(t, Some(0));
    }
    c.run(1000);
    assert!((0..300).all(|b| c.owners(b).len() == 1 && c.owners(b)[0] != 2));
    let s = c.nodes[2]
        .as_ref()
        .map(|n| n.status(Time(c.now)))
        .expect("running");
    assert_eq!(s.state, NodeState::Drained);
    let t = Time(c.now);
    if let Some(n) = c.nodes[2].as_mut() {
        n.resume(t);
    }
    c.run(1000);
    let s = c.nodes[2]
        .as_ref()
        .map(|n| n.status(Time(c.now)))
        .expect("running");
    let owned = (0..300).filter(|&b| c.owners(b) == vec![2]).count();
    assert_eq!(owned, 100, "{s:?}");
}

/// Prepare ballots node `i` sent for `epoch`.
fn prepares(c: &Cluster, i: usize, epoch: u64) -> Vec<u64> {
    c.sent[i]
        .iter()
        .filter_map(|b| match b {
            Body::Prepare { epoch: e, ballot } if *e == epoch => Some(*ballot),
            _ => None,
        })
        .collect()
}

#[test]
fn a_proposer_restarted_mid_round_never_reuses_a_ballot() {
    let mut c = Cluster::new(&[Role::Active; 3], 64);
    c.run(1000);
    let epoch = c.status(0).epoch + 1;
    // Node 3 asks to drain; node 1 (the coordinator) proposes, but its
    // datagrams are lost and it crashes before any is heard.
    c.mute[0] = true;
    let t = Time(c.now);
    c.node(2).drain(t, Some(0));
    let mut first = Vec::new();
    for _ in 0..500 {
        c.run(1);
        first = prepares(&c, 0, epoch);
        if !first.is_empty() {
            break;
        }
    }
    assert!(!first.is_empty(), "node 1 proposed epoch {epoch}");
    c.sent[0].clear();
    c.restart(0, 2);
    c.mute[0] = false;
    c.run(1000);
    let again = prepares(&c, 0, epoch);
    assert!(
        !again.is_empty(),
        "the restarted node proposes epoch {epoch} again"
    );
    let used = first.iter().max().copied().unwrap_or(0);
    assert!(
        again.iter().all(|&b| b > used),
        "ballots after the restart {again:x?} must all exceed {used:#x}, used before it"
    );
}

/// Whether node `i` sent any vote (Promise or Accepted) since `from`.
fn votes_since(c: &Cluster, i: usize, from: usize) -> usize {
    c.sent[i][from..]
        .iter()
        .filter(|b| matches!(b, Body::Promise { .. } | Body::Accepted { .. }))
        .count()
}

#[test]
fn a_failed_state_write_fences_the_node_stops_its_votes_and_lets_the_others_serve() {
    let mut c = Cluster::new(&[Role::Active; 3], 64);
    c.run(1000);
    assert_eq!(c.status(1).state, NodeState::Active);
    c.disk_broken[1] = true;
    // Any vote needs a write; an epoch is needed to move node 2's buckets.
    let mark = c.sent[1].len();
    let t = Time(c.now);
    c.node(2).rebalance(t);
    for _ in 0..600 {
        c.run(1);
        assert!((0..64).all(|b| c.owners(b).len() <= 1));
    }
    assert_eq!(
        votes_since(&c, 1, mark),
        0,
        "a node whose writes fail must not vote"
    );
    assert!(c.leases[1] <= c.now, "its lease is revoked");
    assert_eq!(c.status(1).state, NodeState::Fenced);
    assert!(
        (0..64).all(|b| c.owners(b).len() == 1 && c.owners(b)[0] != 1),
        "the others fenced it and serve its buckets"
    );
    c.disk_broken[1] = false;
    c.run(1500);
    assert_eq!(c.status(1).state, NodeState::Active);
    assert!(c.leases[1] > c.now);
    assert!((0..64).all(|b| c.owners(b).len() == 1));
    assert!((21..=22).contains(&(0..64).filter(|&b| c.owners(b) == vec![1]).count()));
}

#[test]
fn a_failed_install_is_not_reported_and_fences_the_node_until_an_install_succeeds() {
    let mut c = Cluster::new(&[Role::Active; 3], 60);
    c.run(1000);
    let epoch = c.status(1).epoch;
    c.install_broken[1] = true;
    let t = Time(c.now);
    c.node(2).drain(t, Some(0));
    for _ in 0..1000 {
        c.run(1);
        // Node 2's data plane still holds the old map: nobody may take a
        // bucket on its word, and it serves nothing once it failed.
        for b in 0..60 {
            assert!(c.owners(b).len() <= 1, "bucket {b} served twice");
        }
        // (An epoch that changes nothing in node 2's table needs no install.)
        if c.nodes[1].as_ref().is_some_and(|n| n.blocked().is_some()) {
            assert!(
                c.leases[1] <= c.now,
                "node 2 must stay fenced: t={} {}",
                c.now / MS,
                c.nodes[1]
                    .as_ref()
                    .map(|n| n.debug_line(Time(c.now)))
                    .unwrap_or_default()
            );
        }
    }
    assert!(c.status(1).epoch > epoch);
    assert_eq!(c.status(1).state, NodeState::Fenced);
    assert!(
        (0..60).all(|b| c.owners(b) == vec![0]),
        "node 1 serves what nodes 2 and 3 gave up: {:?} {}",
        (0..60).map(|b| c.owners(b)).collect::<Vec<_>>(),
        c.nodes
            .iter()
            .map(|n| n
                .as_ref()
                .map(|n| n.debug_line(Time(c.now)))
                .unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    );
    c.install_broken[1] = false;
    c.run(1500);
    assert!(c.leases[1] > c.now);
    assert!((0..60).all(|b| c.owners(b).len() == 1 && c.owners(b)[0] != 2));
    assert_eq!((0..60).filter(|&b| c.owners(b) == vec![1]).count(), 30);
}

/// Found by the simulator once it failed installs: the retry after a
/// failed install was computed over an empty table, so the slots the failed
/// one was releasing came out `NOT_OWNED` and their connections, which the
/// data plane still held, were cut long before their drain timeout.
#[test]
fn a_retried_install_keeps_the_connections_a_failed_one_was_releasing() {
    let mut c = Cluster::new(&[Role::Active; 3], 60);
    c.run(1000);
    let mine: Vec<usize> = (0..60).filter(|&b| c.owners(b) == vec![1]).collect();
    assert_eq!(mine.len(), 20);
    // Node 2's kernel holds connections in its buckets. Its agent dies; the
    // others fence it and take its buckets over (their handoff waits for
    // its connections). It restarts and takes the live table over, which
    // releases what the others now own, while its data plane refuses
    // installs for a while (two retries fail).
    c.held[1] = 3;
    let old_epoch = c.status(1).epoch;
    c.nodes[1] = None;
    c.run(600);
    assert!(mine
        .iter()
        .all(|&b| c.owners(b).len() == 1 && c.owners(b)[0] != 1));
    c.install_broken[1] = true;
    c.restart(1, 2);
    let (t, live) = (Time(c.now), c.states[1].clone());
    c.node(1).adopt_dataplane(t, old_epoch, &live, &[]);
    c.shell(1, t);
    c.run(120);
    assert!(
        mine.iter().all(|&b| c.states[1][b] == OWNED),
        "nothing installed yet"
    );
    c.install_broken[1] = false;
    let mut seen = Vec::new();
    for _ in 0..300 {
        c.run(1);
        let states: Vec<u8> = mine.iter().map(|&b| c.states[1][b]).collect();
        assert!(
            !states.contains(&NOT_OWNED),
            "t={} ms: node 2 let go of connections it still holds: {states:?}",
            c.now / MS
        );
        seen.extend(states);
    }
    assert!(seen.contains(&RELEASING), "the retry released nothing");
    // Once they close, the handoff ends as usual and node 2 takes its
    // share back.
    c.held[1] = 0;
    c.run(1000);
    assert!(!c.states[1].contains(&RELEASING));
    assert!((0..60).all(|b| c.owners(b).len() == 1));
    assert_eq!((0..60).filter(|&b| c.owners(b) == vec![1]).count(), 20);
}

/// Found by the simulator (seed 1233 at the time, S1): a restarted agent
/// kept the lease its previous life left in the data plane, which peers stop
/// honouring once they hear the new incarnation.
#[test]
fn an_agent_restarted_on_a_live_data_plane_revokes_the_lease_it_finds() {
    let mut c = Cluster::new(&[Role::Active, Role::Witness, Role::Active], 60);
    c.run(1000);
    assert!(c.leases[2] > c.now, "node 3 serves");
    let live = c.states[2].clone();
    assert!(live.contains(&OWNED));
    let old_epoch = c.status(2).epoch;
    c.restart(2, 2);
    let t = Time(c.now);
    c.node(2).adopt_dataplane(t, old_epoch, &live, &[]);
    c.dp_log[2].clear();
    c.shell(2, t);
    let first = c.dp_log[2].first();
    assert_eq!(
        first,
        Some(&Some(0)),
        "the first thing a new life does to the adopted data plane is to end its lease (None: an install): {first:?}"
    );
    assert!(c.leases[2] <= c.now);
    // It serves again once it rejoined, on a lease of its own.
    c.run(1000);
    assert!(c.leases[2] > c.now);
    assert!((0..60).all(|b| c.owners(b).len() == 1));
}

/// Found by the simulator (seed 2253 at the time): a peer that committed an
/// epoch the others never learnt, then died, kept them from coordinating
/// (they waited to catch up from it), forever if it never came back.
#[test]
fn the_others_go_on_when_the_only_node_that_learnt_an_epoch_dies() {
    let mut c = Cluster::new(&[Role::Active; 3], 60);
    c.run(1000);
    let epoch = c.status(0).epoch;
    // Node 1 coordinates a drain of node 3: nodes 2 and 3 accept it, but
    // they never hear the commit, only node 1's heartbeats saying it is
    // at the next epoch. Then node 1 dies for good.
    c.mute_commits[0] = true;
    let t = Time(c.now);
    c.node(2).drain(t, None);
    for _ in 0..1000 {
        c.run(1);
        if c.status(0).epoch > epoch {
            break;
        }
    }
    assert_eq!(c.status(0).epoch, epoch + 1, "node 1 committed");
    c.run(60);
    assert_eq!(c.status(1).epoch, epoch, "node 2 never heard the commit");
    c.nodes[0] = None;
    c.run(3000);
    let (s2, s3) = (c.status(1), c.status(2));
    assert!(
        s2.epoch > epoch + 1 && s3.epoch == s2.epoch,
        "nodes 2 and 3 are stuck at epochs {} and {}",
        s2.epoch,
        s3.epoch
    );
    assert!(
        (0..60).all(|b| c.owners(b) == vec![1]),
        "node 2 serves everything"
    );
}

#[test]
fn a_node_with_a_divergent_state_at_the_same_epoch_is_not_vouched_for_and_is_repaired() {
    // History B: only nodes 1 and 2 formed epoch 1, so node 2 owns half.
    let mut b = Cluster::new(&[Role::Active; 3], 90);
    b.nodes[2] = None;
    b.run(1000);
    assert_eq!(b.status(1).epoch, 1);
    let other_history = b.saved[1].clone().expect("written");
    // History A: all three formed epoch 1 together.
    let mut c = Cluster::new(&[Role::Active; 3], 90);
    c.run(1000);
    assert_eq!(c.status(1).epoch, 1);
    // Node 2 restarts from B's state: same epoch, another map.
    c.saved[1] = Some(other_history);
    c.restart(1, 5);
    for _ in 0..2000 {
        c.run(1);
        for bk in 0..90 {
            assert!(
                c.owners(bk).len() <= 1,
                "bucket {bk} served by {:?} at t={} ms",
                c.owners(bk),
                c.now / MS
            );
        }
    }
    assert_eq!((0..90).filter(|&b| c.owners(b) == vec![1]).count(), 30);
    assert!((0..90).all(|b| c.owners(b).len() == 1));
}

#[test]
fn raising_dead_after_on_one_node_does_not_stretch_its_lease_beyond_its_peers_promises() {
    let mut c = Cluster::new(&[Role::Active; 3], 64);
    c.run(1000);
    let mut cfg = c.configs[0].clone();
    cfg.dead_after_ns = 2000 * MS;
    c.configs[0] = cfg.clone();
    let t = Time(c.now);
    c.node(0).reconfigure(t, cfg).expect("same fingerprint");
    let peers_lease = xnlb_proto::quorum::lease_ns(250 * MS);
    for _ in 0..1000 {
        c.run(1);
        assert!(
            c.leases[0] <= c.now + peers_lease,
            "lease {} ms ahead, peers promised only {} ms",
            (c.leases[0] - c.now) / MS,
            peers_lease / MS
        );
    }
    assert!(c.leases[0] > c.now, "it still serves");
}

#[test]
fn a_recovering_health_check_ends_neither_an_operator_drain_nor_a_failback_hold() {
    let mut c = Cluster::new(&[Role::Active; 3], 30);
    c.run(1000);
    let t = Time(c.now);
    c.node(2).set_health_drain(t, true);
    c.node(2).drain(t, None);
    c.run(500);
    assert_eq!(c.status(2).state, NodeState::Drained);
    let t = Time(c.now);
    c.node(2).set_health_drain(t, false);
    c.run(500);
    assert_eq!(
        c.status(2).state,
        NodeState::Drained,
        "the operator's drain outlives the health check"
    );
    // Resume while the check fails again: still drained until it passes.
    let t = Time(c.now);
    c.node(2).set_health_drain(t, true);
    c.node(2).resume(t);
    c.run(500);
    assert_eq!(c.status(2).state, NodeState::Drained);
    assert_eq!(c.node(2).drain_reasons(), vec!["health check failing"]);
    let t = Time(c.now);
    c.node(2).set_health_drain(t, false);
    c.run(500);
    assert_eq!(c.status(2).state, NodeState::Active);
}

#[test]
fn restore_refuses_corrupt_truncated_and_other_version_state_and_says_which() {
    let mut c = Cluster::new(&[Role::Active; 3], 64);
    c.run(500);
    let good = c.saved[0].clone().expect("written");
    let cfg = c.configs[0].clone();
    let err = |bytes: &[u8]| {
        Node::restore(cfg.clone(), Time(0), 9, bytes)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "accepted".into())
    };
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 1;
    assert!(err(&flipped).contains("checksum"), "{}", err(&flipped));
    assert!(err(&good[..good.len() - 3]).contains("checksum"));
    assert!(err(&[]).contains("not an xnlb state file"));
    let mut v1 = good.clone();
    v1[0] = 1;
    assert!(err(&v1).contains("version 1"), "{}", err(&v1));
    let mut other = c.configs[0].clone();
    other.buckets = 128;
    let e = Node::restore(other, Time(0), 9, &good)
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("layout")));
    assert!(Node::restore(cfg, Time(0), 9, &good).is_ok());
}

#[test]
fn a_restart_with_the_wall_clock_stepped_back_still_gets_a_larger_incarnation() {
    let mut c = Cluster::new(&[Role::Active; 3], 64);
    c.run(500);
    let before = c.nodes[0].as_ref().map(|n| n.incarnation()).unwrap_or(0);
    c.restart(0, 1); // the clock says "1": earlier than the last start
    let after = c.nodes[0].as_ref().map(|n| n.incarnation()).unwrap_or(0);
    assert!(after > before, "{after} must exceed {before}");
    c.run(1000);
    assert_eq!(c.status(0).state, NodeState::Active, "peers accept it");
}

#[test]
fn a_key_holders_snapshot_with_foreign_priority_lists_is_refused_not_applied() {
    let mut c = Cluster::new(&[Role::Active; 3], 64);
    c.run(1000);
    let mut forged = c.nodes[0]
        .as_ref()
        .map(|n| n.cluster_state().clone())
        .expect("running");
    forged.epoch += 5;
    // One more priority list than slots: assignment would index past the
    // end of the map.
    forged.priorities.push(vec![1, 2]);
    let bytes = forged.to_bytes();
    let msg = wire::Message {
        header: wire::Header {
            from: 2,
            to: 1,
            incarnation: c.nodes[1].as_ref().map_or(1, |n| n.incarnation()),
            seq: 1 << 40,
            fingerprint: c.configs[0].fingerprint,
        },
        body: Body::SnapshotChunk {
            epoch: forged.epoch,
            digest: forged.digest(),
            index: 0,
            count: 1,
            data: bytes,
        },
    };
    let auth = xnlb_proto::auth::Authenticator::new(&c.configs[0].key);
    let datagram = wire::encode(&auth, &msg).expect("fits a datagram");
    let t = Time(c.now);
    c.node(0).handle_datagram(t, 0, &datagram);
    let t = Time(c.now);
    c.node(2).drain(t, Some(0)); // make the cluster apply ops on top of it
    c.run(1000);
    let s = c.status(0);
    let held = c.nodes[0].as_ref().map(|n| n.cluster_state().clone());
    assert!(
        held.is_some_and(|h| h.priorities.is_empty()),
        "the forged state was adopted"
    );
    assert_eq!(
        c.nodes[0].as_ref().map(|n| n.digest()),
        c.nodes[1].as_ref().map(|n| n.digest())
    );
    assert!(s.dropped.iter().any(|(r, n)| *r == "malformed" && *n > 0));
    // (The forged sequence number also poisons node 1's replay window for
    // member 2, as any key holder could: no overlap is what must hold.)
    assert!((0..64).all(|b| c.owners(b).len() <= 1));
}

#[test]
fn a_node_that_has_heard_no_peer_does_not_report_a_quorum() {
    // Right after a start every peer is "suspect" (not yet dead) for
    // dead_after: the core gives them that grace, but the operator's status
    // must not claim a quorum of voters nobody has heard.
    let mut c = Cluster::new(&[Role::Active; 3], 64);
    c.nodes[1] = None;
    c.nodes[2] = None;
    c.run(20);
    let s = c.status(0);
    assert_eq!(
        (s.quorum.has, s.quorum.votes),
        (false, 1),
        "alone for 20 ms: {:?}",
        s.quorum
    );
}

#[test]
fn a_node_fed_replayed_votes_of_its_previous_life_is_repaired_by_snapshot() {
    // Node 1 takes part, then leaves; its state file is lost and it starts
    // afresh. Authentic datagrams the others sent it in its previous life
    // (replayed by an on-path attacker, or delayed) include promises and
    // acceptances of the ballots it used then, which it uses again: it
    // "decides" an epoch alone that nobody accepted in this life. It must
    // serve nothing from it, and once it hears the others it must be
    // repaired (a snapshot) instead of refusing their commits forever.
    let mut c = Cluster::new(&[Role::Active; 3], 64);
    c.run(500);
    let old: Vec<(usize, Vec<u8>)> = c.recorded[1]
        .iter()
        .chain(&c.recorded[2])
        .filter(|(to, _, _)| *to == 1)
        .map(|(_, link, bytes)| (*link, bytes.clone()))
        .collect();
    let now = Time(c.now);
    c.node(0).stop(now);
    c.run(1500);
    c.nodes[0] = Some(Node::new(c.configs[0].clone(), Time(c.now), 7).expect("fresh"));
    c.durable[0] = 0;
    c.mute[0] = true;
    for (link, bytes) in &old {
        c.now += MS / 10;
        let now = Time(c.now);
        c.node(0).handle_datagram(now, *link, bytes);
        c.shell(0, now);
        for b in 0..64 {
            assert!(c.owners(b).len() <= 1, "bucket {b}: {:?}", c.owners(b));
        }
    }
    c.mute[0] = false;
    c.run(2000);
    let s0 = c.status(0);
    let s1 = c.status(1);
    assert_eq!(s0.epoch, s1.epoch, "node 1 caught up: {s0:?}");
    for b in 0..64 {
        assert_eq!(c.owners(b).len(), 1, "bucket {b} after it rejoined");
    }
    assert!((0..64).any(|b| c.owners(b) == [0]), "node 1 serves again");
}
