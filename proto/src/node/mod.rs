//! The node: ties membership, leases, epochs and assignment into one sans-IO
//! state machine driven by `handle_*` and drained by `poll_*`.
//!
//! # Driving it (the shell's loop)
//! 1. Feed every received datagram to [`Node::handle_datagram`] and call
//!    [`Node::handle_timeout`] when [`Node::poll_timeout`] is reached.
//! 2. After each call, drain [`Node::poll_event`] *first* (`Install` and
//!    `Lease` to the data plane; hand `Persist` to the writer), *then*
//!    [`Node::poll_transmit`]. A transmit whose [`Transmit::after_persist`]
//!    is not yet durable waits for that write (heartbeats need only the first, so a
//!    slow disk never delays them); report every write's outcome with
//!    [`Node::persisted`] and a failed install with [`Node::install_failed`]
//!    before polling transmits.
//!
//! # Data-plane rule (S1, S6)
//! A slot's state only ever *gains* acceptance of new flows (to `OWNED` or
//! `ACQUIRING`) once every participating member has reported having installed
//! the very same `(epoch, digest)`: by then each one has stopped accepting
//! new flows for every slot it does not own in that epoch. Losing acceptance
//! (to `RELEASING` or `NOT_OWNED`) happens at once. A failed member is not
//! waited for: it is fenced, and its lease has run out before the fence
//! commits ([`crate::quorum`]).

use std::collections::VecDeque;

use crate::assign::{ClusterState, Standing};
use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, Failback, Role};
use crate::epoch::{self, Acceptor, PendingAccept, Phase, Proposal};
use crate::membership::{Liveness, Peer};
use crate::quorum;
use crate::status::{self, MemberStatus, NodeState, QuorumStatus, Status};
use crate::time::{Time, MS};
use crate::wire::{
    self, Ballot, Body, ConfigSummary, DropReason, Header, Heartbeat, Message, Op, Wish,
    SNAPSHOT_CHUNK,
};
use bincode::{Decode, Encode};
use xnlb_common::slot_state::{ACQUIRING, NOT_OWNED, OWNED, RELEASING};

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination member id.
    pub to: u8,
    /// Index into that member's addresses; send from our address of the same
    /// index (links are paired by index).
    pub link: usize,
    /// The datagram (at most [`wire::MAX_DATAGRAM`] bytes).
    pub bytes: Vec<u8>,
    /// Sequence number of the [`Event::Persist`] that must be durable before
    /// this datagram may leave (0: none). Votes, proposals and commits
    /// announce state a restart must remember; heartbeats need only the
    /// first write (this incarnation), so a slow disk never delays them.
    pub after_persist: u64,
}

/// Member state as reported in events and status (DESIGN 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Heard recently.
    Alive,
    /// Missed heartbeats.
    Suspect,
    /// Silent on all links for `dead_after`, or fenced.
    Dead,
    /// Left gracefully.
    Left,
    /// Handing its slots off.
    Draining,
    /// Owns nothing by operator request.
    Drained,
}

impl MemberState {
    /// Name used in status JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
            MemberState::Draining => "draining",
            MemberState::Drained => "drained",
        }
    }
}

/// Something the shell must act on or report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Write these slot states to the data plane atomically (one table
    /// flip). `states` has one entry per bucket, `singles` one per single
    /// slot (data-plane index `MAX_BUCKETS + i`).
    Install {
        /// Epoch of the map.
        epoch: u64,
        /// [`xnlb_common::slot_state`] per bucket for this node.
        states: Vec<u8>,
        /// Per single slot.
        singles: Vec<u8>,
    },
    /// Write to the data plane's lease word; `Time(0)` fences at once.
    Lease {
        /// Deadline on the node's clock ([`Time`]).
        until: Time,
    },
    /// A member's state changed.
    MemberState {
        /// Member id.
        id: u8,
        /// New state.
        state: MemberState,
        /// Why, for the log.
        why: String,
    },
    /// Quorum gained or lost.
    Quorum {
        /// Whether we have it now.
        has: bool,
        /// Why, for the log.
        why: String,
    },
    /// A new epoch was installed.
    Epoch {
        /// Previous epoch.
        from: u64,
        /// New epoch.
        to: u64,
        /// What changed, for the log.
        why: String,
    },
    /// A member's configuration differs from ours; its datagrams are refused.
    ConfigMismatch {
        /// Member id.
        member: u8,
        /// What differs.
        what: String,
    },
    /// This node's releasing slots are handed off (connections drained or
    /// timed out) for `epoch`.
    HandoffDone {
        /// Epoch.
        epoch: u64,
        /// Whether it ended by timeout rather than by the flows ending.
        timed_out: bool,
    },
    /// Write these bytes durably (fsync), then report the outcome with
    /// [`Node::persisted`]; pass them to [`Node::restore`] after a restart.
    /// Transmits with `after_persist >= seq` wait for this write.
    Persist {
        /// Increasing number of this write; a later one supersedes it.
        seq: u64,
        /// Opaque state.
        state: Vec<u8>,
    },
    /// Our state and a peer's differ at the same epoch (a bug or a state
    /// file rolled back): we stop vouching for it and repair by snapshot.
    Divergence {
        /// The peer.
        member: u8,
        /// The epoch at which the digests differ.
        epoch: u64,
    },
    /// The node has left the cluster (after `stop`); the shell may exit.
    Stopped,
}

/// What survives a restart. Version 2 added `max_round` (a restarted
/// proposer never reuses a ballot) and `max_horizon` (a restarted acceptor
/// keeps every promise it advertised).
#[derive(Clone, Debug, Encode, Decode)]
struct Persisted {
    version: u32,
    incarnation: u64,
    state: Vec<u8>,
    acceptor: Acceptor,
    max_round: u64,
    max_horizon: u64,
}

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

struct SnapshotRx {
    epoch: u64,
    digest: u64,
    chunks: Vec<Option<Vec<u8>>>,
}

/// One cluster member's protocol core.
pub struct Node {
    cfg: Config,
    auth: Authenticator,
    incarnation: u64,
    started: Time,
    seq: u64,
    voters: usize,
    peers: Vec<Peer>,
    /// Per member id: we promised not to accept fencing it before this.
    promise_until: Vec<(u8, Time)>,
    state: ClusterState,
    digest: u64,
    log: VecDeque<(u64, Vec<Op>, u64)>,
    acceptor: Acceptor,
    pending_accept: Option<PendingAccept>,
    proposal: Option<Proposal>,
    max_round: u64,
    retry_after: Time,
    snapshot_rx: Option<SnapshotRx>,
    sync_sent: Time,
    // Local intentions: the node asks to be drained while any reason holds.
    operator_drain: bool,
    failback_hold: bool,
    health_drain: bool,
    leaving: bool,
    rebalance_requests: u32,
    stopped: bool,
    stop_emitted: bool,
    drain_timeout_override: Option<u64>,
    // Data plane.
    dp: Option<Vec<u8>>,
    barrier_passed: bool,
    releasing_since: Option<Time>,
    flows_remaining: Option<u64>,
    handoff_done: u64,
    /// The data plane holds our installed state (false after a failed
    /// install, until a retry succeeds).
    installed: bool,
    // Persistence.
    persist_seq: u64,
    durable_seq: u64,
    storage_failed: bool,
    /// Largest promise horizon (`dead_after`) this member ever used, and the
    /// part of it known durable (only that much is advertised).
    max_horizon: u64,
    durable_horizon: u64,
    horizon_seq: u64,
    /// When promises made under a larger horizon have all run out, so the
    /// horizon a restart must honour can shrink to `dead_after`.
    horizon_lower_at: Option<Time>,
    lease_emitted: Time,
    had_quorum: bool,
    next_heartbeat: Time,
    last_input: Time,
    counters: Vec<(DropReason, u64)>,
    sent_bytes: u64,
    sent_datagrams: u64,
    transmits: VecDeque<Transmit>,
    local: VecDeque<(u8, Body)>,
    events: VecDeque<Event>,
}

const PERSIST_VERSION: u32 = 2;
const LOG_LEN: usize = 64;
const MAX_OPS: usize = 64;

impl Node {
    /// A node starting with no persisted state (first start ever).
    ///
    /// `incarnation` must be larger than any this member used before (the
    /// agent uses `CLOCK_REALTIME` nanoseconds at start): it is how peers tell
    /// a restart from a replay.
    pub fn new(config: Config, now: Time, incarnation: u64) -> Result<Node, ConfigError> {
        config.validate()?;
        let state = ClusterState::genesis(&config);
        Ok(Node::build(
            config,
            now,
            incarnation.max(1),
            state,
            Restored::default(),
        ))
    }

    /// A node restarting with the bytes of its last [`Event::Persist`]:
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
        let bad = |w: String| ConfigError::BadPersistedState(w);
        let version = decode_version(persisted)
            .ok_or_else(|| bad("too short or not an xnlb state file".into()))?;
        if version != PERSIST_VERSION {
            return Err(bad(format!(
                "written by state format version {version}; this xnlb reads version {PERSIST_VERSION}"
            )));
        }
        let body = checked_body(persisted)
            .ok_or_else(|| bad("corrupt: its checksum does not match its contents".into()))?;
        let cfg = bincode::config::standard().with_limit::<{ 1 << 20 }>();
        let (p, used): (Persisted, usize) =
            bincode::decode_from_slice(body, cfg).map_err(|e| bad(format!("corrupt: {e}")))?;
        if used != body.len() {
            return Err(bad(format!(
                "corrupt: {} trailing bytes",
                body.len() - used
            )));
        }
        let state = ClusterState::from_bytes(&p.state)
            .ok_or_else(|| bad("corrupt: the cluster state does not decode".into()))?;
        if let Err(why) = state_fits(&state, &config) {
            return Err(bad(format!("it belongs to another cluster layout ({why})")));
        }
        let incarnation = incarnation.max(p.incarnation.saturating_add(1));
        let restored = Restored {
            acceptor: p.acceptor,
            max_round: p.max_round,
            max_horizon: p.max_horizon,
        };
        Ok(Node::build(config, now, incarnation, state, restored))
    }

    fn build(
        cfg: Config,
        now: Time,
        incarnation: u64,
        state: ClusterState,
        restored: Restored,
    ) -> Node {
        let Restored {
            acceptor,
            max_round,
            max_horizon,
        } = restored;
        let links = cfg.members[cfg.index_of(cfg.self_id).unwrap_or(0)].addrs;
        let peers = cfg
            .members
            .iter()
            .filter(|m| m.id != cfg.self_id)
            .map(|m| Peer::new(m.id, m.addrs, links))
            .collect();
        let digest = state.digest();
        let mut node = Node {
            auth: Authenticator::new(&cfg.key),
            voters: cfg.members.len(),
            incarnation,
            started: now,
            seq: 0,
            peers,
            promise_until: Vec::new(),
            digest,
            log: VecDeque::new(),
            acceptor,
            pending_accept: None,
            proposal: None,
            max_round,
            retry_after: now,
            snapshot_rx: None,
            sync_sent: Time(0),
            operator_drain: false,
            failback_hold: false,
            health_drain: false,
            leaving: false,
            rebalance_requests: 0,
            stopped: false,
            stop_emitted: false,
            drain_timeout_override: None,
            dp: None,
            barrier_passed: false,
            releasing_since: None,
            flows_remaining: None,
            handoff_done: 0,
            installed: true,
            persist_seq: 0,
            durable_seq: 0,
            storage_failed: false,
            // What a previous incarnation advertised is durable already.
            max_horizon: max_horizon.max(cfg.dead_after_ns),
            durable_horizon: max_horizon,
            horizon_seq: 0,
            horizon_lower_at: (max_horizon > cfg.dead_after_ns).then(|| now + max_horizon),
            lease_emitted: Time(0),
            had_quorum: false,
            next_heartbeat: now,
            last_input: now,
            counters: DropReason::ALL.iter().map(|&r| (r, 0)).collect(),
            sent_bytes: 0,
            sent_datagrams: 0,
            transmits: VecDeque::new(),
            local: VecDeque::new(),
            events: VecDeque::new(),
            state,
            cfg,
        };
        node.acceptor.advance(node.state.epoch);
        if node.cfg.failback == Failback::Manual
            && node
                .state
                .member(node.cfg.self_id)
                .is_some_and(|m| m.standing == Standing::Fenced)
        {
            node.failback_hold = true;
        }
        node.persist();
        node.horizon_seq = node.persist_seq;
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

    /// Runs timers: heartbeats, failure detection, proposals, deferred
    /// accepts, handoff timeouts.
    pub fn handle_timeout(&mut self, now: Time) {
        if now >= self.next_heartbeat {
            self.send_heartbeats(now);
            self.next_heartbeat = now + self.cfg.heartbeat_interval_ns;
            if self.storage_failed && !self.persist_pending() {
                // Retry the write once per heartbeat until the disk is back.
                self.persist();
            }
            if self.horizon_lower_at.is_some_and(|t| now >= t) {
                self.horizon_lower_at = None;
                self.max_horizon = self.cfg.dead_after_ns;
                self.durable_horizon = self.durable_horizon.min(self.max_horizon);
                self.persist();
            }
            if !self.installed {
                // Retry the install: the shell reports failure again if it
                // still fails; heartbeats say `installed` only after this.
                self.dp = None;
                self.installed = true;
                self.refresh_dataplane(now);
            }
        }
        self.run_pending_accept(now);
        self.run_local(now);
        self.after_input(now);
    }

    /// Operator `drain`: stop taking new flows, finish existing ones (at most
    /// `timeout_ns`, default `drain_timeout`), then own nothing.
    pub fn drain(&mut self, now: Time, timeout_ns: Option<u64>) {
        self.operator_drain = true;
        self.drain_timeout_override = timeout_ns;
        self.after_input(now);
    }

    /// Operator `resume`: take a share again (also ends a manual-failback
    /// hold). A failing health check keeps the node drained regardless: it
    /// resumes when the check passes.
    pub fn resume(&mut self, now: Time) {
        self.operator_drain = false;
        self.failback_hold = false;
        self.drain_timeout_override = None;
        self.after_input(now);
    }

    /// Health checks: `failing` drains this node while it holds, and its
    /// end resumes it only if no operator drain or failback hold remains.
    pub fn set_health_drain(&mut self, now: Time, failing: bool) {
        self.health_drain = failing;
        self.after_input(now);
    }

    /// Why this node is drained by its own choice (for status): operator,
    /// health check, or manual failback hold.
    pub fn drain_reasons(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if self.operator_drain {
            r.push("operator drain");
        }
        if self.health_drain {
            r.push("health check failing");
        }
        if self.failback_hold {
            r.push("manual failback: waiting for resume");
        }
        r
    }

    /// Operator `stop`: hand everything off at once and leave; emits
    /// [`Event::Stopped`] when done (at once if we own nothing).
    pub fn stop(&mut self, now: Time) {
        self.leaving = true;
        self.drain_timeout_override = Some(0);
        self.after_input(now);
    }

    /// The shell's report on the write of `Persist { seq }`. A failure
    /// fences this node, stops it voting (its promises may not survive a
    /// restart) and silences its heartbeats (so the others fence it and take
    /// its buckets) until a later write succeeds; the shell drops the
    /// transmits that waited for it.
    pub fn persisted(&mut self, now: Time, seq: u64, ok: bool) {
        if ok {
            if seq > self.durable_seq {
                self.durable_seq = seq;
            }
            if self.durable_seq >= self.horizon_seq {
                self.durable_horizon = self.max_horizon;
            }
            if self.durable_seq >= self.persist_seq {
                self.storage_failed = false;
            }
        } else if seq >= self.durable_seq {
            self.storage_failed = true;
            self.revoke_lease();
        }
        self.after_input(now);
    }

    /// The shell could not write the last [`Event::Install`] to the data
    /// plane (which keeps its previous table). The node is fenced, reports
    /// itself not installed, drops the datagrams queued so far (they may
    /// claim the install), and retries at the next heartbeat.
    pub fn install_failed(&mut self, now: Time) {
        self.installed = false;
        // A lease extension queued behind the failed install must not reach
        // a data plane that still holds the old map.
        self.events
            .retain(|e| !matches!(e, Event::Lease { until } if until.0 > 0));
        self.revoke_lease();
        self.transmits.clear();
        self.after_input(now);
    }

    /// The promise horizon a restart of this member must honour now: the
    /// largest `dead_after` under which it may have promises outstanding.
    pub fn promise_horizon(&self) -> u64 {
        self.max_horizon
    }

    /// The value this node is proposing for an epoch, if it is in phase 2:
    /// `(epoch, ballot, ops)`. For the simulator's ballot-uniqueness check.
    pub fn proposal_in_flight(&self) -> Option<(u64, u64, &[Op])> {
        let p = self.proposal.as_ref()?;
        match &p.phase {
            Phase::Accepting { ops, .. } => Some((p.epoch, p.ballot, ops)),
            Phase::Preparing(_) => None,
        }
    }

    /// What keeps this node fenced besides quorum and lease, if anything.
    pub fn blocked(&self) -> Option<Blocked> {
        if self.storage_failed {
            Some(Blocked::Storage)
        } else if !self.installed {
            Some(Blocked::Install)
        } else {
            None
        }
    }

    fn persist_pending(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::Persist { .. }))
    }

    /// What this node asks of the cluster, from its reasons.
    fn wish(&self) -> Wish {
        if self.leaving {
            Wish::Leave
        } else if self.operator_drain || self.health_drain || self.failback_hold {
            Wish::Drained
        } else {
            Wish::Active
        }
    }

    /// Operator `rebalance`: ask for the canonical weight-exact layout.
    pub fn rebalance(&mut self, now: Time) {
        self.rebalance_requests += 1;
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
        let what = if config.self_id != self.cfg.self_id {
            Some("node id")
        } else if config.fingerprint != self.cfg.fingerprint {
            Some("settings every member must share (the config fingerprint)")
        } else if config.key != self.cfg.key {
            Some("the cluster key")
        } else if config.buckets != self.cfg.buckets {
            Some("buckets")
        } else if config.single_slots != self.cfg.single_slots {
            Some("single-slot rules")
        } else if config.members.len() != self.cfg.members.len()
            || config
                .members
                .iter()
                .zip(&self.cfg.members)
                .any(|(a, b)| a.id != b.id || a.role != b.role || a.addrs != b.addrs)
        {
            Some("members, roles or addresses")
        } else {
            None
        };
        if let Some(w) = what {
            return Err(ConfigError::Incompatible(w.into()));
        }
        self.auth = Authenticator::new(&config.key);
        let horizon = self.max_horizon.max(config.dead_after_ns);
        self.cfg = config;
        if horizon > self.max_horizon {
            self.max_horizon = horizon;
            self.horizon_lower_at = None;
            self.persist();
            self.horizon_seq = self.persist_seq;
        } else if self.cfg.dead_after_ns < self.max_horizon {
            // Promises already given keep their horizon until they run out.
            self.horizon_lower_at = Some(now + self.max_horizon);
        }
        self.after_input(now);
        Ok(())
    }

    /// Data-plane feedback: tracked connections remaining in this node's
    /// `RELEASING` slots. Zero ends the handoff.
    pub fn report_tracked_flows(&mut self, now: Time, remaining: u64) {
        self.flows_remaining = Some(remaining);
        self.after_input(now);
    }

    // --------------------------------------------------------------- outputs

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the shell.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.stop_emitted {
            return None;
        }
        let mut t = self.next_heartbeat;
        if let Some(p) = &self.pending_accept {
            t = t.min(p.ready_at);
        }
        // Wake exactly when a participating peer crosses `dead_after`, so a
        // failure is acted on at once rather than at the next heartbeat.
        for p in &self.peers {
            if let Some(last) = p.last_heard {
                let dead_at = last + self.cfg.dead_after_ns;
                if dead_at > self.last_input && self.state.participates(p.id) {
                    t = t.min(dead_at);
                }
            }
        }
        Some(t)
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

    /// Everything `xnlb status --json` shows.
    pub fn status(&self, now: Time) -> Status {
        let id = self.cfg.self_id;
        let buckets = self.cfg.buckets as usize;
        let owned: Vec<bool> = self.state.owner[..buckets]
            .iter()
            .map(|&o| o == id)
            .collect();
        let mut members = Vec::new();
        for m in &self.cfg.members {
            let (last_heard_ns, incarnation) = if m.id == id {
                (Some(0), self.incarnation)
            } else {
                let p = self.peer(m.id);
                (
                    p.and_then(|p| p.last_heard).map(|t| now.since(t)),
                    p.map_or(0, |p| p.incarnation),
                )
            };
            let rec = self.state.member(m.id);
            members.push(MemberStatus {
                id: m.id,
                role: m.role,
                state: self.member_state(now, m.id),
                weight: rec.map_or(m.weight, |r| r.weight),
                buckets: self.state.buckets_of(m.id),
                last_heard_ns,
                incarnation,
                epoch: if m.id == id {
                    self.state.epoch
                } else {
                    self.peer(m.id)
                        .and_then(|p| p.report.as_ref())
                        .map_or(0, |h| h.epoch)
                },
            });
        }
        let votes = self.votes(now);
        Status {
            node_id: id,
            cluster: self.cfg.cluster_name.clone(),
            role: self.role(),
            state: self.node_state(now),
            quorum: QuorumStatus {
                has: votes >= quorum::needed(self.voters),
                votes,
                needed: quorum::needed(self.voters),
                voters: self.voters,
            },
            epoch: self.state.epoch,
            converged: self.converged()
                && self.desired_ops(now).is_empty()
                && !self.undecided()
                && !self
                    .peers
                    .iter()
                    .any(|p| p.report.as_ref().is_some_and(|h| h.undecided)),
            buckets_total: buckets,
            buckets_owned: owned.iter().filter(|&&o| o).count(),
            owned_ranges: status::ranges(&owned),
            lease_until: self.lease_emitted,
            members,
            dropped: self
                .counters
                .iter()
                .map(|&(r, n)| (r.as_str(), n))
                .collect(),
            sent_bytes: self.sent_bytes,
            sent_datagrams: self.sent_datagrams,
            blocked: self.blocked().map(Blocked::as_str),
            drain_reasons: self.drain_reasons(),
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

    /// Internal protocol state in one line, for simulator traces and bug
    /// reports.
    pub fn debug_line(&self, now: Time) -> String {
        format!(
            "id {} epoch {} wish {:?} coord {} quorum {} proposal {:?} acceptor {:?} pending {:?} handoff_done {} releasing_since {:?} flows {:?} barrier {} desired {:?} lease {} horizon {}ms (lower at {:?}) blocked {:?}",
            self.cfg.self_id,
            self.state.epoch,
            self.wish(),
            self.is_coordinator(now),
            self.has_quorum(now),
            self.proposal.as_ref().map(|p| (p.epoch, p.ballot, matches!(p.phase, Phase::Accepting { .. }))),
            (self.acceptor.epoch, self.acceptor.promised, &self.acceptor.accepted),
            self.pending_accept.as_ref().map(|p| (p.epoch, p.ballot, p.ready_at)),
            self.handoff_done,
            self.releasing_since,
            self.flows_remaining,
            self.barrier_passed,
            self.desired_ops(now),
            self.lease_emitted,
            self.max_horizon / MS,
            self.horizon_lower_at,
            self.blocked(),
        )
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    // ------------------------------------------------------------- internals

    fn role(&self) -> Role {
        self.cfg
            .members
            .iter()
            .find(|m| m.id == self.cfg.self_id)
            .map_or(Role::Active, |m| m.role)
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

    fn member_state(&self, now: Time, id: u8) -> MemberState {
        let standing = self.state.member(id).map(|m| m.standing);
        match standing {
            Some(Standing::Left) => return MemberState::Left,
            Some(Standing::Draining | Standing::Leaving) => return MemberState::Draining,
            Some(Standing::Drained) => return MemberState::Drained,
            _ => {}
        }
        if id == self.cfg.self_id {
            return MemberState::Alive;
        }
        match self.peer(id).map(|p| self.liveness(now, p)) {
            Some(Liveness::Alive) => MemberState::Alive,
            Some(Liveness::Suspect) => MemberState::Suspect,
            _ => MemberState::Dead,
        }
    }

    fn node_state(&self, now: Time) -> NodeState {
        if self.stopped {
            return NodeState::Stopped;
        }
        if self.blocked().is_some() {
            return NodeState::Fenced;
        }
        let standing = self.state.member(self.cfg.self_id).map(|m| m.standing);
        match standing {
            Some(Standing::Fenced) => return NodeState::Fenced,
            Some(Standing::Absent | Standing::Left) | None => return NodeState::Joining,
            _ => {}
        }
        if !self.has_quorum(now) {
            return NodeState::NoQuorum;
        }
        if self.lease_emitted <= now {
            return NodeState::Fenced;
        }
        match standing {
            Some(Standing::Draining | Standing::Leaving) => NodeState::Draining,
            Some(Standing::Drained) => NodeState::Drained,
            _ => NodeState::Active,
        }
    }

    fn converged(&self) -> bool {
        self.barrier_passed
            && self.state.prev.iter().all(|&p| p == 0)
            && self.state.members.iter().all(|m| {
                !m.standing.participates()
                    || m.id == self.cfg.self_id
                    || self
                        .peer(m.id)
                        .and_then(|p| p.report.as_ref())
                        .is_some_and(|h| reports(h, self.state.epoch, self.digest))
            })
    }

    fn summary(&self) -> ConfigSummary {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for m in &self.cfg.members {
            h.update([m.id, m.role as u8]);
        }
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        ConfigSummary {
            buckets: self.cfg.buckets,
            singles: self.cfg.single_slots.len() as u16,
            heartbeat_ms: (self.cfg.heartbeat_interval_ns / MS) as u32,
            dead_after_ms: (self.cfg.dead_after_ns / MS) as u32,
            members_digest: u64::from_le_bytes(b),
            own_role: self.role(),
        }
    }

    fn mismatch(&self, theirs: &ConfigSummary) -> String {
        let ours = self.summary();
        let mut d = Vec::new();
        if ours.buckets != theirs.buckets {
            d.push(format!(
                "buckets {} vs ours {}",
                theirs.buckets, ours.buckets
            ));
        }
        if ours.singles != theirs.singles {
            d.push(format!(
                "{} single-slot rules vs ours {}",
                theirs.singles, ours.singles
            ));
        }
        if ours.heartbeat_ms != theirs.heartbeat_ms {
            d.push(format!(
                "heartbeat_interval_ms {} vs ours {}",
                theirs.heartbeat_ms, ours.heartbeat_ms
            ));
        }
        if ours.dead_after_ms != theirs.dead_after_ms {
            d.push(format!(
                "dead_after_ms {} vs ours {}",
                theirs.dead_after_ms, ours.dead_after_ms
            ));
        }
        if ours.members_digest != theirs.members_digest {
            d.push("member list or roles differ".into());
        }
        if d.is_empty() {
            d.push("config fingerprint differs (VIPs, rules or other shared keys)".into());
        }
        d.join("; ")
    }

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
            if !self.peers[pi].mismatch_reported {
                if let Body::Heartbeat(hb) = &msg.body {
                    let what = self.mismatch(&hb.summary);
                    self.peers[pi].mismatch_reported = true;
                    self.events.push_back(Event::ConfigMismatch {
                        member: h.from,
                        what,
                    });
                }
            }
            return Err(DropReason::FingerprintMismatch);
        }
        let peer = &mut self.peers[pi];
        if h.incarnation < peer.incarnation {
            return Err(DropReason::StaleIncarnation);
        }
        if h.incarnation > peer.incarnation {
            let restarted = peer.incarnation != 0;
            peer.incarnation = h.incarnation;
            peer.replay = Default::default();
            peer.vouch = None;
            peer.echo_of_ours = 0;
            peer.echo_horizon = 0;
            peer.diverged_at = 0;
            peer.mismatch_reported = false;
            if restarted {
                let id = peer.id;
                self.events.push_back(Event::MemberState {
                    id,
                    state: MemberState::Alive,
                    why: format!("member {id} restarted (new incarnation {})", h.incarnation),
                });
            }
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

    fn run_local(&mut self, now: Time) {
        while let Some((from, body)) = self.local.pop_front() {
            self.handle_body(now, from, 0, body);
        }
    }

    fn handle_body(&mut self, now: Time, from: u8, link: usize, body: Body) {
        match body {
            Body::Heartbeat(hb) => self.on_heartbeat(now, from, link, hb),
            Body::Prepare { epoch, ballot } => self.on_prepare(now, from, link, epoch, ballot),
            Body::Promise {
                epoch,
                ballot,
                accepted,
            } => self.on_promise(now, from, epoch, ballot, accepted),
            Body::Accept { epoch, ballot, ops } => {
                self.on_accept(now, from, link, epoch, ballot, ops)
            }
            Body::Accepted { epoch, ballot } => self.on_accepted(now, from, epoch, ballot),
            Body::Reject {
                epoch,
                promised,
                committed,
            } => {
                self.max_round = self.max_round.max(epoch::round_of(promised));
                if committed >= epoch {
                    self.request_sync(now, from, link);
                }
                if self
                    .proposal
                    .as_ref()
                    .is_some_and(|p| p.epoch == epoch && p.ballot < promised)
                {
                    self.proposal = None;
                    // Only a live lower-id rival outranks us as coordinator;
                    // higher ids and dead proposers are outbid at once.
                    let rival = (promised & 0xff) as u8;
                    let live_rival = rival < self.cfg.self_id
                        && self
                            .peer(rival)
                            .is_some_and(|p| self.liveness(now, p) != Liveness::Dead);
                    self.retry_after = if live_rival {
                        now + self.backoff()
                    } else {
                        now
                    };
                }
            }
            Body::Commit { epoch, ops, digest } => {
                self.on_commit(now, from, link, epoch, ops, digest)
            }
            Body::SyncRequest { have, digest } => self.on_sync_request(from, link, have, digest),
            Body::SnapshotChunk {
                epoch,
                digest,
                index,
                count,
                data,
            } => self.on_chunk(now, epoch, digest, index, count, data),
        }
    }

    fn on_heartbeat(&mut self, now: Time, from: u8, link: usize, hb: Heartbeat) {
        let Some(pi) = self.peer_index(from) else {
            return;
        };
        let floor = self.acceptor.floor(from);
        let dead_after = self.cfg.dead_after_ns;
        let my_inc = self.incarnation;
        // Same epoch, different state: one of us holds a table the committed
        // log does not. Never vouch for it; repair by snapshot (only a state
        // a quorum reports is adopted, see `on_chunk`).
        let diverged = hb.epoch == self.state.epoch && hb.digest != self.digest;
        let epoch = self.state.epoch;
        let peer = &mut self.peers[pi];
        if hb.echo_incarnation == my_inc && hb.echo > peer.echo_of_ours {
            peer.echo_of_ours = hb.echo;
            peer.echo_horizon = hb.echo_horizon;
        }
        if diverged {
            peer.vouch = None;
            if peer.diverged_at != epoch {
                peer.diverged_at = epoch;
                self.events.push_back(Event::Divergence {
                    member: from,
                    epoch,
                });
            }
            let peer = &mut self.peers[pi];
            peer.report = Some(hb);
            self.request_sync(now, from, link);
            return;
        }
        if hb.epoch >= floor && peer.vouch.is_none_or(|(t, _)| hb.sent_at > t) {
            peer.vouch = Some((hb.sent_at, now));
            let until = now + dead_after;
            match self.promise_until.iter_mut().find(|(m, _)| *m == from) {
                Some((_, t)) => *t = (*t).max(until),
                None => self.promise_until.push((from, until)),
            }
        }
        let behind = hb.epoch > self.state.epoch;
        let peer = &mut self.peers[pi];
        peer.report = Some(hb);
        if behind {
            self.request_sync(now, from, link);
        }
    }

    fn request_sync(&mut self, now: Time, to: u8, link: usize) {
        if now.since(self.sync_sent) < self.cfg.heartbeat_interval_ns && self.sync_sent != Time(0) {
            return;
        }
        self.sync_sent = now;
        self.send_on(
            to,
            link,
            Body::SyncRequest {
                have: self.state.epoch,
                digest: self.digest,
            },
        );
    }

    fn on_sync_request(&mut self, from: u8, link: usize, have: u64, digest: u64) {
        if have > self.state.epoch || (have == self.state.epoch && digest == self.digest) {
            return;
        }
        let first = self.log.front().map(|e| e.0);
        if have < self.state.epoch && first.is_some_and(|f| f <= have + 1) {
            let entries: Vec<_> = self.log.iter().filter(|e| e.0 > have).cloned().collect();
            for (epoch, ops, digest) in entries {
                self.send_on(from, link, Body::Commit { epoch, ops, digest });
            }
            return;
        }
        let bytes = self.state.to_bytes();
        let count = bytes.len().div_ceil(SNAPSHOT_CHUNK);
        for (index, chunk) in bytes.chunks(SNAPSHOT_CHUNK).enumerate() {
            self.send_on(
                from,
                link,
                Body::SnapshotChunk {
                    epoch: self.state.epoch,
                    digest: self.digest,
                    index: index as u16,
                    count: count as u16,
                    data: chunk.to_vec(),
                },
            );
        }
    }

    fn on_chunk(
        &mut self,
        now: Time,
        epoch: u64,
        digest: u64,
        index: u16,
        count: u16,
        data: Vec<u8>,
    ) {
        let repair = epoch == self.state.epoch && digest != self.digest;
        if (epoch <= self.state.epoch && !repair) || count == 0 || index >= count || count > 64 {
            return;
        }
        let fresh = self.snapshot_rx.as_ref().is_none_or(|r| {
            r.epoch != epoch || r.digest != digest || r.chunks.len() != count as usize
        });
        if fresh {
            self.snapshot_rx = Some(SnapshotRx {
                epoch,
                digest,
                chunks: vec![None; count as usize],
            });
        }
        let Some(rx) = self.snapshot_rx.as_mut() else {
            return;
        };
        rx.chunks[index as usize] = Some(data);
        if rx.chunks.iter().any(|c| c.is_none()) {
            return;
        }
        let bytes: Vec<u8> = rx.chunks.iter().flatten().flatten().copied().collect();
        self.snapshot_rx = None;
        match ClusterState::from_bytes(&bytes) {
            Some(s)
                if s.epoch == epoch
                    && s.digest() == digest
                    && state_fits(&s, &self.cfg).is_ok() =>
            {
                if repair && !self.quorum_reports(epoch, digest) {
                    // Our state differs from one peer's; adopt theirs only if
                    // a quorum of members holds it (it is then the committed
                    // one), else wait for the one that is wrong to repair.
                    return;
                }
                let why = if repair {
                    "state repaired by snapshot (it differed from a quorum's at the same epoch)"
                } else {
                    "caught up by snapshot"
                };
                self.install(now, s, why.into(), Vec::new());
            }
            _ => self.count_drop(DropReason::Malformed),
        }
    }

    /// Whether at least a quorum of members (by their latest heartbeats)
    /// report holding `(epoch, digest)`.
    fn quorum_reports(&self, epoch: u64, digest: u64) -> bool {
        let n = self
            .peers
            .iter()
            .filter(|p| {
                p.report
                    .as_ref()
                    .is_some_and(|h| h.epoch == epoch && h.digest == digest)
            })
            .count();
        n >= quorum::needed(self.voters)
    }

    fn on_prepare(&mut self, now: Time, from: u8, link: usize, epoch: u64, ballot: Ballot) {
        if self.storage_failed {
            // A vote must survive a restart; with no working disk, abstain.
            return;
        }
        let committed = self.state.epoch;
        if epoch <= committed {
            self.send_on(
                from,
                link,
                Body::Reject {
                    epoch,
                    promised: 0,
                    committed,
                },
            );
            return;
        }
        if epoch > committed + 1 {
            self.request_sync(now, from, link);
            return;
        }
        self.max_round = self.max_round.max(epoch::round_of(ballot));
        if ballot >= self.acceptor.promised {
            if ballot > self.acceptor.promised {
                self.acceptor.promised = ballot;
                self.persist();
            }
            let accepted = self.acceptor.accepted.clone();
            self.send_on(
                from,
                link,
                Body::Promise {
                    epoch,
                    ballot,
                    accepted,
                },
            );
        } else {
            let promised = self.acceptor.promised;
            self.send_on(
                from,
                link,
                Body::Reject {
                    epoch,
                    promised,
                    committed,
                },
            );
        }
    }

    fn on_accept(
        &mut self,
        now: Time,
        from: u8,
        link: usize,
        epoch: u64,
        ballot: Ballot,
        ops: Vec<Op>,
    ) {
        if self.storage_failed {
            return;
        }
        let committed = self.state.epoch;
        if epoch <= committed {
            self.send_on(
                from,
                link,
                Body::Reject {
                    epoch,
                    promised: 0,
                    committed,
                },
            );
            return;
        }
        if epoch > committed + 1 {
            self.request_sync(now, from, link);
            return;
        }
        if ballot < self.acceptor.promised {
            let promised = self.acceptor.promised;
            self.send_on(
                from,
                link,
                Body::Reject {
                    epoch,
                    promised,
                    committed,
                },
            );
            return;
        }
        self.acceptor.promised = ballot;
        let mut ready_at = now;
        for op in &ops {
            if let Op::Fence { id } = *op {
                if id == self.cfg.self_id {
                    // Voting for our own fencing means stepping down first:
                    // the lease is revoked (and stays so until we install
                    // this epoch) before our `Accepted` can leave. Refusing
                    // instead could deadlock a value Paxos must carry on.
                    self.acceptor.raise_floor(id, epoch);
                    self.persist();
                    self.revoke_lease();
                    continue;
                }
                // Stop vouching for it at once, then wait out our promises.
                self.acceptor.raise_floor(id, epoch);
                if let Some(p) = self.peer_index(id) {
                    self.peers[p].vouch = None;
                }
                // Promises of earlier incarnations: the largest horizon
                // this member ever advertised, counted from this start.
                ready_at = ready_at.max(self.started + self.max_horizon);
                if let Some(&(_, t)) = self.promise_until.iter().find(|(m, _)| *m == id) {
                    ready_at = ready_at.max(t);
                }
            }
        }
        self.persist();
        self.pending_accept = Some(PendingAccept {
            epoch,
            ballot,
            ops,
            from,
            ready_at,
        });
        self.run_pending_accept(now);
    }

    fn run_pending_accept(&mut self, now: Time) {
        let Some(p) = self.pending_accept.as_ref() else {
            return;
        };
        if p.epoch != self.state.epoch + 1 || p.ballot != self.acceptor.promised {
            self.pending_accept = None;
            return;
        }
        if p.ready_at > now {
            return;
        }
        let Some(p) = self.pending_accept.take() else {
            return;
        };
        self.acceptor.accepted = Some((p.ballot, p.ops));
        self.persist();
        self.send_all_links(
            p.from,
            Body::Accepted {
                epoch: p.epoch,
                ballot: p.ballot,
            },
        );
    }

    fn on_promise(
        &mut self,
        now: Time,
        from: u8,
        epoch: u64,
        ballot: Ballot,
        accepted: Option<(Ballot, Vec<Op>)>,
    ) {
        let needed = quorum::needed(self.voters);
        let Some(p) = self.proposal.as_mut() else {
            return;
        };
        if p.epoch != epoch || p.ballot != ballot {
            return;
        }
        let Phase::Preparing(promises) = &mut p.phase else {
            return;
        };
        if promises.iter().any(|(m, _)| *m == from) {
            return;
        }
        promises.push((from, accepted));
        if promises.len() < needed {
            return;
        }
        let prior = promises
            .iter()
            .filter_map(|(_, a)| a.clone())
            .max_by_key(|(b, _)| *b)
            .map(|(_, ops)| ops);
        let ops = match prior {
            Some(ops) => ops,
            // Possibly empty: a no-op epoch still settles floors.
            None => self.desired_ops(now),
        };
        if let Some(p) = self.proposal.as_mut() {
            p.phase = Phase::Accepting {
                ops: ops.clone(),
                accepted: Vec::new(),
            };
            p.last_sent = now;
        }
        self.broadcast(Body::Accept { epoch, ballot, ops });
    }

    fn on_accepted(&mut self, now: Time, from: u8, epoch: u64, ballot: Ballot) {
        let needed = quorum::needed(self.voters);
        let Some(p) = self.proposal.as_mut() else {
            return;
        };
        if p.epoch != epoch || p.ballot != ballot {
            return;
        }
        let Phase::Accepting { ops, accepted } = &mut p.phase else {
            return;
        };
        if !accepted.contains(&from) {
            accepted.push(from);
        }
        if accepted.len() < needed {
            return;
        }
        let ops = ops.clone();
        self.proposal = None;
        let next = self.state.apply(&ops);
        let digest = next.digest();
        self.broadcast_remote(Body::Commit {
            epoch,
            ops: ops.clone(),
            digest,
        });
        self.install(now, next, String::new(), ops);
    }

    fn on_commit(
        &mut self,
        now: Time,
        from: u8,
        link: usize,
        epoch: u64,
        ops: Vec<Op>,
        digest: u64,
    ) {
        if epoch <= self.state.epoch {
            return;
        }
        if epoch > self.state.epoch + 1 {
            self.request_sync(now, from, link);
            return;
        }
        let next = self.state.apply(&ops);
        if next.digest() != digest {
            // Our state diverged from the committer's: never install a map we
            // cannot prove equal; fetch theirs instead.
            self.count_drop(DropReason::Malformed);
            self.sync_sent = Time(0);
            self.request_sync(now, from, link);
            return;
        }
        self.install(now, next, String::new(), ops);
    }

    /// Adopts a committed state.
    fn install(&mut self, now: Time, next: ClusterState, why: String, ops: Vec<Op>) {
        let from = self.state.epoch;
        let before = std::mem::replace(&mut self.state, next);
        self.digest = self.state.digest();
        if !ops.is_empty() {
            self.log
                .push_back((self.state.epoch, ops.clone(), self.digest));
            while self.log.len() > LOG_LEN {
                self.log.pop_front();
            }
        } else {
            self.log.clear();
        }
        self.acceptor.advance(self.state.epoch);
        if self
            .proposal
            .as_ref()
            .is_some_and(|p| p.epoch <= self.state.epoch)
        {
            self.proposal = None;
        }
        self.barrier_passed = false;
        if self
            .snapshot_rx
            .as_ref()
            .is_some_and(|r| r.epoch <= self.state.epoch)
        {
            self.snapshot_rx = None;
        }
        self.persist();
        let mut why = why;
        if why.is_empty() {
            why = ops
                .iter()
                .map(epoch::describe)
                .collect::<Vec<_>>()
                .join(", ");
        }
        why.push_str(&moved_summary(&before, &self.state));
        self.events.push_back(Event::Epoch {
            from,
            to: self.state.epoch,
            why,
        });
        for m in &self.state.members {
            let old = before.member(m.id).map(|r| r.standing);
            if old != Some(m.standing) {
                let state = match m.standing {
                    Standing::Left => MemberState::Left,
                    Standing::Draining | Standing::Leaving => MemberState::Draining,
                    Standing::Drained => MemberState::Drained,
                    Standing::Fenced | Standing::Absent => MemberState::Dead,
                    Standing::Active => MemberState::Alive,
                };
                self.events.push_back(Event::MemberState {
                    id: m.id,
                    state,
                    why: format!("epoch {}: {:?} -> {:?}", self.state.epoch, old, m.standing),
                });
            }
        }
        let me = self.cfg.self_id;
        let was_fenced = before
            .member(me)
            .is_some_and(|m| m.standing == Standing::Fenced);
        let is_fenced = self
            .state
            .member(me)
            .is_some_and(|m| m.standing == Standing::Fenced);
        if self.cfg.failback == Failback::Manual && is_fenced && !was_fenced && !self.leaving {
            self.failback_hold = true;
        }
        self.refresh_dataplane(now);
        // Tell everyone at once: their barriers wait for our confirmation.
        self.send_heartbeats(now);
    }

    fn persist(&mut self) {
        let p = Persisted {
            version: PERSIST_VERSION,
            incarnation: self.incarnation,
            state: self.state.to_bytes(),
            acceptor: self.acceptor.clone(),
            max_round: self.max_round,
            max_horizon: self.max_horizon,
        };
        if let Ok(mut state) = bincode::encode_to_vec(&p, bincode::config::standard()) {
            state.extend_from_slice(&checksum(&state));
            // Only the latest matters; drop an unconsumed older one (its
            // waiting transmits are released by this one's write).
            self.persist_seq += 1;
            self.events.retain(|e| !matches!(e, Event::Persist { .. }));
            self.events.push_back(Event::Persist {
                seq: self.persist_seq,
                state,
            });
        }
    }

    /// Whether every participating member has confirmed our (epoch, digest).
    fn barrier(&self) -> bool {
        self.state.members.iter().all(|m| {
            !m.standing.participates()
                || m.role == Role::Witness
                || m.id == self.cfg.self_id
                || self
                    .peer(m.id)
                    .and_then(|p| p.report.as_ref())
                    .is_some_and(|h| reports(h, self.state.epoch, self.digest))
        })
    }

    fn refresh_dataplane(&mut self, now: Time) {
        let id = self.cfg.self_id;
        let participating = !self.stopped && self.state.participates(id);
        if !self.barrier_passed && self.barrier() {
            self.barrier_passed = true;
        }
        let barrier = self.barrier_passed;
        let current = self.dp.clone();
        let mut next = Vec::with_capacity(self.state.owner.len());
        for s in 0..self.state.owner.len() {
            let desired = if !participating {
                if self.state.prev[s] == id && !self.stopped {
                    RELEASING
                } else {
                    NOT_OWNED
                }
            } else if self.state.owner[s] == id {
                if self.state.prev[s] != 0 {
                    ACQUIRING
                } else {
                    OWNED
                }
            } else if self.state.prev[s] == id {
                RELEASING
            } else {
                NOT_OWNED
            };
            let cur = current.as_ref().map_or(NOT_OWNED, |c| c[s]);
            let st = if barrier {
                desired
            } else {
                limit(cur, desired)
            };
            next.push(st);
        }
        let releasing = next.contains(&RELEASING);
        if releasing && self.releasing_since.is_none() {
            self.releasing_since = Some(now);
        }
        if !releasing {
            self.releasing_since = None;
        }
        if current.as_ref() != Some(&next) {
            let newly_releasing = next
                .iter()
                .zip(current.as_deref().unwrap_or(&[]))
                .any(|(n, c)| *n == RELEASING && *c != RELEASING)
                || (current.is_none() && releasing);
            if newly_releasing {
                self.flows_remaining = None;
            }
            let b = self.cfg.buckets as usize;
            self.events.push_back(Event::Install {
                epoch: self.state.epoch,
                states: next[..b].to_vec(),
                singles: next[b..].to_vec(),
            });
            self.dp = Some(next);
            // Until the shell says otherwise (`install_failed`, before any
            // transmit leaves), the data plane holds this.
            self.installed = true;
        }
    }

    fn revoke_lease(&mut self) {
        if self.lease_emitted != Time(0) {
            self.lease_emitted = Time(0);
            self.events.push_back(Event::Lease { until: Time(0) });
        }
    }

    fn refresh_lease(&mut self, now: Time) {
        let serving = !self.stopped
            && self.blocked().is_none()
            && self.state.participates(self.cfg.self_id)
            && self.state.epoch >= self.acceptor.floor(self.cfg.self_id);
        if !serving {
            self.revoke_lease();
            return;
        }
        // Each voter supports the end its own promise allows; ours is sized
        // by our own timers only because we revoke before voting to fence
        // ourselves (see `quorum`).
        let mut ends = vec![quorum::voucher_end(now.0, self.cfg.dead_after_ns)];
        ends.extend(
            self.peers
                .iter()
                .map(|p| quorum::voucher_end(p.echo_of_ours, p.echo_horizon)),
        );
        let Some(t) = quorum::lease_end(ends, quorum::needed(self.voters)) else {
            return;
        };
        let until = Time(t);
        if until > self.lease_emitted + self.cfg.heartbeat_interval_ns / 4 {
            self.lease_emitted = until;
            self.events.push_back(Event::Lease { until });
        }
    }

    fn refresh_handoff(&mut self, now: Time) {
        let Some(since) = self.releasing_since else {
            if self.handoff_done < self.state.epoch {
                self.handoff_done = self.state.epoch;
            }
            return;
        };
        if self.handoff_done >= self.state.epoch {
            return;
        }
        let timeout = self
            .drain_timeout_override
            .unwrap_or(self.cfg.drain_timeout_ns);
        let flows_done = self.flows_remaining == Some(0);
        let timed_out = now.since(since) >= timeout;
        if flows_done || timed_out {
            self.handoff_done = self.state.epoch;
            self.events.push_back(Event::HandoffDone {
                epoch: self.state.epoch,
                timed_out: !flows_done,
            });
        }
    }

    fn after_input(&mut self, now: Time) {
        self.last_input = self.last_input.max(now);
        if !self.barrier_passed && self.barrier() {
            self.refresh_dataplane(now);
        }
        self.refresh_handoff(now);
        self.refresh_lease(now);
        self.refresh_liveness_events(now);
        self.coordinate(now);
        self.run_local(now);
        if self.leaving && !self.stop_emitted && !self.state.participates(self.cfg.self_id) {
            self.stopped = true;
            self.stop_emitted = true;
            self.refresh_dataplane(now);
            self.refresh_lease(now);
            self.events.push_back(Event::Stopped);
        }
    }

    fn refresh_liveness_events(&mut self, now: Time) {
        let has = self.has_quorum(now);
        if has != self.had_quorum {
            self.had_quorum = has;
            let votes = self.votes(now);
            self.events.push_back(Event::Quorum {
                has,
                why: format!(
                    "{votes} of {} voters reachable, {} needed",
                    self.voters,
                    quorum::needed(self.voters)
                ),
            });
        }
        let hb = self.cfg.heartbeat_interval_ns;
        let dead = self.cfg.dead_after_ns;
        for i in 0..self.peers.len() {
            let l = self.liveness(now, &self.peers[i]);
            let p = &mut self.peers[i];
            if p.reported_liveness == Some(l)
                || (p.reported_liveness.is_none() && l != Liveness::Alive)
            {
                if p.reported_liveness.is_none() && l == Liveness::Dead {
                    p.reported_liveness = Some(l);
                }
                continue;
            }
            p.reported_liveness = Some(l);
            let (state, why) = match l {
                Liveness::Alive => (MemberState::Alive, format!("member {} heard", p.id)),
                Liveness::Suspect => (
                    MemberState::Suspect,
                    format!(
                        "member {} silent for {} ms",
                        p.id,
                        now.since(p.last_heard.unwrap_or(now)) / MS
                    ),
                ),
                Liveness::Dead => (
                    MemberState::Dead,
                    format!(
                        "member {} silent for {} ms on all {} links (dead after {} ms)",
                        p.id,
                        now.since(p.last_heard.unwrap_or(now)) / MS,
                        p.links,
                        dead / MS
                    ),
                ),
            };
            let _ = hb;
            self.events.push_back(Event::MemberState {
                id: p.id,
                state,
                why,
            });
        }
    }

    fn backoff(&self) -> u64 {
        self.cfg.heartbeat_interval_ns * (1 + (self.cfg.self_id as u64 % 3))
    }

    /// Whether this node should propose: it has quorum, is caught up, and no
    /// lower-id voter that is alive and caught up exists.
    fn is_coordinator(&self, now: Time) -> bool {
        if self.stopped || self.blocked().is_some() || !self.has_quorum(now) {
            return false;
        }
        for p in &self.peers {
            let Some(h) = p.report.as_ref() else { continue };
            if h.epoch > self.state.epoch {
                return false;
            }
            if p.id < self.cfg.self_id
                && h.quorum
                && self.liveness(now, p) != Liveness::Dead
                && h.epoch >= self.state.epoch
            {
                return false;
            }
        }
        true
    }

    fn coordinate(&mut self, now: Time) {
        if !self.is_coordinator(now) {
            return;
        }
        let retry = self.cfg.dead_after_ns + 4 * self.cfg.heartbeat_interval_ns;
        if let Some(p) = self.proposal.as_mut() {
            if now.since(p.started) > retry {
                self.proposal = None;
                self.retry_after = now;
            } else {
                if now.since(p.last_sent) >= self.cfg.heartbeat_interval_ns {
                    p.last_sent = now;
                    let (epoch, ballot) = (p.epoch, p.ballot);
                    let body = match &p.phase {
                        Phase::Preparing(_) => Body::Prepare { epoch, ballot },
                        Phase::Accepting { ops, .. } => Body::Accept {
                            epoch,
                            ballot,
                            ops: ops.clone(),
                        },
                    };
                    self.broadcast_remote(body);
                }
                return;
            }
        }
        if now < self.retry_after {
            return;
        }
        // A value some acceptor may hold must be carried forward, so a
        // proposal starts whenever we know of one, even with nothing to do.
        let epoch_now = self.state.epoch;
        let carried = self.undecided()
            || self.peers.iter().any(|p| {
                p.report
                    .as_ref()
                    .is_some_and(|h| h.undecided && h.epoch == epoch_now)
            });
        if !carried && self.desired_ops(now).is_empty() {
            return;
        }
        self.max_round += 1;
        // The round is persisted before the Prepare leaves (it waits for
        // this write), so a restarted proposer never reuses a ballot.
        self.persist();
        let epoch = self.state.epoch + 1;
        let ballot = epoch::ballot(self.max_round, self.cfg.self_id);
        self.proposal = Some(Proposal {
            epoch,
            ballot,
            phase: Phase::Preparing(Vec::new()),
            started: now,
            last_sent: now,
        });
        self.broadcast(Body::Prepare { epoch, ballot });
    }

    /// Whether our acceptor holds something about the next epoch that only
    /// deciding it will settle (an accepted value, or a fencing floor that
    /// stops us vouching for someone until then).
    fn undecided(&self) -> bool {
        self.acceptor.accepted.is_some()
            || self
                .acceptor
                .floors
                .iter()
                .any(|&(_, e)| e > self.state.epoch)
    }

    /// The operations the coordinator wants in the next epoch.
    fn desired_ops(&self, now: Time) -> Vec<Op> {
        let mut ops = Vec::new();
        let me = self.cfg.self_id;
        for m in &self.state.members {
            let (alive, dead, wish, weight, done, rebal, inc) = if m.id == me {
                let w = self
                    .cfg
                    .members
                    .iter()
                    .find(|c| c.id == me)
                    .map_or(m.weight, |c| c.weight);
                (
                    true,
                    false,
                    self.wish(),
                    w,
                    self.handoff_done,
                    self.rebalance_requests,
                    self.incarnation,
                )
            } else {
                let Some(p) = self.peer(m.id) else { continue };
                let l = self.liveness(now, p);
                let Some(h) = p.report.as_ref() else {
                    if m.standing.participates() && l == Liveness::Dead {
                        ops.push(Op::Fence { id: m.id });
                    }
                    continue;
                };
                (
                    l == Liveness::Alive,
                    l == Liveness::Dead,
                    h.wish,
                    h.weight,
                    h.handoff_done,
                    h.rebalance_requests,
                    p.incarnation,
                )
            };
            let part = m.standing.participates();
            if part && dead {
                ops.push(Op::Fence { id: m.id });
                continue;
            }
            if !part {
                if alive && wish != Wish::Leave {
                    ops.push(Op::Admit {
                        id: m.id,
                        incarnation: inc,
                        weight,
                        drained: wish == Wish::Drained,
                    });
                }
                continue;
            }
            let standing_op = match (m.standing, wish) {
                (Standing::Active, Wish::Drained) => Some(Op::Drain { id: m.id }),
                (Standing::Draining | Standing::Drained, Wish::Active) => {
                    Some(Op::Resume { id: m.id })
                }
                (Standing::Active | Standing::Draining | Standing::Drained, Wish::Leave) => {
                    Some(Op::Leave { id: m.id })
                }
                _ => None,
            };
            let has_prev = self.state.prev.contains(&m.id);
            let handing = matches!(m.standing, Standing::Draining | Standing::Leaving);
            if let Some(op) = standing_op {
                // One standing change per member per epoch: a handoff may only
                // end in an epoch after the member installed (and reported)
                // the one that started it, or a leaver could stop
                // participating before it released anything.
                ops.push(op);
            } else if (has_prev && done >= self.state.epoch) || (handing && !has_prev) {
                ops.push(Op::HandoffDone { id: m.id });
            }
            if weight != m.weight && (1..=10_000).contains(&weight) {
                ops.push(Op::SetWeight { id: m.id, weight });
            }
            if rebal > m.rebalance_seen {
                ops.push(Op::Rebalance {
                    id: m.id,
                    request: rebal,
                });
            }
        }
        ops.truncate(MAX_OPS);
        ops
    }

    // -------------------------------------------------------------- sending

    fn send_heartbeats(&mut self, now: Time) {
        if self.stop_emitted || self.blocked().is_some() {
            // A node that cannot write its state or install its map goes
            // silent (no datagram at all, see `send_on`), so the others
            // fence it and serve its buckets rather than leave them
            // unserved; it rejoins once it recovers.
            return;
        }
        let summary = self.summary();
        let quorum = self.has_quorum(now);
        let undecided = self.undecided();
        let weight = self
            .cfg
            .members
            .iter()
            .find(|m| m.id == self.cfg.self_id)
            .map_or(1, |m| m.weight);
        // Advertise only a horizon a restart would keep (durable), and never
        // more than the promise we actually keep now (`dead_after`).
        let echo_horizon = self.cfg.dead_after_ns.min(self.durable_horizon);
        let wish = self.wish();
        for i in 0..self.peers.len() {
            let p = &self.peers[i];
            let (echo, echo_incarnation) = match p.vouch {
                Some((t, _)) => (t, p.incarnation),
                None => (0, 0),
            };
            let hb = Heartbeat {
                sent_at: now.0,
                echo,
                echo_incarnation,
                echo_horizon,
                epoch: self.state.epoch,
                digest: self.digest,
                installed: self.installed,
                wish,
                weight,
                handoff_done: self.handoff_done,
                rebalance_requests: self.rebalance_requests,
                quorum,
                undecided,
                summary: summary.clone(),
            };
            let id = p.id;
            self.send_all_links(id, Body::Heartbeat(hb));
        }
    }

    fn links_to(&self, to: u8) -> usize {
        let mine = self
            .cfg
            .members
            .iter()
            .find(|m| m.id == self.cfg.self_id)
            .map_or(1, |m| m.addrs);
        let theirs = self.peer(to).map_or(1, |p| p.links);
        mine.min(theirs).max(1)
    }

    fn send_all_links(&mut self, to: u8, body: Body) {
        if to == self.cfg.self_id {
            self.local.push_back((to, body));
            return;
        }
        for link in 0..self.links_to(to) {
            self.send_on(to, link, body.clone());
        }
    }

    fn send_on(&mut self, to: u8, link: usize, body: Body) {
        if self.blocked().is_some() {
            // Silent while blocked: see `send_heartbeats`.
            return;
        }
        if to == self.cfg.self_id {
            self.local.push_back((to, body));
            return;
        }
        self.seq += 1;
        // Heartbeats wait only for the first write, which records this
        // incarnation: a restart whose incarnation was never written could
        // reuse it after a clock step, and be taken for a replay.
        let after_persist = if matches!(body, Body::Heartbeat(_)) {
            self.persist_seq.min(1)
        } else {
            self.persist_seq
        };
        let msg = Message {
            header: Header {
                from: self.cfg.self_id,
                to,
                incarnation: self.incarnation,
                seq: self.seq,
                fingerprint: self.cfg.fingerprint,
            },
            body,
        };
        if let Some(bytes) = wire::encode(&self.auth, &msg) {
            self.sent_bytes += bytes.len() as u64;
            self.sent_datagrams += 1;
            let link = link.min(self.links_to(to) - 1);
            self.transmits.push_back(Transmit {
                to,
                link,
                bytes,
                after_persist,
            });
        }
    }

    /// To every voter, ourselves included (via the local queue).
    fn broadcast(&mut self, body: Body) {
        self.local.push_back((self.cfg.self_id, body.clone()));
        self.broadcast_remote(body);
    }

    fn broadcast_remote(&mut self, body: Body) {
        let ids: Vec<u8> = self.peers.iter().map(|p| p.id).collect();
        for id in ids {
            self.send_all_links(id, body.clone());
        }
    }
}

/// Never gain acceptance of new flows without the barrier.
fn limit(current: u8, desired: u8) -> u8 {
    let accepts_new = |s: u8| s == OWNED || s == ACQUIRING;
    match (current, desired) {
        (OWNED, ACQUIRING) => ACQUIRING,
        (c, d) if accepts_new(d) && !accepts_new(c) => c,
        (ACQUIRING, OWNED) => ACQUIRING,
        (_, d) => d,
    }
}

/// Whether a peer's heartbeat says its data plane holds `(epoch, digest)`.
fn reports(h: &Heartbeat, epoch: u64, digest: u64) -> bool {
    h.installed && h.epoch == epoch && h.digest == digest
}

/// Checks a state from a snapshot or a state file against our config before
/// anything uses it: a state that decodes may still come from another
/// layout, or (from a key holder) be crafted to make assignment index out of
/// range.
fn state_fits(s: &ClusterState, cfg: &Config) -> Result<(), String> {
    if s.buckets != cfg.buckets || s.owner.len() != cfg.slots() || s.prev.len() != s.owner.len() {
        return Err(format!(
            "{} buckets and {} slots, configured {} and {}",
            s.buckets,
            s.owner.len(),
            cfg.buckets,
            cfg.slots()
        ));
    }
    if s.members.len() != cfg.members.len()
        || !s
            .members
            .iter()
            .zip(&cfg.members)
            .all(|(a, b)| a.id == b.id && a.role == b.role)
    {
        return Err("members or roles differ from the configured ones".into());
    }
    if s.priorities != cfg.single_slots {
        return Err("single-slot priority lists differ from the configured ones".into());
    }
    if let Some(m) = s.members.iter().find(|m| !(1..=10_000).contains(&m.weight)) {
        return Err(format!("member {} has weight {}", m.id, m.weight));
    }
    let known = |id: u8| id == 0 || s.members.iter().any(|m| m.id == id);
    if let Some(id) = s.owner.iter().chain(&s.prev).find(|&&id| !known(id)) {
        return Err(format!("a slot names unknown member {id}"));
    }
    Ok(())
}

/// Length of the checksum that ends a persisted state.
const CHECKSUM_LEN: usize = 8;

/// First bytes of SHA-256: a torn or bit-flipped state file is refused
/// rather than restored with silently different promises.
fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(body);
    let mut c = [0u8; CHECKSUM_LEN];
    c.copy_from_slice(&d[..CHECKSUM_LEN]);
    c
}

/// The persisted bytes without their checksum, if it matches.
fn checked_body(bytes: &[u8]) -> Option<&[u8]> {
    let split = bytes.len().checked_sub(CHECKSUM_LEN)?;
    let (body, sum) = bytes.split_at(split);
    (checksum(body) == sum).then_some(body)
}

/// Reads the version field of a persisted state without decoding the rest,
/// so another version is named rather than reported as corruption.
fn decode_version(bytes: &[u8]) -> Option<u32> {
    let cfg = bincode::config::standard().with_limit::<64>();
    bincode::decode_from_slice::<u32, _>(bytes, cfg)
        .ok()
        .map(|(v, _)| v)
}

/// The parts of a persisted state `build` resumes from.
#[derive(Default)]
struct Restored {
    acceptor: Acceptor,
    max_round: u64,
    max_horizon: u64,
}

fn moved_summary(before: &ClusterState, after: &ClusterState) -> String {
    let mut pairs: Vec<((u8, u8), usize)> = Vec::new();
    for (a, b) in before.owner.iter().zip(&after.owner) {
        if a != b {
            match pairs.iter_mut().find(|(k, _)| *k == (*a, *b)) {
                Some((_, n)) => *n += 1,
                None => pairs.push(((*a, *b), 1)),
            }
        }
    }
    if pairs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|((a, b), n)| format!("{n} from {a} to {b}"))
        .collect();
    format!("; slots moved: {}", parts.join(", "))
}
