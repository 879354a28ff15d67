//! One simulated member's process and host: starting (and restoring from
//! its state file, refusing a corrupt one), the shell that applies the
//! core's actions, the storage model (a writer with latency, held
//! datagrams, broken disks, writes lost in a crash), delivery of datagrams
//! and timers, and the ballot-uniqueness oracle.

use crate::node::{Action as NodeAction, Node, Transmit};
use crate::time::{Time, MS};
use xnlb_common::slot_state::{ACQUIRING, OWNED, RELEASING};

use super::net::Flight;
use super::{check, World};

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
    /// Data plane: the epoch of the last install.
    pub dp_epoch: u64,
    /// Data plane: lease deadline on the local clock.
    pub lease: u64,
    /// Data plane: held-delivery deadline on the local clock.
    pub hold: u64,
    /// Next `handle_timeout` (real).
    pub wake: Option<u64>,
    /// Datagrams that arrived while frozen.
    pub inbox: Vec<Flight>,
    /// When the agent next reports the connections its kernel holds in
    /// releasing slots (real).
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
    /// The data plane refuses every install until this real time (a map
    /// update failing; it keeps its previous table whole, as the real
    /// one's single-index switch does).
    pub install_broken_until: u64,
    /// The state file was corrupted: a restart must be refused, and the
    /// node comes back only through the documented recovery.
    pub corrupt: bool,
    /// `dead_after` override from a reload or a restart with another config.
    pub dead_after_ns: Option<u64>,
    /// Highest write that landed for the running process.
    pub durable: u64,
    /// The operator stopped this node (leave at once: its connections may
    /// be cut).
    pub stop_requested: bool,
}

impl World {
    pub(super) fn start(&mut self, i: usize) {
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
            for c in self.sockets.conns.iter_mut().filter(|c| c.holder == i) {
                c.state_lost = true;
            }
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
            Ok(mut node) => {
                // The data plane outlives the agent: the new one takes the
                // live table over, as the real agent does at start.
                let buckets = self.scenario.buckets as usize;
                if sn.dp.iter().any(|&s| s != 0) {
                    node.adopt_dataplane(now, sn.dp_epoch, &sn.dp[..buckets], &sn.dp[buckets..]);
                }
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

    /// Drains actions, reports and transmits of node `i` after an input.
    pub(super) fn drive(&mut self, i: usize) {
        loop {
            let ev = match self.nodes[i].node.as_mut() {
                Some(n) => n.poll_action(),
                None => None,
            };
            let Some(ev) = ev else { break };
            if self.trace {
                match &ev {
                    NodeAction::Persist { .. } => {}
                    NodeAction::Install { states, singles, epoch, .. } => println!(
                        "{:>9.3} n{} Install epoch {epoch} owned {} releasing {} acquiring {} singles {:?}",
                        self.now as f64 / 1e6,
                        i + 1,
                        states.iter().filter(|&&s| s == OWNED).count(),
                        states.iter().filter(|&&s| s == RELEASING).count(),
                        states.iter().filter(|&&s| s == ACQUIRING).count(),
                        singles
                    ),
                    NodeAction::Lease { until, .. } => {
                        if self.trace_lease {
                            println!("{:>9.3} n{} Lease {}", self.now as f64 / 1e6, i + 1, until.0 as i128 - self.local(i, self.now) as i128)
                        }
                    }
                    e => println!("{:>9.3} n{} {e:?}", self.now as f64 / 1e6, i + 1),
                }
            }
            match ev {
                NodeAction::Install {
                    states,
                    singles,
                    epoch,
                    ..
                } => {
                    if self.now < self.nodes[i].install_broken_until {
                        // Reported before anything else is polled, as the
                        // shell does; the data plane is unchanged.
                        if self.trace {
                            println!("{:>9.3} n{} install failed", self.now as f64 / 1e6, i + 1);
                        }
                        let now = Time(self.local(i, self.now));
                        if let Some(n) = self.nodes[i].node.as_mut() {
                            n.install_failed(now);
                        }
                        continue;
                    }
                    let sn = &mut self.nodes[i];
                    sn.dp = states;
                    sn.dp_epoch = epoch;
                    sn.dp.extend(singles);
                    if sn.dp.contains(&RELEASING) && sn.flows_at.is_none() {
                        sn.flows_at = Some(self.now + self.rng.range(0, 250) * MS);
                    }
                    check::s1_node(self, i);
                    self.check_conns_at(i);
                }
                NodeAction::Lease { until, hold } => {
                    let local = self.local(i, self.now);
                    let was_valid = self.nodes[i].lease > local;
                    self.nodes[i].lease = until.0;
                    if let Some(h) = hold {
                        self.nodes[i].hold = h.0;
                    }
                    if until.0 > local {
                        check::s2_lease(self, i, until.0);
                        if !was_valid {
                            check::s1_node(self, i);
                            self.check_conns_at(i);
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

    pub(super) fn schedule_wake(&mut self, i: usize) {
        let wake = self.nodes[i]
            .node
            .as_ref()
            .and_then(|n| n.poll_timeout())
            .map(|t| self.real_of(i, t.0).max(self.now));
        self.nodes[i].wake = wake;
    }

    /// Whether every running node other than `i` holds a state in which `i`
    /// does not participate.
    pub(super) fn fenced_by_others(&self, i: usize) -> bool {
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
    pub(super) fn send_or_hold(&mut self, i: usize, tx: Transmit) {
        let durable = self.durable_seq(i);
        if tx.after_persist > durable {
            self.nodes[i].held.push(tx);
            return;
        }
        self.send(i, tx);
    }

    /// Highest write that landed for node `i`'s running process.
    pub(super) fn durable_seq(&self, i: usize) -> u64 {
        self.nodes[i].durable
    }

    /// The write in flight at node `i` completes (or fails on a broken disk).
    pub(super) fn finish_write(&mut self, i: usize) {
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

    pub(super) fn send(&mut self, i: usize, tx: Transmit) {
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

    /// Kills node `i`'s process: its queued write and held datagrams are
    /// lost; the write in flight lands or not.
    pub(super) fn crash(&mut self, i: usize) {
        self.end_process_io(i);
        let sn = &mut self.nodes[i];
        sn.node = None;
        sn.wake = None;
        sn.frozen_until = None;
        sn.inbox.clear();
    }

    pub(super) fn end_process_io(&mut self, i: usize) {
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
    pub(super) fn check_ballot(&mut self, i: usize) {
        let Some((epoch, ballot, ops)) = self.nodes[i]
            .node
            .as_ref()
            .and_then(|n| n.proposal_in_flight())
        else {
            return;
        };
        // Called after every step of every node: copy the value only the
        // first time a ballot is seen.
        let verdict = match self.ballots.get(&(epoch, ballot)) {
            Some(prev) if prev.as_slice() == ops => return,
            Some(prev) => Err(format!(
                "ballot {ballot:#x} of epoch {epoch} carried two values: {prev:?} and {ops:?}"
            )),
            None => Ok(ops.to_vec()),
        };
        match verdict {
            Ok(ops) => {
                self.ballots.insert((epoch, ballot), ops);
            }
            Err(why) => self.fail(why),
        }
    }

    pub(super) fn timeout(&mut self, i: usize) {
        let now = Time(self.local(i, self.now));
        if let Some(n) = self.nodes[i].node.as_mut() {
            n.handle_timeout(now);
        }
        self.drive(i);
    }

    pub(super) fn deliver(&mut self, f: Flight) {
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
}
