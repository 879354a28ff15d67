//! The proposer's side of Paxos: who coordinates, what it proposes, and the
//! two phases of a proposal with their retries.
//!
//! The coordinator is the lowest-id live voter that is caught up and has
//! quorum ([`Node::is_coordinator`]). It proposes whenever some member's
//! view differs from the installed state ([`Node::desired_ops`], built from
//! one [`MemberView`] per member), or when an acceptor may hold a value that
//! must be carried forward. Rounds are persisted before a `Prepare` leaves,
//! so a restarted proposer never reuses a ballot. A proposal is resent every
//! heartbeat interval and given up after `dead_after` plus four intervals,
//! each by its own timer; an outbid proposer backs off by a timer too.

use crate::assign::{MemberRec, Standing};
use crate::epoch::{self, Phase, PromiseFrom, Proposal};
use crate::membership::{Liveness, Peer};
use crate::quorum;
use crate::time::Time;
use crate::wire::{Ballot, Body, Heartbeat, Op, Wish};

use super::{Node, Timer};

/// At most this many operations per epoch.
const MAX_OPS: usize = 64;

/// Proposer state.
pub(crate) struct Proposer {
    /// The proposal in flight.
    proposal: Option<Proposal>,
    /// Highest round used or seen (persisted).
    pub(crate) max_round: u64,
    /// Fenced members still recorded as previous owners (their hosts may
    /// hold connections), and since when we know it: after
    /// [`quorum::orphan_timeout_ns`] the coordinator ends their handoff
    /// itself.
    orphans: Vec<(u8, Time)>,
}

/// What the coordinator knows of one member when it decides the next
/// epoch's operations: from our own state for ourselves, from its latest
/// heartbeat for a peer.
struct MemberView {
    /// Heard within two heartbeat intervals.
    alive: bool,
    /// Silent for `dead_after`.
    dead: bool,
    /// What it asks of the cluster.
    wish: Wish,
    /// The weight it runs with.
    weight: u32,
    /// Highest epoch whose handoff it finished.
    handoff_done: u64,
    /// Its operator's rebalance requests so far.
    rebalance_requests: u32,
    /// Its incarnation (admitted with it).
    incarnation: u64,
}

impl MemberView {
    fn of_peer(p: &Peer, h: &Heartbeat, l: Liveness) -> MemberView {
        MemberView {
            alive: l == Liveness::Alive,
            dead: l == Liveness::Dead,
            wish: h.wish,
            weight: h.weight,
            handoff_done: h.handoff_done,
            rebalance_requests: h.rebalance_requests,
            incarnation: p.incarnation,
        }
    }
}

impl Proposer {
    /// Resumes with the highest round a previous incarnation used.
    pub(crate) fn new(max_round: u64) -> Proposer {
        Proposer {
            proposal: None,
            max_round,
            orphans: Vec::new(),
        }
    }

    /// When the proposal in flight is due for a resend (`interval` after
    /// the last send) and when it is given up (`patience` after its start).
    pub(crate) fn deadlines(&self, interval: u64, patience: u64) -> (Option<Time>, Option<Time>) {
        match &self.proposal {
            Some(p) => (Some(p.last_sent + interval), Some(p.started + patience + 1)),
            None => (None, None),
        }
    }

    /// A ballot seen in use: our next round must exceed its round.
    pub(crate) fn learn_round(&mut self, ballot: Ballot) {
        self.max_round = self.max_round.max(epoch::round_of(ballot));
    }

    /// The value proposed in phase 2, if any: `(epoch, ballot, ops)`.
    pub(crate) fn in_flight(&self) -> Option<(u64, u64, &[Op])> {
        let p = self.proposal.as_ref()?;
        match &p.phase {
            Phase::Accepting { ops, .. } => Some((p.epoch, p.ballot, ops)),
            Phase::Preparing(_) => None,
        }
    }

    /// For the debug line: `(epoch, ballot, in phase 2)`.
    pub(crate) fn summary(&self) -> Option<(u64, Ballot, bool)> {
        self.proposal.as_ref().map(|p| {
            (
                p.epoch,
                p.ballot,
                matches!(p.phase, Phase::Accepting { .. }),
            )
        })
    }

    /// Drops a proposal for an epoch that is now installed.
    pub(crate) fn installed(&mut self, epoch: u64) {
        if self.proposal.as_ref().is_some_and(|p| p.epoch <= epoch) {
            self.proposal = None;
        }
    }

    /// Forgets when fenced members were first seen as previous owners (their
    /// clocks restart at the next [`Self::track_orphans`]).
    pub(crate) fn forget_orphans(&mut self) {
        self.orphans.clear();
    }

    /// Notes, at an install, which non-participating members are still
    /// previous owners in `state` (first seen at `now`), forgetting those
    /// that are not any more.
    pub(crate) fn track_orphans(&mut self, state: &crate::assign::ClusterState, now: Time) {
        let orphans: Vec<u8> = state
            .members
            .iter()
            .filter(|m| !m.standing.participates() && state.is_prev(m.id))
            .map(|m| m.id)
            .collect();
        self.orphans.retain(|(id, _)| orphans.contains(id));
        for id in orphans {
            if !self.orphans.iter().any(|(o, _)| *o == id) {
                self.orphans.push((id, now));
            }
        }
    }

    /// Whether fenced member `id`'s handoff has waited `timeout` since we
    /// first saw it open.
    fn orphan_expired(&self, id: u8, now: Time, timeout: u64) -> bool {
        self.orphans
            .iter()
            .any(|&(o, since)| o == id && now.since(since) >= timeout)
    }

    /// Records `from`'s promise for `(epoch, ballot)`; once a quorum
    /// promised, the value to carry forward (`Some(None)`: none, ours).
    fn promised(
        &mut self,
        from: u8,
        epoch: u64,
        ballot: Ballot,
        accepted: Option<(Ballot, Vec<Op>)>,
        needed: usize,
    ) -> Option<Option<Vec<Op>>> {
        let p = self.proposal.as_mut()?;
        if p.epoch != epoch || p.ballot != ballot {
            return None;
        }
        let Phase::Preparing(promises) = &mut p.phase else {
            return None;
        };
        if promises.iter().any(|(m, _)| *m == from) {
            return None;
        }
        promises.push((from, accepted));
        if promises.len() < needed {
            return None;
        }
        Some(highest_accepted(promises))
    }

    /// Records `from`'s acceptance; once a quorum accepted, the chosen value
    /// (the proposal is done).
    fn accepted(&mut self, from: u8, epoch: u64, ballot: Ballot, needed: usize) -> Option<Vec<Op>> {
        let p = self.proposal.as_mut()?;
        if p.epoch != epoch || p.ballot != ballot {
            return None;
        }
        let Phase::Accepting { ops, accepted } = &mut p.phase else {
            return None;
        };
        if !accepted.contains(&from) {
            accepted.push(from);
        }
        if accepted.len() < needed {
            return None;
        }
        let ops = ops.clone();
        self.proposal = None;
        Some(ops)
    }
}

/// The highest-ballot value any promise reports, which Paxos must carry.
fn highest_accepted(promises: &[PromiseFrom]) -> Option<Vec<Op>> {
    promises
        .iter()
        .filter_map(|(_, a)| a.clone())
        .max_by_key(|(b, _)| *b)
        .map(|(_, ops)| ops)
}

impl Node {
    /// A message to us as the proposer.
    pub(super) fn step_proposer(&mut self, now: Time, from: u8, link: usize, body: Body) {
        match body {
            Body::Promise {
                epoch,
                ballot,
                accepted,
            } => self.on_promise(now, from, epoch, ballot, accepted),
            Body::Accepted { epoch, ballot } => self.on_accepted(now, from, epoch, ballot),
            Body::Reject {
                epoch,
                promised,
                committed,
            } => self.on_reject(now, from, link, epoch, promised, committed),
            _ => {}
        }
    }

    /// A `Promise` for our proposal; with a quorum, phase 2 starts.
    fn on_promise(
        &mut self,
        now: Time,
        from: u8,
        epoch: u64,
        ballot: Ballot,
        accepted: Option<(Ballot, Vec<Op>)>,
    ) {
        let needed = quorum::needed(self.voters);
        let Some(prior) = self
            .proposer
            .promised(from, epoch, ballot, accepted, needed)
        else {
            return;
        };
        let ops = match prior {
            Some(ops) => ops,
            // Possibly empty: a no-op epoch still settles floors.
            None => self.desired_ops(now),
        };
        if let Some(p) = self.proposer.proposal.as_mut() {
            p.phase = Phase::Accepting {
                ops: ops.clone(),
                accepted: Vec::new(),
            };
            p.last_sent = now;
        }
        self.broadcast(Body::Accept { epoch, ballot, ops });
    }

    /// An `Accepted` for our proposal; with a quorum, the value is chosen:
    /// commit it everywhere and install it.
    fn on_accepted(&mut self, now: Time, from: u8, epoch: u64, ballot: Ballot) {
        let needed = quorum::needed(self.voters);
        let Some(ops) = self.proposer.accepted(from, epoch, ballot, needed) else {
            return;
        };
        let next = self.state.apply(&ops);
        let digest = next.digest();
        self.broadcast_remote(Body::Commit {
            epoch,
            ops: ops.clone(),
            digest,
        });
        self.install(now, next, String::new(), ops);
    }

    /// A `Reject`: learn the round that outbid us, catch up if the epoch is
    /// decided, and give up an outbid proposal (backing off only for a live
    /// lower-id rival).
    fn on_reject(
        &mut self,
        now: Time,
        from: u8,
        link: usize,
        epoch: u64,
        promised: Ballot,
        committed: u64,
    ) {
        self.proposer.learn_round(promised);
        if committed >= epoch {
            self.request_sync(now, from, link);
        }
        if self
            .proposer
            .proposal
            .as_ref()
            .is_some_and(|p| p.epoch == epoch && p.ballot < promised)
        {
            self.proposer.proposal = None;
            // Only a live lower-id rival outranks us as coordinator;
            // higher ids and dead proposers are outbid at once.
            let rival = (promised & 0xff) as u8;
            let live_rival = rival < self.cfg.self_id
                && self
                    .peer(rival)
                    .is_some_and(|p| self.liveness(now, p) != Liveness::Dead);
            if live_rival {
                let until = now + self.backoff();
                self.timers.set(Timer::ProposalBackoff, until);
            } else {
                self.timers.stop(Timer::ProposalBackoff);
            }
        }
    }

    fn backoff(&self) -> u64 {
        self.cfg.heartbeat_interval_ns * (1 + (self.cfg.self_id as u64 % 3))
    }

    /// Whether this node should propose: it has quorum, is caught up, and no
    /// lower-id voter that is alive and caught up exists.
    pub(super) fn is_coordinator(&self, now: Time) -> bool {
        if self.intent.stopped || self.blocked().is_some() || !self.has_quorum(now) {
            return false;
        }
        for p in &self.peers {
            let Some(h) = p.report.as_ref() else { continue };
            // Wait to catch up from a peer that is ahead, unless it died: it
            // may never come back (a lost state file comes back only once
            // fenced, which needs a coordinator), and what it committed is
            // recovered from the acceptors by the next proposal's phase 1.
            if h.epoch > self.state.epoch && self.liveness(now, p) != Liveness::Dead {
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

    /// The proposal in flight took too long ([`Timer::ProposalGiveUp`]):
    /// drop it, so the next one starts at once with a higher ballot.
    pub(super) fn give_up_proposal(&mut self) {
        self.proposer.proposal = None;
        self.timers.stop(Timer::ProposalBackoff);
    }

    /// Resends the proposal in flight ([`Timer::ProposalResend`]); only the
    /// coordinator drives it, but the next resend is due an interval from
    /// now either way.
    pub(super) fn resend_proposal(&mut self, now: Time) {
        let coordinator = self.is_coordinator(now);
        let Some(p) = self.proposer.proposal.as_mut() else {
            return;
        };
        p.last_sent = now;
        if !coordinator {
            return;
        }
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

    /// As coordinator with no proposal in flight and no back-off: start one
    /// if there is something to decide. (Resends and giving up are timers.)
    pub(super) fn coordinate(&mut self, now: Time) {
        if !self.is_coordinator(now) || self.proposer.proposal.is_some() {
            return;
        }
        if self
            .timers
            .get(Timer::ProposalBackoff)
            .is_some_and(|until| now < until)
        {
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
        self.proposer.max_round += 1;
        // The round is persisted before the Prepare leaves (it waits for
        // this write), so a restarted proposer never reuses a ballot.
        self.persist();
        let epoch = self.state.epoch + 1;
        let ballot = epoch::ballot(self.proposer.max_round, self.cfg.self_id);
        self.proposer.proposal = Some(Proposal {
            epoch,
            ballot,
            phase: Phase::Preparing(Vec::new()),
            started: now,
            last_sent: now,
        });
        self.broadcast(Body::Prepare { epoch, ballot });
    }

    /// Our own view, as the coordinator weighs it.
    fn own_view(&self, rec: &MemberRec) -> MemberView {
        MemberView {
            alive: true,
            dead: false,
            wish: self.intent.wish(),
            weight: self.own_config().map_or(rec.weight, |c| c.weight),
            handoff_done: self.plane.handoff_done,
            rebalance_requests: self.intent.rebalance_requests,
            incarnation: self.incarnation,
        }
    }

    /// The operations the coordinator wants in the next epoch.
    pub(super) fn desired_ops(&self, now: Time) -> Vec<Op> {
        let mut ops = Vec::new();
        for m in &self.state.members {
            let view = if m.id == self.cfg.self_id {
                self.own_view(m)
            } else {
                let Some(p) = self.peer(m.id) else { continue };
                let l = self.liveness(now, p);
                let Some(h) = p.report.as_ref() else {
                    if m.standing.participates() && l == Liveness::Dead {
                        ops.push(Op::Fence { id: m.id });
                    }
                    continue;
                };
                MemberView::of_peer(p, h, l)
            };
            self.ops_for(m, &view, now, &mut ops);
        }
        ops.truncate(MAX_OPS);
        ops
    }

    /// What member `m`'s view asks of the next epoch.
    fn ops_for(&self, m: &MemberRec, v: &MemberView, now: Time, ops: &mut Vec<Op>) {
        let part = m.standing.participates();
        if part && v.dead {
            ops.push(Op::Fence { id: m.id });
            return;
        }
        if !part {
            if v.alive && v.wish != Wish::Leave {
                ops.push(Op::Admit {
                    id: m.id,
                    incarnation: v.incarnation,
                    weight: v.weight,
                    drained: v.wish == Wish::Drained,
                });
            } else if self.state.is_prev(m.id)
                && self.proposer.orphan_expired(
                    m.id,
                    now,
                    quorum::orphan_timeout_ns(self.cfg.drain_timeout_ns, self.cfg.hold_cap_ns),
                )
            {
                // A fenced member that did not come back: its host is
                // presumed gone with its connections after drain_timeout.
                ops.push(Op::HandoffDone { id: m.id });
            }
            return;
        }
        let standing_op = match (m.standing, v.wish) {
            (Standing::Active, Wish::Drained) => Some(Op::Drain { id: m.id }),
            (Standing::Draining | Standing::Drained, Wish::Active) => Some(Op::Resume { id: m.id }),
            (Standing::Active | Standing::Draining | Standing::Drained, Wish::Leave) => {
                Some(Op::Leave { id: m.id })
            }
            _ => None,
        };
        if v.alive && v.incarnation > m.incarnation {
            // Record its new life (see `Op::Admit` on a member that takes part).
            ops.push(Op::Admit {
                id: m.id,
                incarnation: v.incarnation,
                weight: m.weight,
                drained: false,
            });
        }
        let has_prev = self.state.is_prev(m.id);
        let handing = matches!(m.standing, Standing::Draining | Standing::Leaving);
        if let Some(op) = standing_op {
            // One standing change per member per epoch: a handoff may only
            // end in an epoch after the member installed (and reported)
            // the one that started it, or a leaver could stop
            // participating before it released anything.
            ops.push(op);
        } else if (has_prev && v.handoff_done >= self.state.epoch) || (handing && !has_prev) {
            ops.push(Op::HandoffDone { id: m.id });
        }
        if v.weight != m.weight && (1..=10_000).contains(&v.weight) {
            ops.push(Op::SetWeight {
                id: m.id,
                weight: v.weight,
            });
        }
        if v.rebalance_requests > m.rebalance_seen {
            ops.push(Op::Rebalance {
                id: m.id,
                request: v.rebalance_requests,
            });
        }
    }
}
