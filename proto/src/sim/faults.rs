//! Faults and operator commands: the `Action`s a run schedules, how each
//! is applied, the random chaos schedule, and the calm that ends it.

use crate::node::Node;
use crate::time::{Time, MS};

use super::World;

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
    /// The node's data plane refuses every install for a duration (ns).
    InstallFail(usize, u64),
    /// Crash, corrupt the state file, restart.
    CorruptRestart(usize),
    /// Crash whichever node is in phase 2 of a proposal now; restart it
    /// after a duration (ns).
    CrashProposer(u64),
    /// Reload node `.0` with another `dead_after` (`None`: the scenario's).
    Retime(usize, Option<u64>),
}

impl World {
    /// Schedules an action.
    pub fn schedule(&mut self, at: u64, action: Action) {
        let pos = self.actions.partition_point(|(t, _)| *t <= at);
        self.actions.insert(pos, (at, action));
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
            Action::InstallFail(i, d) => {
                self.nodes[i].install_broken_until = self.now + d;
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
                        Action::Stop(_) => {
                            n.stop(now);
                            self.nodes[i].stop_requested = true;
                        }
                        _ => n.rebalance(now),
                    }
                }
                self.drive(i);
            }
        }
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
            match self.rng.range(0, 18) {
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
                16 => {
                    // The data plane refuses installs (a map update
                    // failing), sometimes while the node also restarts.
                    self.schedule(t, Action::InstallFail(i, dur));
                    if self.rng.chance(0.3) {
                        self.schedule(t + dur / 2, Action::Crash(i));
                        self.schedule(t + dur / 2 + 100 * MS, Action::Restart(i));
                    }
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
            self.nodes[i].install_broken_until = 0;
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
}
