//! Deterministic cluster simulator (feature `sim`).
//!
//! Many [`Node`](crate::node::Node)s run in one thread in virtual time over a simulated network
//! ([`net`]) with loss, duplication, reordering, delay, symmetric and
//! asymmetric partitions, link failures, crashes, restarts (new incarnation,
//! persisted state kept), frozen processes, clock-rate skew within
//! [`crate::quorum::MAX_CLOCK_SKEW_PPM`] and operator commands. Each node's data
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
//!
//! Files: this one holds the [`World`] (time, stepping, convergence) and
//! the entry points; [`Scenario`] (scenario.rs) what a seed stands for;
//! [`SimNode`] and the process/storage model (process.rs); [`Action`] and
//! the chaos schedule (faults.rs); [`net`] the network; [`check`] the
//! invariants; [`bench`] the convergence benchmark.

pub mod bench;
pub mod check;
mod faults;
pub mod net;
mod process;
mod scenario;
mod sockets;

pub use faults::Action;
pub use process::SimNode;
pub use scenario::Scenario;
pub use sockets::{Conn, Sockets};

use crate::assign::ClusterState;
use crate::config::Config;
use crate::time::{Time, MS};
use net::{Net, Rng};
use std::cmp::Reverse;
use xnlb_common::slot_state::{ACQUIRING, OWNED};

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
    /// Steps executed since real time last moved (a livelock detector).
    pub steps_at_now: u64,
    /// A corrupt-state restart was scheduled in this run.
    pub corrupt_scheduled: bool,
    /// Largest promise horizon any node had so far (for the S2 oracle).
    pub max_horizon_seen: u64,
    /// Value of every phase-2 proposal seen, by (epoch, ballot).
    pub ballots: std::collections::HashMap<(u64, u64), Vec<crate::wire::Op>>,
    /// Every node's kernel socket table (S6).
    pub sockets: Sockets,
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

/// Steps at one instant beyond which a run is a livelock, not a burst: a
/// burst is bounded by the datagrams and timers of a few dozen nodes.
const LIVELOCK_STEPS: u64 = 100_000;

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
                dp_epoch: 0,
                lease: 0,
                hold: 0,
                wake: None,
                inbox: Vec::new(),
                flows_at: None,
                drained_by_operator: false,
                writing: None,
                queued_write: None,
                held: Vec::new(),
                disk_broken_until: 0,
                install_broken_until: 0,
                corrupt: false,
                dead_after_ns: None,
                durable: 0,
                stop_requested: false,
            });
        }
        let sockets = Sockets::for_config(&scenario.config(0));
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
            steps_at_now: 0,
            sockets,
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

    pub(super) fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(format!("t={}ms: {what}", self.now / MS));
        }
    }

    pub(super) fn runnable(&self, i: usize) -> bool {
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
        consider(self.sockets.next_sweep, 6, 0);
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
        if t > self.now {
            self.steps_at_now = 0;
        }
        self.now = self.now.max(t);
        self.steps += 1;
        self.steps_at_now += 1;
        if self.steps_at_now > LIVELOCK_STEPS {
            // A timer due now that its handler does not move (or two nodes
            // ping-ponging at zero delay) would spin here forever.
            let msg = format!(
                "livelock: {LIVELOCK_STEPS} steps without time passing at t={}ms (next: kind {kind}, node {})",
                self.now / MS,
                i + 1
            );
            self.fail(msg);
            return false;
        }
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
            6 => self.sweep_sockets(),
            _ => self.report_sockets(i),
        }
        true
    }

    /// Runs until real time `t` (or a violation).
    pub fn run_until(&mut self, t: u64) {
        while self.violation.is_none() && self.step(t) {}
        self.now = self.now.max(t);
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
    /// Connections opened in the socket model.
    pub conns_opened: u64,
    /// Connections ended other than by their clients (windows ran out).
    pub conns_cut: u64,
    /// Sweeps that found a connection its holder did not pass (a stall).
    pub stalled_sweeps: u64,
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
        conns_opened: w.sockets.opened,
        conns_cut: w.sockets.cut,
        stalled_sweeps: w.sockets.stalled_sweeps,
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
