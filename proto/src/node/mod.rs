//! The node: ties membership, leases, epochs and assignment into one sans-IO
//! state machine driven by `handle_*` and drained by `poll_*`.
//!
//! # Driving it (the shell's loop)
//! 1. Feed every received datagram to [`Node::handle_datagram`] and call
//!    [`Node::handle_timeout`] when [`Node::poll_timeout`] is reached.
//! 2. After each call, drain [`Node::poll_action`] *first* (`Install` and
//!    `Lease` to the data plane; hand `Persist` to the writer; `Stopped`),
//!    log what [`Node::poll_report`] says, *then* drain
//!    [`Node::poll_transmit`], which yields nothing while an action waits.
//!    A transmit whose [`Transmit::after_persist`] is not yet durable waits
//!    for that write (heartbeats need only the first, so a slow disk never
//!    delays them); report every write's outcome with [`Node::persisted`]
//!    and a failed install with [`Node::install_failed`] before polling
//!    transmits.
//!
//! # Data-plane rule (S1, S6)
//! A slot's state only ever *gains* acceptance of new flows (to `OWNED` or
//! `ACQUIRING`) once every participating member has reported having installed
//! the very same `(epoch, digest)`: by then each one has stopped accepting
//! new flows for every slot it does not own in that epoch. Losing acceptance
//! (to `RELEASING` or `NOT_OWNED`) happens at once. A failed member is not
//! waited for: it is fenced, and its lease has run out before the fence
//! commits ([`crate::quorum`]).
//!
//! # Shape (modelled on quinn-proto's `connection/`)
//! This file only coordinates: it owns the configuration, the peers, the
//! installed [`ClusterState`] and the operator's intent, takes every input
//! through the public API, dispatches message bodies, and runs
//! `after_input` once per input. The state and the logic that
//! changes it live together in sibling modules, one sub-struct each:
//! - `acceptor.rs`: Paxos acceptor duties, one admission guard for `Prepare`
//!   and `Accept`, the deferred `Accepted` and the vouching promises;
//! - `proposer.rs`: coordination, promises, acceptances, rejections and the
//!   operations the coordinator wants next;
//! - `catchup.rs`: sync requests, commit log, snapshots (incl. the repair of
//!   an equal-epoch divergence), commits and the install of a committed state;
//! - `plane.rs`: the data-plane table, barrier, handoff, lease and whether the
//!   data plane holds our map;
//! - `outbox.rs`: sequence numbers, transmits, the local queue, actions and
//!   reports, broadcasts and heartbeats;
//! - `storage.rs`: what is persisted, its checksum, write bookkeeping and the
//!   promise horizon a restart must honour;
//! - `report.rs`: status, member and node state, debug line, config mismatch
//!   and liveness reports;
//! - `intent.rs`: what the operator and health checks ask of this node;
//! - `timer.rs`: every deadline, by name.

mod acceptor;
mod catchup;
mod intent;
mod outbox;
mod plane;
mod proposer;
mod report;
mod storage;
mod timer;

pub use outbox::{Action, Report, Routes, Transmit};
pub use report::MemberState;
pub use storage::PERSIST_VERSION;

use crate::assign::{ClusterState, Standing};
use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, Failback, MemberConfig, Role};
use crate::membership::{Liveness, Peer};
use crate::quorum;
use crate::time::Time;
use crate::wire::{self, Body, DropReason, Op};

use acceptor::Acceptor;
use catchup::Catchup;
use intent::Intent;
use outbox::Outbox;
use plane::Plane;
use proposer::Proposer;
use storage::{HorizonChange, Restored, Storage};
use timer::{Timer, TimerTable};

/// Why this node's own state keeps it from serving and voting, besides
/// quorum and lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// The last state write failed: no vote or lease until one succeeds.
    Storage,
    /// The last data-plane install failed: fenced until one succeeds.
    Install,
}

impl Blocked {
    /// For status and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Blocked::Storage => "the state file cannot be written",
            Blocked::Install => "the data plane rejected the last install",
        }
    }
}

/// One cluster member's protocol core.
pub struct Node {
    cfg: Config,
    auth: Authenticator,
    incarnation: u64,
    started: Time,
    voters: usize,
    peers: Vec<Peer>,
    /// The committed state of our installed epoch, and its digest.
    state: ClusterState,
    digest: u64,
    intent: Intent,
    acceptor: Acceptor,
    proposer: Proposer,
    catchup: Catchup,
    plane: Plane,
    storage: Storage,
    outbox: Outbox,
    had_quorum: bool,
    timers: TimerTable,
    /// Latest `now` of any input: a peer's death is woken for only after it.
    last_input: Time,
    counters: Vec<(DropReason, u64)>,
    /// Records of this member with a lower incarnation describe lives this
    /// node does not remember (it started without its state file): they
    /// are no licence to serve. 0 after a restore.
    remembers_from: u64,
}

impl Node {
    /// A node starting with no persisted state (first start ever).
    ///
    /// `incarnation` must be larger than any this member used before (the
    /// agent uses `CLOCK_REALTIME` nanoseconds at start): it is how peers tell
    /// a restart from a replay.
    pub fn new(config: Config, now: Time, incarnation: u64) -> Result<Node, ConfigError> {
        config.validate()?;
        let state = ClusterState::genesis(&config);
        let incarnation = incarnation.max(1);
        let mut node = Node::build(config, now, incarnation, state, Restored::default());
        node.remembers_from = incarnation;
        Ok(node)
    }

    /// A node restarting with the bytes of its last [`Action::Persist`]:
    /// it keeps its Paxos promises, its ballots, its lease promises and its
    /// last committed state. The incarnation used is the larger of
    /// `incarnation` and the persisted one plus one, so a wall clock stepped
    /// back cannot make peers refuse the restarted node as stale.
    ///
    /// Refuses (never silently starts over) bytes that are corrupt, of
    /// another version, or of another cluster layout: forgetting promises
    /// could let two values be chosen for one epoch.
    pub fn restore(
        config: Config,
        now: Time,
        incarnation: u64,
        persisted: &[u8],
    ) -> Result<Node, ConfigError> {
        config.validate()?;
        let (state, restored) = Restored::decode(persisted, &config)?;
        let incarnation = incarnation.max(restored.incarnation.saturating_add(1));
        Ok(Node::build(config, now, incarnation, state, restored))
    }

    fn build(
        cfg: Config,
        now: Time,
        incarnation: u64,
        state: ClusterState,
        restored: Restored,
    ) -> Node {
        let links = cfg.members[cfg.index_of(cfg.self_id).unwrap_or(0)].addrs;
        let peers = cfg
            .members
            .iter()
            .filter(|m| m.id != cfg.self_id)
            .map(|m| Peer::new(m.id, m.addrs, links))
            .collect();
        let mut node = Node {
            auth: Authenticator::new(&cfg.key),
            voters: cfg.members.len(),
            incarnation,
            started: now,
            peers,
            digest: state.digest(),
            intent: Intent::default(),
            acceptor: Acceptor::new(restored.acceptor),
            proposer: Proposer::new(restored.max_round),
            catchup: Catchup::default(),
            plane: Plane::new(),
            storage: Storage::new(restored.max_horizon, cfg.dead_after_ns),
            outbox: Outbox::default(),
            had_quorum: false,
            timers: TimerTable::default(),
            last_input: now,
            counters: DropReason::ALL.iter().map(|&r| (r, 0)).collect(),
            remembers_from: 0,
            state,
            cfg,
        };
        node.acceptor.paxos.advance(node.state.epoch);
        node.timers.set(Timer::Heartbeat, now);
        if restored.max_horizon > node.cfg.dead_after_ns {
            // Promises of an earlier incarnation under a larger horizon.
            node.timers
                .set(Timer::HorizonLower, now + restored.max_horizon);
        }
        if node.cfg.failback == Failback::Manual
            && node
                .state
                .member(node.cfg.self_id)
                .is_some_and(|m| m.standing == Standing::Fenced)
        {
            node.intent.failback_hold = true;
        }
        // Fenced members still listed as previous owners: their handoff
        // clocks start now (a restarted coordinator waits the whole
        // orphan timeout again; it cannot know when it first saw them).
        node.proposer.track_orphans(&node.state, now);
        node.persist();
        node.storage.horizon_written_by_last();
        node.refresh_dataplane(now);
        node
    }

    // ---------------------------------------------------------------- inputs

    /// Processes one received datagram. `local_link` is which of our
    /// addresses received it. Bad datagrams are counted and dropped.
    pub fn handle_datagram(&mut self, now: Time, local_link: usize, bytes: &[u8]) {
        if let Err(reason) = self.accept_datagram(now, local_link, bytes) {
            self.count_drop(reason);
        }
        self.run_local(now);
        self.after_input(now);
    }

    /// Handles every timer that has expired at `now` ([`Node::poll_timeout`]
    /// says when the first one does), each by name.
    pub fn handle_timeout(&mut self, now: Time) {
        for timer in Timer::VALUES {
            if !self.timers.is_expired(timer, now) {
                continue;
            }
            self.timers.stop(timer);
            self.on_timer(now, timer);
        }
        self.run_local(now);
        self.after_input(now);
    }

    fn on_timer(&mut self, now: Time, timer: Timer) {
        let interval = self.cfg.heartbeat_interval_ns;
        match timer {
            Timer::Heartbeat => {
                self.send_heartbeats(now);
                self.timers.set(Timer::Heartbeat, now + interval);
            }
            Timer::PersistRetry => {
                if self.storage.failed {
                    // Retry once per interval until the disk is back.
                    if !self.outbox.persist_queued() {
                        self.persist();
                    }
                    self.timers.set(Timer::PersistRetry, now + interval);
                }
            }
            Timer::HorizonLower => {
                self.storage.lower_horizon(self.cfg.dead_after_ns);
                self.persist();
            }
            Timer::InstallRetry => {
                if !self.plane.installed {
                    // The shell reports failure again if it still fails;
                    // heartbeats say `installed` only after this.
                    self.plane.retry_install();
                    self.refresh_dataplane(now);
                }
            }
            Timer::PendingAccept => self.run_pending_accept(now),
            Timer::ProposalGiveUp => self.give_up_proposal(),
            Timer::ProposalResend => self.resend_proposal(now),
            Timer::HandoffDeadline => self.refresh_handoff(now),
            Timer::SyncBackoff => self.send_held_sync(now),
            // The failure is acted on by `after_input` (liveness reports, a
            // fencing proposal), and the back-off's end by `coordinate`.
            Timer::FailureDetection | Timer::ProposalBackoff => {}
        }
    }

    /// Operator `drain`: stop taking new flows, finish existing ones (at most
    /// `timeout_ns`, default `drain_timeout`), then own nothing.
    pub fn drain(&mut self, now: Time, timeout_ns: Option<u64>) {
        self.intent.operator_drain = true;
        self.intent.drain_timeout_override = timeout_ns;
        self.after_input(now);
    }

    /// Operator `resume`: take a share again (also ends a manual-failback
    /// hold). A failing health check keeps the node drained regardless: it
    /// resumes when the check passes.
    pub fn resume(&mut self, now: Time) {
        self.intent.operator_drain = false;
        self.intent.failback_hold = false;
        self.intent.drain_timeout_override = None;
        self.after_input(now);
    }

    /// Health checks: `failing` drains this node while it holds, and its
    /// end resumes it only if no operator drain or failback hold remains.
    pub fn set_health_drain(&mut self, now: Time, failing: bool) {
        self.intent.health_drain = failing;
        self.after_input(now);
    }

    /// Why this node is drained by its own choice (for status): operator,
    /// health check, or manual failback hold.
    pub fn drain_reasons(&self) -> Vec<&'static str> {
        self.intent.drain_reasons()
    }

    /// Whether this node is drained by its own choice (any of
    /// [`Node::drain_reasons`]), without building the list.
    pub fn drained(&self) -> bool {
        self.intent.drained()
    }

    /// Operator `stop`: hand everything off at once and leave; emits
    /// [`Action::Stopped`] when done (at once if we own nothing).
    pub fn stop(&mut self, now: Time) {
        self.intent.leaving = true;
        self.intent.drain_timeout_override = Some(0);
        self.after_input(now);
    }

    /// Operator `rebalance`: ask for the canonical weight-exact layout.
    pub fn rebalance(&mut self, now: Time) {
        self.intent.rebalance_requests += 1;
        self.after_input(now);
    }

    /// The shell's report on the write of `Persist { seq }`. A failure
    /// fences this node, stops it voting (its promises may not survive a
    /// restart) and silences its heartbeats (so the others fence it and take
    /// its buckets) until a later write succeeds; the shell drops the
    /// transmits that waited for it.
    pub fn persisted(&mut self, now: Time, seq: u64, ok: bool) {
        if self.storage.written(seq, ok) {
            self.revoke_lease();
            self.timers
                .set(Timer::PersistRetry, now + self.cfg.heartbeat_interval_ns);
        }
        self.after_input(now);
    }

    /// The shell could not write the last [`Action::Install`] to the data
    /// plane (which keeps its previous table). The node is fenced, reports
    /// itself not installed, drops the datagrams queued so far (they may
    /// claim the install), and retries a heartbeat interval later.
    pub fn install_failed(&mut self, now: Time) {
        self.plane.install_refused();
        // Installs queued behind it were computed over the refused table.
        self.outbox.drop_installs();
        // A lease extension queued behind the failed install must not reach
        // a data plane that still holds the old map.
        self.outbox.drop_lease_extensions();
        self.revoke_lease();
        self.outbox.clear_transmits();
        self.timers
            .set(Timer::InstallRetry, now + self.cfg.heartbeat_interval_ns);
        self.after_input(now);
    }

    /// Applies a new configuration: weight, failback, drain timeout and
    /// (where the fingerprint allows) timers may change; the node id,
    /// members, roles, slots, cluster-wide settings (the fingerprint) and the
    /// key may not: peers would refuse every datagram. Timers that do change
    /// never stretch a lease: leases are sized by the horizons peers promise
    /// ([`crate::quorum`]), and a larger `dead_after` is advertised only
    /// once persisted.
    pub fn reconfigure(&mut self, now: Time, config: Config) -> Result<(), ConfigError> {
        config.validate()?;
        if let Some(what) = incompatible(&self.cfg, &config) {
            return Err(ConfigError::Incompatible(what.into()));
        }
        self.auth = Authenticator::new(&config.key);
        self.cfg = config;
        match self.storage.adopt_dead_after(now, self.cfg.dead_after_ns) {
            HorizonChange::Raised => {
                self.timers.stop(Timer::HorizonLower);
                self.persist();
                self.storage.horizon_written_by_last();
            }
            HorizonChange::LowerAt(t) => self.timers.set(Timer::HorizonLower, t),
            HorizonChange::Kept => {}
        }
        self.after_input(now);
        Ok(())
    }

    /// Data-plane feedback: tracked connections remaining in this node's
    /// `RELEASING` slots. Zero ends the handoff.
    pub fn report_tracked_flows(&mut self, now: Time, remaining: u64) {
        // After a failed install the count is of the data plane's older
        // table, not of the slots our state releases.
        if self.plane.installed {
            self.plane.flows_remaining = Some(remaining);
        }
        self.after_input(now);
    }

    // --------------------------------------------------------------- outputs

    /// Next thing the shell must do ([`Action`]): drain these first after
    /// every call, in order. An `Install` that fails must be reported with
    /// [`Node::install_failed`] and a `Persist`'s outcome with
    /// [`Node::persisted`].
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.outbox.poll_action();
        if let Some(Action::Install {
            states, singles, ..
        }) = &action
        {
            self.plane.install_taken(states, singles);
        }
        action
    }

    /// Next thing to log ([`Report`]); nothing waits for these.
    pub fn poll_report(&mut self) -> Option<Report> {
        self.outbox.poll_report()
    }

    /// Next datagram to send: none while an action waits in
    /// [`Node::poll_action`] (a datagram may depend on it). One whose
    /// [`Transmit::after_persist`] is not yet durable waits for that write.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.poll_transmit()
    }

    /// When [`Node::handle_timeout`] must be called next: the earliest
    /// armed timer (none once the node has stopped).
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.intent.stop_emitted {
            return None;
        }
        self.timers.next_timeout()
    }

    /// Current owner of a data-plane slot index (bucket `0..buckets`, single
    /// slot `MAX_BUCKETS + i`) in our installed epoch.
    pub fn owner_of(&self, slot_index: usize) -> Option<u8> {
        let s = self.slot_of_index(slot_index)?;
        match self.state.owner.get(s) {
            Some(&0) | None => None,
            Some(&o) => Some(o),
        }
    }

    /// The replicated state of our installed epoch (for tests, the simulator
    /// and `xnlb owner --json`).
    pub fn cluster_state(&self) -> &ClusterState {
        &self.state
    }

    /// Digest of the installed state.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The promise horizon a restart of this member must honour now: the
    /// largest `dead_after` under which it may have promises outstanding.
    pub fn promise_horizon(&self) -> u64 {
        self.storage.max_horizon
    }

    /// The value this node is proposing for an epoch, if it is in phase 2:
    /// `(epoch, ballot, ops)`. For the simulator's ballot-uniqueness check.
    pub fn proposal_in_flight(&self) -> Option<(u64, u64, &[Op])> {
        self.proposer.in_flight()
    }

    /// What keeps this node fenced besides quorum and lease, if anything.
    pub fn blocked(&self) -> Option<Blocked> {
        if self.storage.failed {
            Some(Blocked::Storage)
        } else if !self.plane.installed {
            Some(Blocked::Install)
        } else {
            None
        }
    }

    // ------------------------------------------------------- shared lookups

    fn own_config(&self) -> Option<&MemberConfig> {
        self.cfg.members.iter().find(|m| m.id == self.cfg.self_id)
    }

    fn role(&self) -> Role {
        self.own_config().map_or(Role::Active, |m| m.role)
    }

    /// Whether this node takes part in the installed state in a life it
    /// remembers. A node that lost its state file and catches up through
    /// old epochs (delayed or replayed commits) finds itself `Active` in
    /// records of its previous incarnation: it must not serve them (S1),
    /// only the epochs from its own admission on.
    pub(crate) fn self_participates(&self) -> bool {
        self.state
            .member(self.cfg.self_id)
            .is_some_and(|m| m.standing.participates() && m.incarnation >= self.remembers_from)
    }

    fn peer(&self, id: u8) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }

    fn peer_index(&self, id: u8) -> Option<usize> {
        self.peers.iter().position(|p| p.id == id)
    }

    fn slot_of_index(&self, slot_index: usize) -> Option<usize> {
        let b = self.cfg.buckets as usize;
        let mb = xnlb_common::MAX_BUCKETS as usize;
        if slot_index < b {
            Some(slot_index)
        } else if slot_index >= mb && slot_index - mb < self.cfg.single_slots.len() {
            Some(b + slot_index - mb)
        } else {
            None
        }
    }

    fn count_drop(&mut self, reason: DropReason) {
        if let Some(c) = self.counters.iter_mut().find(|(r, _)| *r == reason) {
            c.1 += 1;
        }
    }

    fn liveness(&self, now: Time, p: &Peer) -> Liveness {
        p.liveness(
            now,
            self.started,
            self.cfg.heartbeat_interval_ns,
            self.cfg.dead_after_ns,
        )
    }

    fn votes(&self, now: Time) -> usize {
        1 + self
            .peers
            .iter()
            .filter(|p| self.liveness(now, p) != Liveness::Dead)
            .count()
    }

    fn has_quorum(&self, now: Time) -> bool {
        self.votes(now) >= quorum::needed(self.voters)
    }

    // ------------------------------------------------------------- dispatch

    fn accept_datagram(
        &mut self,
        now: Time,
        local_link: usize,
        bytes: &[u8],
    ) -> Result<(), DropReason> {
        let msg = wire::decode(&self.auth, bytes)?;
        let h = &msg.header;
        if h.to != self.cfg.self_id {
            return Err(DropReason::WrongDestination);
        }
        let pi = match self.peer_index(h.from) {
            Some(i) => i,
            None => return Err(DropReason::UnknownSender),
        };
        if h.fingerprint != self.cfg.fingerprint {
            if let Body::Heartbeat(hb) = &msg.body {
                self.report_mismatch(pi, &hb.summary);
            }
            return Err(DropReason::FingerprintMismatch);
        }
        let peer = &mut self.peers[pi];
        if h.incarnation < peer.incarnation {
            return Err(DropReason::StaleIncarnation);
        }
        if h.incarnation > peer.incarnation {
            self.new_incarnation(pi, h.incarnation);
        }
        let peer = &mut self.peers[pi];
        if !peer.replay.check_and_record(h.seq) {
            return Err(DropReason::Replay);
        }
        peer.last_heard = Some(now);
        let l = local_link.min(peer.last_heard_link.len() - 1);
        peer.last_heard_link[l] = Some(now);
        let from = h.from;
        self.handle_body(now, from, l, msg.body);
        Ok(())
    }

    /// A peer restarted (or is heard for the first time): everything we
    /// knew of its previous incarnation is void.
    fn new_incarnation(&mut self, pi: usize, incarnation: u64) {
        let peer = &mut self.peers[pi];
        let restarted = peer.incarnation != 0;
        peer.incarnation = incarnation;
        peer.replay = Default::default();
        peer.vouch = None;
        peer.echo_of_ours = 0;
        peer.echo_horizon = 0;
        peer.diverged_at = 0;
        peer.mismatch_reported = false;
        if restarted {
            let id = peer.id;
            self.outbox.push_report(Report::MemberState {
                id,
                state: MemberState::Alive,
                why: format!("member {id} restarted (new incarnation {incarnation})"),
            });
        }
    }

    fn run_local(&mut self, now: Time) {
        while let Some((from, body)) = self.outbox.local.pop_front() {
            self.handle_body(now, from, 0, body);
        }
    }

    fn handle_body(&mut self, now: Time, from: u8, link: usize, body: Body) {
        // By role, as raft-rs steps messages: each sibling module handles
        // the bodies addressed to its part of the protocol.
        match body {
            Body::Heartbeat(hb) => self.on_heartbeat(now, from, link, hb),
            Body::Prepare { .. } | Body::Accept { .. } => self.step_acceptor(now, from, link, body),
            Body::Promise { .. } | Body::Accepted { .. } | Body::Reject { .. } => {
                self.step_proposer(now, from, link, body)
            }
            Body::SyncRequest { .. } | Body::Commit { .. } | Body::SnapshotChunk { .. } => {
                self.step_catchup(now, from, link, body)
            }
        }
    }

    fn on_heartbeat(&mut self, now: Time, from: u8, link: usize, hb: wire::Heartbeat) {
        let Some(pi) = self.peer_index(from) else {
            return;
        };
        let peer = &mut self.peers[pi];
        if hb.echo_incarnation == self.incarnation && hb.echo > peer.echo_of_ours {
            peer.echo_of_ours = hb.echo;
            peer.echo_horizon = hb.echo_horizon;
        }
        // Same epoch, different state: one of us holds a table the committed
        // log does not. Never vouch for it; repair by snapshot (only a state
        // a quorum reports is adopted, see `on_chunk`).
        if hb.epoch == self.state.epoch && hb.digest != self.digest {
            self.on_divergence(now, pi, link, hb);
            return;
        }
        self.vouch(now, pi, &hb);
        let behind = hb.epoch > self.state.epoch;
        self.peers[pi].report = Some(hb);
        if behind {
            self.request_sync(now, from, link);
        }
    }

    /// Runs after every input: the barrier, handoff, lease, liveness
    /// reports, coordination and a graceful leave all follow from the
    /// state the input left.
    fn after_input(&mut self, now: Time) {
        self.last_input = self.last_input.max(now);
        if !self.plane.barrier_passed && self.barrier() {
            self.refresh_dataplane(now);
        }
        self.refresh_handoff(now);
        self.refresh_lease(now);
        self.refresh_liveness_reports(now);
        self.coordinate(now);
        self.run_local(now);
        if self.intent.leaving && !self.intent.stop_emitted && !self.self_participates() {
            self.intent.stopped = true;
            self.intent.stop_emitted = true;
            self.refresh_dataplane(now);
            self.refresh_lease(now);
            self.outbox.push_action(Action::Stopped);
        }
        self.arm_timers();
    }
}

/// Which part of `new` a running node cannot adopt by reload, if any:
/// peers would refuse every datagram.
fn incompatible(old: &Config, new: &Config) -> Option<&'static str> {
    if new.self_id != old.self_id {
        Some("node id")
    } else if new.fingerprint != old.fingerprint {
        Some("settings every member must share (the config fingerprint)")
    } else if new.key != old.key {
        Some("the cluster key")
    } else if new.buckets != old.buckets {
        Some("buckets")
    } else if new.single_slots != old.single_slots {
        Some("single-slot rules")
    } else if new.members.len() != old.members.len()
        || new
            .members
            .iter()
            .zip(&old.members)
            .any(|(a, b)| a.id != b.id || a.role != b.role || a.addrs != b.addrs)
    {
        Some("members, roles or addresses")
    } else {
        None
    }
}
