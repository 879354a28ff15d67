//! Deterministic cluster simulator (feature `sim`).
//!
//! Many [`Node`]s run in one thread in virtual time over a simulated network
//! ([`net`]) with loss, duplication, reordering, delay, symmetric and
//! asymmetric partitions, link failures, crashes, restarts (new incarnation,
//! persisted state kept), frozen processes, clock-rate skew within
//! [`quorum::MAX_CLOCK_SKEW_PPM`] and operator commands. Each node's data
//! plane is modelled as its last `Install` plus its last `Lease`, evaluated on
//! that node's own clock, and the invariants of DESIGN 3 are checked after
//! every step ([`check`]). Everything derives from one seed.
//!
//! Storage is modelled as the agent's writer thread: each `Persist` takes a
//! few milliseconds, a newer one queues behind the one in flight, transmits
//! that wait for a write are held until it lands, a crash loses the queued
//! write and maybe the one in flight, and a broken disk fails writes. Runs
//! also restart nodes from corrupt state (which must be refused, then
//! recovered as the README says), crash proposers in the middle of a round
//! (no ballot may carry two values), and change one node's `dead_after`
//! by reload and by restart (leases must follow the peers' promises).

pub mod bench;
pub mod check;
pub mod net;

use crate::assign::ClusterState;
use crate::config::{Config, Failback, MemberConfig, Role};
use crate::node::{Action as NodeAction, Node, Transmit};
use crate::quorum;
use crate::time::{Time, MS};
use net::{Flight, Net, Rng};
use std::cmp::Reverse;
use xnlb_common::slot_state::{ACQUIRING, OWNED, RELEASING};

/// One simulated member: its process (if running) and its data plane.
pub struct SimNode {
    /// Member id.
    pub id: u8,
    /// The process; `None` while crashed or after `stop`.
    pub node: Option<Node>,
    /// Last `Persist` bytes (survive crashes).
    pub persisted: Option<Vec<u8>>,
    /// Last incarnation used.
    pub incarnation: u64,
    /// Clock rate error, ppm.
    pub ppm: i64,
    /// Clock offset (local time at real 0).
    pub offset: u64,
    /// Frozen (SIGSTOP) until this real time.
    pub frozen_until: Option<u64>,
    /// Left after `stop` (not crashed).
    pub stopped: bool,
    /// Data plane: slot states (buckets then singles).
    pub dp: Vec<u8>,
    /// Data plane: lease deadline on the local clock.
    pub lease: u64,
    /// Next `handle_timeout` (real).
    pub wake: Option<u64>,
    /// Datagrams that arrived while frozen.
    pub inbox: Vec<Flight>,
    /// When the data plane reports its releasing flows finished (real).
    pub flows_at: Option<u64>,
    /// Wants to be drained (operator).
    pub drained_by_operator: bool,
    /// The write in flight: (seq, bytes, real completion time).
    pub writing: Option<(u64, Vec<u8>, u64)>,
    /// The next write, queued behind the one in flight.
    pub queued_write: Option<(u64, Vec<u8>)>,
    /// Transmits waiting for a write.
    pub held: Vec<Transmit>,
    /// Writes fail until this real time.
    pub disk_broken_until: u64,
    /// The state file was corrupted: a restart must be refused, and the
    /// node comes back only through the documented recovery.
    pub corrupt: bool,
    /// `dead_after` override from a reload or a restart with another config.
    pub dead_after_ns: Option<u64>,
    /// Highest write that landed for the running process.
    pub durable: u64,
}

/// What a run is made of.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Seed.
    pub seed: u64,
    /// Node count.
    pub nodes: usize,
    /// Buckets.
    pub buckets: u32,
    /// Single slots.
    pub singles: usize,
    /// Links per node.
    pub links: usize,
    /// Roles by index.
    pub roles: Vec<Role>,
    /// Weights by index.
    pub weights: Vec<u32>,
    /// Failback by index.
    pub failback: Vec<Failback>,
    /// Length of the random-fault phase (ns).
    pub chaos_ns: u64,
    /// Largest clock-rate error of any node (ppm). Within the protocol's
    /// assumed bound ([`quorum::MAX_CLOCK_SKEW_PPM`]) by default; a test
    /// raises it past the bound to show the checks then catch overlaps.
    pub skew_ppm: u64,
}

impl Scenario {
    /// The scenario a seed stands for (node count fixed by the caller).
    pub fn generate(seed: u64, nodes: usize) -> Scenario {
        let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(nodes as u64));
        let nodes = nodes.clamp(3, 64);
        let buckets = match (nodes, rng.range(0, 4)) {
            (n, _) if n > 17 => [256u32, 1024][rng.range(0, 2) as usize],
            (_, 0) => 4096,
            (_, 1) => 1024,
            (_, 2) => 64,
            _ => 256,
        };
        let mut roles = vec![Role::Active; nodes];
        if nodes >= 4 && rng.chance(0.3) {
            roles[nodes - 1] = Role::Standby;
        }
        if nodes >= 3 && rng.chance(0.25) {
            roles[nodes - 2] = Role::Witness;
        }
        let weights = if rng.chance(0.3) {
            (0..nodes).map(|_| rng.range(1, 10) as u32).collect()
        } else {
            vec![100; nodes]
        };
        let failback = (0..nodes)
            .map(|_| {
                if rng.chance(0.1) {
                    Failback::Manual
                } else {
                    Failback::Auto
                }
            })
            .collect();
        let chaos_ns = if nodes > 17 {
            1500 * MS
        } else {
            rng.range(1000, 4000) * MS
        };
        Scenario {
            seed,
            nodes,
            buckets,
            singles: rng.range(0, 3) as usize,
            links: rng.range(1, 3) as usize,
            roles,
            weights,
            failback,
            chaos_ns,
            skew_ppm: quorum::MAX_CLOCK_SKEW_PPM * 9 / 10,
        }
    }

    /// The config of member index `i`.
    pub fn config(&self, i: usize) -> Config {
        let members: Vec<MemberConfig> = (0..self.nodes)
            .map(|k| MemberConfig {
                id: k as u8 + 1,
                role: self.roles[k],
                weight: self.weights[k],
                addrs: self.links,
            })
            .collect();
        let mut c = Config::with_defaults(i as u8 + 1, members);
        c.buckets = self.buckets;
        let servers: Vec<u8> = (0..self.nodes)
            .filter(|&k| self.roles[k] != Role::Witness)
            .map(|k| k as u8 + 1)
            .collect();
        c.single_slots = (0..self.singles)
            .map(|s| {
                let mut l = servers.clone();
                let k = s % l.len().max(1);
                l.rotate_left(k);
                l
            })
            .collect();
        c.drain_timeout_ns = 1000 * MS;
        c.failback = self.failback[i];
        c
    }
}

/// A fault or command at a moment of the run.
#[derive(Clone, Debug)]
pub enum Action {
    /// Kill the process (data plane stays pinned).
    Crash(usize),
    /// Start it again with a new incarnation and its persisted state.
    Restart(usize),
    /// SIGSTOP for a duration (ns).
    Freeze(usize, u64),
    /// Drop datagrams from `.0` to `.1`.
    Cut(usize, usize),
    /// Heal every cut and link.
    Heal,
    /// Take one link of a node down.
    LinkDown(usize, usize),
    /// Set loss and duplication probabilities.
    Lossy(f64, f64),
    /// Operator drain.
    Drain(usize),
    /// Operator resume.
    Resume(usize),
    /// Operator stop.
    Stop(usize),
    /// Operator rebalance.
    Rebalance(usize),
    /// The node's disk fails every write for a duration (ns).
    DiskFail(usize, u64),
    /// Crash, corrupt the state file, restart.
    CorruptRestart(usize),
    /// Crash whichever node is in phase 2 of a proposal now; restart it
    /// after a duration (ns).
    CrashProposer(u64),
    /// Reload node `.0` with another `dead_after` (`None`: the scenario's).
    Retime(usize, Option<u64>),
}

/// The simulated cluster.
pub struct World {
    /// The scenario.
    pub scenario: Scenario,
    /// Random source for the network and the data planes.
    pub rng: Rng,
    /// Real time, ns.
    pub now: u64,
    /// Network.
    pub net: Net,
    /// Members by index (id = index + 1).
    pub nodes: Vec<SimNode>,
    /// Scheduled actions (time, action), kept sorted.
    pub actions: Vec<(u64, Action)>,
    /// `heard[j][i]`: latest real send time of a datagram of i delivered at j.
    pub heard: Vec<Vec<u64>>,
    /// `rt[i][j]`: latest real send time of i's datagram that j had received
    /// before sending one that reached i (S2 oracle).
    pub rt: Vec<Vec<u64>>,
    /// First invariant violation.
    pub violation: Option<String>,
    /// Steps executed.
    pub steps: u64,
    /// A corrupt-state restart was scheduled in this run.
    pub corrupt_scheduled: bool,
    /// Largest promise horizon any node had so far (for the S2 oracle).
    pub max_horizon_seen: u64,
    /// Value of every phase-2 proposal seen, by (epoch, ballot).
    pub ballots: std::collections::HashMap<(u64, u64), Vec<crate::wire::Op>>,
    /// Print every event (XNLB_SIM_TRACE=1).
    pub trace: bool,
    /// Also print lease extensions (XNLB_SIM_TRACE=2).
    pub trace_lease: bool,
    /// Also print protocol messages other than heartbeats (XNLB_SIM_TRACE=3).
    pub trace_msgs: bool,
}

/// Whether a slot state accepts new flows.
pub fn accepts_new(s: u8) -> bool {
    s == OWNED || s == ACQUIRING
}

impl World {
    /// Starts every node at real time 0 (clocks skewed and offset).
    pub fn new(scenario: Scenario) -> World {
        let mut rng = Rng::new(scenario.seed);
        let n = scenario.nodes;
        let slots = scenario.buckets as usize + scenario.singles;
        let eps = scenario.skew_ppm as i64;
        let mut nodes = Vec::new();
        for i in 0..n {
            let ppm = rng.range(0, 2 * eps as u64 + 1) as i64 - eps;
            let offset = rng.range(1, 1_000_000) * MS;
            nodes.push(SimNode {
                id: i as u8 + 1,
                node: None,
                persisted: None,
                incarnation: 0,
                ppm,
                offset,
                frozen_until: None,
                stopped: false,
                dp: vec![0; slots],
                lease: 0,
                wake: None,
                inbox: Vec::new(),
                flows_at: None,
                drained_by_operator: false,
                writing: None,
                queued_write: None,
                held: Vec::new(),
                disk_broken_until: 0,
                corrupt: false,
                dead_after_ns: None,
                durable: 0,
            });
        }
        let mut w = World {
            net: Net::new(n, scenario.links),
            scenario,
            rng,
            now: 0,
            nodes,
            actions: Vec::new(),
            heard: vec![vec![0; n]; n],
            rt: vec![vec![0; n]; n],
            violation: None,
            ballots: Default::default(),
            max_horizon_seen: 0,
            corrupt_scheduled: false,
            steps: 0,
            trace: std::env::var("XNLB_SIM_TRACE").is_ok_and(|v| v != "0"),
            trace_lease: std::env::var("XNLB_SIM_TRACE").is_ok_and(|v| v == "2"),
            trace_msgs: std::env::var("XNLB_SIM_TRACE").is_ok_and(|v| v == "3"),
        };
        for i in 0..n {
            w.start(i);
        }
        w
    }

    /// Local clock of node `i` at real time `real`.
    pub fn local(&self, i: usize, real: u64) -> u64 {
        let n = &self.nodes[i];
        (n.offset as i128 + real as i128 * (1_000_000 + n.ppm as i128) / 1_000_000) as u64
    }

    /// Real time at which node `i`'s clock reads `local` (rounded up).
    pub fn real_of(&self, i: usize, local: u64) -> u64 {
        let n = &self.nodes[i];
        let d = local as i128 - n.offset as i128;
        if d <= 0 {
            return 0;
        }
        let r = (d * 1_000_000 + (1_000_000 + n.ppm as i128) - 1) / (1_000_000 + n.ppm as i128);
        r as u64
    }

    /// Whether node `i`'s data plane accepts new flows of slot `s` now.
    pub fn serving(&self, i: usize, s: usize) -> bool {
        accepts_new(self.nodes[i].dp[s]) && self.nodes[i].lease > self.local(i, self.now)
    }

    /// The config node `i` runs with now (the scenario's, with its
    /// `dead_after` override).
    pub fn config(&self, i: usize) -> Config {
        let mut c = self.scenario.config(i);
        if let Some(d) = self.nodes[i].dead_after_ns {
            c.dead_after_ns = d;
        }
        c
    }

    fn start(&mut self, i: usize) {
        let cfg = self.config(i);
        let now = Time(self.local(i, self.now));
        if self.nodes[i].corrupt {
            let bytes = self.nodes[i].persisted.clone().unwrap_or_default();
            if Node::restore(cfg.clone(), now, self.nodes[i].incarnation + 1, &bytes).is_ok() {
                self.fail(format!("node {} restored from a corrupt state file", i + 1));
                return;
            }
            // The README's recovery: remove the state file once the others
            // show this member fenced (or never admitted), then start fresh.
            if !self.fenced_by_others(i) {
                return;
            }
            self.nodes[i].corrupt = false;
            self.nodes[i].persisted = None;
        }
        self.end_process_io(i);
        let sn = &mut self.nodes[i];
        // Incarnations come from the wall clock, which may step back: the
        // core takes max(persisted + 1, given). (Without a state file a
        // stepped-back clock does lock the node out until it passes its old
        // incarnation: peers cannot tell that from a replay.)
        sn.incarnation = if sn.persisted.is_some() && self.rng.chance(0.1) {
            1
        } else {
            sn.incarnation + 1 + (self.rng.next_u64() % 3)
        };
        let node = match &sn.persisted {
            Some(p) => Node::restore(cfg, now, sn.incarnation, p),
            None => Node::new(cfg, now, sn.incarnation),
        };
        match node {
            Ok(node) => {
                sn.incarnation = node.incarnation();
                sn.durable = 0;
                sn.node = Some(node);
                sn.stopped = false;
                sn.frozen_until = None;
                sn.inbox.clear();
                self.drive(i);
            }
            Err(e) => self.fail(format!("node {} failed to start: {e}", i + 1)),
        }
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(format!("t={}ms: {what}", self.now / MS));
        }
    }

    /// Drains actions, reports and transmits of node `i` after an input.
    fn drive(&mut self, i: usize) {
        loop {
            let ev = match self.nodes[i].node.as_mut() {
                Some(n) => n.poll_action(),
                None => None,
            };
            let Some(ev) = ev else { break };
            if self.trace {
                match &ev {
                    NodeAction::Persist { .. } => {}
                    NodeAction::Install { states, singles, epoch } => println!(
                        "{:>9.3} n{} Install epoch {epoch} owned {} releasing {} acquiring {} singles {:?}",
                        self.now as f64 / 1e6,
                        i + 1,
                        states.iter().filter(|&&s| s == OWNED).count(),
                        states.iter().filter(|&&s| s == RELEASING).count(),
                        states.iter().filter(|&&s| s == ACQUIRING).count(),
                        singles
                    ),
                    NodeAction::Lease { until } => {
                        if self.trace_lease {
                            println!("{:>9.3} n{} Lease {}", self.now as f64 / 1e6, i + 1, until.0 as i128 - self.local(i, self.now) as i128)
                        }
                    }
                    e => println!("{:>9.3} n{} {e:?}", self.now as f64 / 1e6, i + 1),
                }
            }
            match ev {
                NodeAction::Install {
                    states, singles, ..
                } => {
                    let sn = &mut self.nodes[i];
                    sn.dp = states;
                    sn.dp.extend(singles);
                    if sn.dp.contains(&RELEASING) && sn.flows_at.is_none() {
                        sn.flows_at = if self.rng.chance(0.85) {
                            Some(self.now + self.rng.range(0, 300) * MS)
                        } else {
                            None
                        };
                    }
                    check::s1_node(self, i);
                }
                NodeAction::Lease { until } => {
                    let local = self.local(i, self.now);
                    let was_valid = self.nodes[i].lease > local;
                    self.nodes[i].lease = until.0;
                    if until.0 > local {
                        check::s2_lease(self, i, until.0);
                        if !was_valid {
                            check::s1_node(self, i);
                        }
                    }
                }
                NodeAction::Persist { seq, state } => {
                    let sn = &mut self.nodes[i];
                    if sn.writing.is_none() {
                        let done = self.now + self.rng.range(0, 4 * MS);
                        sn.writing = Some((seq, state, done));
                    } else {
                        sn.queued_write = Some((seq, state));
                    }
                }
                NodeAction::Stopped => {
                    self.nodes[i].node = None;
                    self.nodes[i].stopped = true;
                    self.nodes[i].wake = None;
                    return;
                }
            }
        }
        while let Some(report) = self.nodes[i].node.as_mut().and_then(|n| n.poll_report()) {
            if self.trace {
                println!("{:>9.3} n{} {report:?}", self.now as f64 / 1e6, i + 1);
            }
        }
        loop {
            let tx = match self.nodes[i].node.as_mut() {
                Some(n) => n.poll_transmit(),
                None => None,
            };
            let Some(tx) = tx else { break };
            self.send_or_hold(i, tx);
        }
        self.check_ballot(i);
        if let Some(n) = self.nodes[i].node.as_ref() {
            self.max_horizon_seen = self.max_horizon_seen.max(n.promise_horizon());
        }
        self.schedule_wake(i);
    }

    fn schedule_wake(&mut self, i: usize) {
        let wake = self.nodes[i]
            .node
            .as_ref()
            .and_then(|n| n.poll_timeout())
            .map(|t| self.real_of(i, t.0).max(self.now));
        self.nodes[i].wake = wake;
    }

    /// Whether every running node other than `i` holds a state in which `i`
    /// does not participate.
    fn fenced_by_others(&self, i: usize) -> bool {
        let id = i as u8 + 1;
        let mut any = false;
        for (j, n) in self.nodes.iter().enumerate() {
            if j == i {
                continue;
            }
            if let Some(nd) = n.node.as_ref() {
                any = true;
                if nd.cluster_state().participates(id) {
                    return false;
                }
            }
        }
        any
    }

    /// Sends `tx`, or holds it until the write it waits for has landed.
    fn send_or_hold(&mut self, i: usize, tx: Transmit) {
        let durable = self.durable_seq(i);
        if tx.after_persist > durable {
            self.nodes[i].held.push(tx);
            return;
        }
        self.send(i, tx);
    }

    /// Highest write that landed for node `i`'s running process.
    fn durable_seq(&self, i: usize) -> u64 {
        self.nodes[i].durable
    }

    /// The write in flight at node `i` completes (or fails on a broken disk).
    fn finish_write(&mut self, i: usize) {
        let Some((seq, state, _)) = self.nodes[i].writing.take() else {
            return;
        };
        let ok = self.now >= self.nodes[i].disk_broken_until;
        if ok {
            self.nodes[i].persisted = Some(state);
            self.nodes[i].durable = self.nodes[i].durable.max(seq);
        }
        if let Some((s, st)) = self.nodes[i].queued_write.take() {
            let done = self.now + self.rng.range(0, 4 * MS);
            self.nodes[i].writing = Some((s, st, done));
        }
        let held = std::mem::take(&mut self.nodes[i].held);
        for tx in held {
            if tx.after_persist <= seq && !ok {
                continue; // a failed write's datagrams never leave
            }
            self.send_or_hold(i, tx);
        }
        let now = Time(self.local(i, self.now));
        if let Some(n) = self.nodes[i].node.as_mut() {
            n.persisted(now, seq, ok);
        }
        self.drive(i);
    }

    fn send(&mut self, i: usize, tx: Transmit) {
        let to = tx.to as usize - 1;
        if to >= self.nodes.len() {
            self.fail(format!("node {} sent to unknown member {}", i + 1, tx.to));
            return;
        }
        if tx.bytes.len() > crate::wire::MAX_DATAGRAM {
            self.fail(format!("node {} sent {} bytes", i + 1, tx.bytes.len()));
        }
        let hb = self.heard[i][to];
        self.net
            .send(&mut self.rng, self.now, i, to, tx.link, hb, tx.bytes);
    }

    /// Schedules an action.
    pub fn schedule(&mut self, at: u64, action: Action) {
        let pos = self.actions.partition_point(|(t, _)| *t <= at);
        self.actions.insert(pos, (at, action));
    }

    /// Kills node `i`'s process: its queued write and held datagrams are
    /// lost; the write in flight lands or not.
    fn crash(&mut self, i: usize) {
        self.end_process_io(i);
        let sn = &mut self.nodes[i];
        sn.node = None;
        sn.wake = None;
        sn.frozen_until = None;
        sn.inbox.clear();
    }

    fn end_process_io(&mut self, i: usize) {
        let lands = self.rng.chance(0.5);
        let sn = &mut self.nodes[i];
        if let Some((_, state, _)) = sn.writing.take() {
            if lands && self.now >= sn.disk_broken_until {
                sn.persisted = Some(state);
            }
        }
        sn.queued_write = None;
        sn.held.clear();
    }

    /// No ballot may carry two values: a restarted proposer must not reuse
    /// one (its rounds are persisted before its Prepare leaves).
    fn check_ballot(&mut self, i: usize) {
        let Some((epoch, ballot, ops)) = self.nodes[i]
            .node
            .as_ref()
            .and_then(|n| n.proposal_in_flight())
            .map(|(e, b, o)| (e, b, o.to_vec()))
        else {
            return;
        };
        match self.ballots.get(&(epoch, ballot)) {
            Some(prev) if *prev != ops => self.fail(format!(
                "ballot {ballot:#x} of epoch {epoch} carried two values: {prev:?} and {ops:?}"
            )),
            Some(_) => {}
            None => {
                self.ballots.insert((epoch, ballot), ops);
            }
        }
    }

    fn runnable(&self, i: usize) -> bool {
        self.nodes[i].node.is_some() && self.nodes[i].frozen_until.is_none()
    }

    /// Executes the earliest pending thing; false if nothing is left before `until`.
    pub fn step(&mut self, until: u64) -> bool {
        let mut best: Option<(u64, u8, usize)> = None;
        let mut consider = |t: u64, kind: u8, idx: usize| {
            if best.is_none_or(|b| (t, kind) < (b.0, b.1)) {
                best = Some((t, kind, idx));
            }
        };
        if let Some((t, _)) = self.actions.first() {
            consider(*t, 0, 0);
        }
        if let Some(Reverse(f)) = self.net.queue.peek() {
            consider(f.at, 1, 0);
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(f) = n.frozen_until {
                consider(f, 2, i);
            }
            if n.node.is_some() && n.frozen_until.is_none() {
                if let Some(w) = n.wake {
                    consider(w, 3, i);
                }
                if let Some(f) = n.flows_at {
                    consider(f, 4, i);
                }
                if let Some((_, _, done)) = n.writing {
                    consider(done, 5, i);
                }
            }
        }
        let Some((t, kind, i)) = best else {
            return false;
        };
        if t > until {
            return false;
        }
        self.now = self.now.max(t);
        self.steps += 1;
        match kind {
            0 => {
                let (_, a) = self.actions.remove(0);
                self.apply(a);
            }
            1 => {
                if let Some(Reverse(f)) = self.net.queue.pop() {
                    self.deliver(f);
                }
            }
            2 => {
                self.nodes[i].frozen_until = None;
                let inbox = std::mem::take(&mut self.nodes[i].inbox);
                for f in inbox {
                    self.deliver(f);
                }
                self.timeout(i);
            }
            3 => self.timeout(i),
            5 => self.finish_write(i),
            _ => {
                self.nodes[i].flows_at = None;
                let now = Time(self.local(i, self.now));
                if let Some(n) = self.nodes[i].node.as_mut() {
                    n.report_tracked_flows(now, 0);
                }
                self.drive(i);
            }
        }
        true
    }

    fn timeout(&mut self, i: usize) {
        let now = Time(self.local(i, self.now));
        if let Some(n) = self.nodes[i].node.as_mut() {
            n.handle_timeout(now);
        }
        self.drive(i);
    }

    fn deliver(&mut self, f: Flight) {
        let t = f.to;
        if self.nodes[t].node.is_none() {
            return;
        }
        if self.nodes[t].frozen_until.is_some() {
            self.nodes[t].inbox.push(f);
            return;
        }
        if self.trace_msgs {
            let auth = crate::auth::Authenticator::new(&self.scenario.config(t).key);
            if let Ok(m) = crate::wire::decode(&auth, &f.bytes) {
                if !matches!(m.body, crate::wire::Body::Heartbeat(_)) {
                    println!(
                        "{:>9.3} n{}->n{} {:?}",
                        self.now as f64 / 1e6,
                        f.from + 1,
                        t + 1,
                        m.body
                    );
                }
            }
        }
        self.heard[t][f.from] = self.heard[t][f.from].max(f.sent);
        self.rt[t][f.from] = self.rt[t][f.from].max(f.heard_back);
        let now = Time(self.local(t, self.now));
        if let Some(n) = self.nodes[t].node.as_mut() {
            n.handle_datagram(now, f.link, &f.bytes);
        }
        self.drive(t);
    }

    /// Applies a fault or command now.
    pub fn apply(&mut self, a: Action) {
        if self.trace && !matches!(a, Action::Resume(_)) {
            println!("{:>9.3} ** {a:?}", self.now as f64 / 1e6);
        }
        match a {
            Action::Crash(i) => self.crash(i),
            Action::DiskFail(i, d) => {
                self.nodes[i].disk_broken_until = self.now + d;
            }
            Action::CorruptRestart(i) => {
                self.crash(i);
                if let Some(mut p) = self.nodes[i].persisted.take() {
                    let k = self.rng.range(0, p.len() as u64) as usize;
                    match self.rng.range(0, 3) {
                        0 => p.truncate(k),
                        1 => p[k] ^= 0xff,
                        _ => p[0] = 1, // another (older) format version
                    }
                    // A flip may still decode: only what restore refuses
                    // counts as corrupt.
                    let inc = self.nodes[i].incarnation + 1;
                    let probe = Node::restore(self.config(i), Time(1), inc, &p);
                    self.nodes[i].corrupt = probe.is_err();
                    self.nodes[i].persisted = Some(p);
                }
                self.start(i);
            }
            Action::CrashProposer(d) => {
                let busy = (0..self.nodes.len()).find(|&j| {
                    self.runnable(j)
                        && self.nodes[j]
                            .node
                            .as_ref()
                            .is_some_and(|n| n.proposal_in_flight().is_some())
                });
                if let Some(j) = busy {
                    self.crash(j);
                    self.schedule(self.now + d, Action::Restart(j));
                }
            }
            Action::Retime(i, dead_after) => {
                if let Some(f) = self.nodes[i].frozen_until {
                    // A stopped process reloads when it runs again.
                    self.schedule(f + 1, Action::Retime(i, dead_after));
                    return;
                }
                self.nodes[i].dead_after_ns = dead_after;
                let cfg = self.config(i);
                let now = Time(self.local(i, self.now));
                if self.runnable(i) {
                    if let Some(n) = self.nodes[i].node.as_mut() {
                        if let Err(e) = n.reconfigure(now, cfg) {
                            self.fail(format!("reconfigure of node {} refused: {e}", i + 1));
                        }
                    }
                    self.drive(i);
                }
            }
            Action::Restart(i) => {
                if self.nodes[i].node.is_none() {
                    self.start(i);
                }
            }
            Action::Freeze(i, d) => {
                if self.runnable(i) {
                    self.nodes[i].frozen_until = Some(self.now + d);
                }
            }
            Action::Cut(a, b) => self.net.cut[a][b] = true,
            Action::Heal => self.net.heal(),
            Action::LinkDown(i, l) => {
                if let Some(x) = self.net.link_down[i].get_mut(l) {
                    *x = true;
                }
            }
            Action::Lossy(loss, dup) => {
                self.net.loss = loss;
                self.net.dup = dup;
            }
            Action::Drain(i) | Action::Resume(i) | Action::Stop(i) | Action::Rebalance(i) => {
                if !self.runnable(i) {
                    return;
                }
                let now = Time(self.local(i, self.now));
                if let Some(n) = self.nodes[i].node.as_mut() {
                    match a {
                        Action::Drain(_) => {
                            n.drain(now, None);
                            self.nodes[i].drained_by_operator = true;
                        }
                        Action::Resume(_) => {
                            n.resume(now);
                            self.nodes[i].drained_by_operator = false;
                        }
                        Action::Stop(_) => n.stop(now),
                        _ => n.rebalance(now),
                    }
                }
                self.drive(i);
            }
        }
    }

    /// Runs until real time `t` (or a violation).
    pub fn run_until(&mut self, t: u64) {
        while self.violation.is_none() && self.step(t) {}
        self.now = self.now.max(t);
    }

    /// Schedules random faults over `[from, to)`.
    pub fn schedule_chaos(&mut self, from: u64, to: u64) {
        let n = self.nodes.len();
        let mut t = from;
        let links = self.scenario.links;
        let base_loss = if self.rng.chance(0.5) {
            self.rng.range(0, 10) as f64 / 100.0
        } else {
            0.0
        };
        let dup = if self.rng.chance(0.3) { 0.05 } else { 0.0 };
        self.schedule(from, Action::Lossy(base_loss, dup));
        self.net.jitter = [300_000, 2_000_000, 10_000_000][self.rng.range(0, 3) as usize];
        while t < to {
            t += self.rng.range(50, 700) * MS;
            if t >= to {
                break;
            }
            let i = self.rng.range(0, n as u64) as usize;
            let dur = self.rng.range(50, 1200) * MS;
            match self.rng.range(0, 17) {
                0 | 1 => {
                    self.schedule(t, Action::Crash(i));
                    self.schedule(t + dur, Action::Restart(i));
                }
                2 => {
                    let d = self.rng.range(50, 600) * MS;
                    self.schedule(t, Action::Freeze(i, d));
                }
                3 => {
                    // Symmetric partition: a random side against the rest.
                    let side: Vec<bool> = (0..n).map(|_| self.rng.chance(0.4)).collect();
                    for a in 0..n {
                        for b in 0..n {
                            if side[a] != side[b] {
                                self.schedule(t, Action::Cut(a, b));
                            }
                        }
                    }
                    self.schedule(t + dur, Action::Heal);
                }
                4 => {
                    // Asymmetric: i's datagrams to some nodes are lost, it still hears them.
                    for b in 0..n {
                        if b != i && self.rng.chance(0.6) {
                            self.schedule(t, Action::Cut(i, b));
                        }
                    }
                    self.schedule(t + dur, Action::Heal);
                }
                5 => {
                    // Asymmetric the other way: i hears nobody, they hear it.
                    for b in 0..n {
                        if b != i {
                            self.schedule(t, Action::Cut(b, i));
                        }
                    }
                    self.schedule(t + dur, Action::Heal);
                }
                6 => {
                    let l = self.rng.range(0, links as u64) as usize;
                    self.schedule(t, Action::LinkDown(i, l));
                    self.schedule(t + dur, Action::Heal);
                }
                7 => {
                    self.schedule(t, Action::Drain(i));
                    self.schedule(t + dur, Action::Resume(i));
                }
                8 => {
                    self.schedule(t, Action::Stop(i));
                    self.schedule(t + dur + 300 * MS, Action::Restart(i));
                }
                9 => self.schedule(t, Action::Rebalance(i)),
                12 => {
                    // A broken disk, and sometimes a crash while it is.
                    self.schedule(t, Action::DiskFail(i, dur));
                    if self.rng.chance(0.5) {
                        self.schedule(t + dur / 2, Action::Crash(i));
                        self.schedule(t + dur, Action::Restart(i));
                    }
                }
                // One lost state file at a time: losing several at once is
                // beyond what any quorum protocol recovers from by itself.
                13 if !self.corrupt_scheduled => {
                    self.corrupt_scheduled = true;
                    self.schedule(t, Action::CorruptRestart(i));
                }
                14 => {
                    let d = self.rng.range(5, 300) * MS;
                    self.schedule(t, Action::CrashProposer(d));
                }
                15 => {
                    // One node's dead_after changes by reload (and maybe by a
                    // restart with that config), later back.
                    let d = self.rng.range(150, 3000) * MS;
                    self.schedule(t, Action::Retime(i, Some(d)));
                    if self.rng.chance(0.4) {
                        self.schedule(t + dur / 3, Action::Crash(i));
                        self.schedule(t + dur / 2, Action::Restart(i));
                    }
                    self.schedule(t + dur, Action::Retime(i, None));
                }
                10 => {
                    let loss = self.rng.range(10, 40) as f64 / 100.0;
                    self.schedule(t, Action::Lossy(loss, dup));
                    self.schedule(t + dur, Action::Lossy(base_loss, dup));
                }
                _ => {
                    let d = self.rng.range(200, 1500) * MS;
                    self.schedule(t, Action::Freeze(i, d));
                }
            }
        }
    }

    /// Ends all faults at `t`: heal, clean network, restart, resume.
    pub fn calm(&mut self, t: u64) {
        self.run_until(t);
        self.net.heal();
        self.net.loss = 0.0;
        self.net.dup = 0.0;
        self.net.jitter = 300_000;
        self.actions.clear();
        for i in 0..self.nodes.len() {
            self.nodes[i].disk_broken_until = 0;
            if self.nodes[i].frozen_until.is_some() {
                self.nodes[i].frozen_until = Some(self.now);
            }
            self.apply(Action::Retime(i, None));
            if self.nodes[i].node.is_none() {
                self.start(i);
            }
            self.apply(Action::Resume(i));
        }
    }

    /// Runs until the cluster is converged (S4 holds) or `deadline`.
    pub fn converge(&mut self, deadline: u64, exclude: &[usize]) -> Result<u64, String> {
        loop {
            if let Some(v) = &self.violation {
                return Err(v.clone());
            }
            for i in 0..self.nodes.len() {
                if exclude.contains(&i) {
                    continue;
                }
                if self.nodes[i].node.is_none() {
                    self.start(i);
                }
                // The operator resumes members that came back drained
                // (manual failback).
                let drained = self.nodes[i].node.as_ref().is_some_and(|n| {
                    n.cluster_state()
                        .member(i as u8 + 1)
                        .is_some_and(|m| m.standing == crate::assign::Standing::Drained)
                });
                if drained {
                    self.apply(Action::Resume(i));
                }
            }
            // A node whose dead_after was raised keeps honouring the larger
            // horizon until its promises ran out; failover times are only
            // comparable after that.
            let horizons_settled =
                (0..self.nodes.len()).all(|i| {
                    self.nodes[i].node.as_ref().is_none_or(|n| {
                        n.promise_horizon() <= self.scenario.config(i).dead_after_ns
                    }) && self.nodes[i].dead_after_ns.is_none()
                });
            // A node recovering from a lost state file starts only once the
            // others fenced it; it is part of the cluster to converge.
            let all_running =
                (0..self.nodes.len()).all(|i| exclude.contains(&i) || self.nodes[i].node.is_some());
            let check = check::steady(self, exclude);
            if check.is_ok() && horizons_settled && all_running {
                return Ok(self.now);
            }
            if self.now >= deadline {
                if self.trace {
                    self.dump();
                }
                return Err(format!(
                    "not converged by t={}ms: {}",
                    self.now / MS,
                    check.err().unwrap_or_default()
                ));
            }
            let t = self.now + 10 * MS;
            self.run_until(t);
        }
    }

    /// Prints every running node's internal state (traces only).
    pub fn dump(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(nd) = n.node.as_ref() {
                println!(
                    "n{}: {}",
                    i + 1,
                    nd.debug_line(Time(self.local(i, self.now)))
                );
            }
        }
    }

    /// State of the first running node not in `exclude`.
    pub fn some_state(&self, exclude: &[usize]) -> Option<ClusterState> {
        self.nodes
            .iter()
            .enumerate()
            .find(|(i, n)| !exclude.contains(i) && n.node.is_some())
            .and_then(|(_, n)| n.node.as_ref().map(|n| n.cluster_state().clone()))
    }
}

/// Result of one seed.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Steps simulated.
    pub steps: u64,
    /// Crash-to-all-buckets-served time of the clean crash (ns).
    pub failover_ns: Option<u64>,
}

/// Runs one seed end to end: chaos, calm, convergence, then a clean crash
/// checked for S5 and S7. `Err` carries the first violation.
pub fn run_seed(seed: u64, nodes: usize) -> Result<Outcome, String> {
    run_scenario(Scenario::generate(seed, nodes))
}

/// Runs one scenario end to end, as [`run_seed`] does.
pub fn run_scenario(sc: Scenario) -> Result<Outcome, String> {
    let chaos = sc.chaos_ns;
    let mut w = World::new(sc);
    w.run_until(500 * MS);
    w.schedule_chaos(500 * MS, 500 * MS + chaos);
    w.calm(500 * MS + chaos);
    let deadline = w.now + 10_000 * MS;
    w.converge(deadline, &[])?;
    let failover_ns = check::clean_crash(&mut w)?;
    Ok(Outcome {
        steps: w.steps,
        failover_ns,
    })
}

/// Node count a seed runs with when none is given: mostly small clusters,
/// some medium, a few of 33 and 64.
pub fn seed_nodes(seed: u64) -> usize {
    match seed % 1000 {
        0..=599 => 3 + (seed % 3) as usize,
        600..=899 => 6 + (seed % 4) as usize,
        900..=995 => 10 + (seed % 8) as usize,
        996..=997 => 17,
        998 => 33,
        _ => 64,
    }
}
