//! The acceptor's side of Paxos and the promises behind leases.
//!
//! `Prepare` and `Accept` pass one admission guard ([`Acceptor::admission`]):
//! a node that cannot persist abstains; an epoch already committed here is
//! rejected with our committed epoch (the proposer syncs); an epoch beyond
//! the next means we are behind (we sync); a ballot below our promise is
//! rejected with the promise (the proposer outbids it).
//!
//! An `Accept` that fences a member waits (see [`crate::epoch`]) until every
//! vouching promise this node gave that member has run out; the vouching
//! promises themselves (`promise_until`) are recorded here as heartbeats are
//! vouched for.

use crate::epoch::{self, PendingAccept};
use crate::time::Time;
use crate::wire::{Ballot, Body, Heartbeat, Op};

use super::Node;

/// Acceptor state: the persisted Paxos record, the deferred `Accepted`, and
/// the vouching promises.
pub(crate) struct Acceptor {
    /// Promises and acceptances for the next epoch (persisted).
    pub(crate) paxos: epoch::Acceptor,
    /// An `Accept` whose reply waits for fencing promises to run out.
    pending: Option<PendingAccept>,
    /// Per member id: we promised not to accept fencing it before this.
    promise_until: Vec<(u8, Time)>,
}

/// Why a `Prepare` or `Accept` is not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Our state file cannot be written: a vote must survive a restart, so
    /// we do not vote at all.
    Abstain,
    /// The epoch is already committed here: reject, naming our epoch, so the
    /// proposer catches up.
    Decided,
    /// The epoch is beyond our next one: we are behind and sync first.
    Behind,
    /// We promised a higher ballot: reject, naming it.
    Outbid(Ballot),
}

impl Acceptor {
    /// Resumes from the persisted Paxos record.
    pub(crate) fn new(paxos: epoch::Acceptor) -> Acceptor {
        Acceptor {
            paxos,
            pending: None,
            promise_until: Vec::new(),
        }
    }

    /// The one admission guard for `Prepare` and `Accept` of `(epoch,
    /// ballot)` while `committed` is installed.
    pub(crate) fn admission(
        &self,
        storage_failed: bool,
        epoch: u64,
        ballot: Ballot,
        committed: u64,
    ) -> Result<(), Refusal> {
        if storage_failed {
            Err(Refusal::Abstain)
        } else if epoch <= committed {
            Err(Refusal::Decided)
        } else if epoch > committed + 1 {
            Err(Refusal::Behind)
        } else if ballot < self.paxos.promised {
            Err(Refusal::Outbid(self.paxos.promised))
        } else {
            Ok(())
        }
    }

    /// Records that we vouch for member `id` until `until`: no fence of it
    /// is accepted before then.
    pub(crate) fn promise(&mut self, id: u8, until: Time) {
        match self.promise_until.iter_mut().find(|(m, _)| *m == id) {
            Some((_, t)) => *t = (*t).max(until),
            None => self.promise_until.push((id, until)),
        }
    }

    /// When our vouching promise to `id` runs out, if we gave one.
    fn promised_until(&self, id: u8) -> Option<Time> {
        self.promise_until
            .iter()
            .find(|(m, _)| *m == id)
            .map(|&(_, t)| t)
    }

    /// Whether we hold something about the epoch after `committed` that
    /// only deciding it will settle (an accepted value, or a fencing floor
    /// that stops us vouching for someone until then).
    pub(crate) fn undecided(&self, committed: u64) -> bool {
        self.paxos.accepted.is_some() || self.paxos.floors.iter().any(|&(_, e)| e > committed)
    }

    /// When the deferred `Accepted` may leave, if one waits.
    pub(crate) fn pending_ready_at(&self) -> Option<Time> {
        self.pending.as_ref().map(|p| p.ready_at)
    }

    /// Takes the deferred `Accept` once its promises have run out, records
    /// its value as accepted and says whom to answer for which `(epoch,
    /// ballot)`; drops it if it no longer applies.
    fn take_ready(&mut self, now: Time, committed: u64) -> Option<(u8, u64, Ballot)> {
        let p = self.pending.as_ref()?;
        if p.epoch != committed + 1 || p.ballot != self.paxos.promised {
            self.pending = None;
            return None;
        }
        if p.ready_at > now {
            return None;
        }
        let p = self.pending.take()?;
        self.paxos.accepted = Some((p.ballot, p.ops));
        Some((p.from, p.epoch, p.ballot))
    }

    /// For the debug line: `(epoch, promised, accepted)`.
    pub(crate) fn summary(&self) -> (u64, Ballot, &Option<(Ballot, Vec<Op>)>) {
        (self.paxos.epoch, self.paxos.promised, &self.paxos.accepted)
    }

    /// For the debug line: the deferred accept's `(epoch, ballot, ready_at)`.
    pub(crate) fn pending_summary(&self) -> Option<(u64, Ballot, Time)> {
        self.pending
            .as_ref()
            .map(|p| (p.epoch, p.ballot, p.ready_at))
    }
}

impl Node {
    /// The admission guard, applied: a `Prepare` for our next epoch also
    /// tells us a round in use (`learn_round`), for our own next ballot.
    fn admit(&mut self, epoch: u64, ballot: Ballot, learn_round: bool) -> Result<(), Refusal> {
        let verdict = self
            .acceptor
            .admission(self.storage.failed, epoch, ballot, self.state.epoch);
        if learn_round && matches!(verdict, Ok(()) | Err(Refusal::Outbid(_))) {
            self.proposer.learn_round(ballot);
        }
        verdict
    }

    /// Answers a refused `Prepare` or `Accept` for `epoch`.
    fn refuse(&mut self, now: Time, to: u8, link: usize, epoch: u64, why: Refusal) {
        let promised = match why {
            Refusal::Abstain => return,
            Refusal::Behind => return self.request_sync(now, to, link),
            Refusal::Decided => 0,
            Refusal::Outbid(promised) => promised,
        };
        let committed = self.state.epoch;
        self.send_on(
            to,
            link,
            Body::Reject {
                epoch,
                promised,
                committed,
            },
        );
    }

    /// A message to us as an acceptor.
    pub(super) fn step_acceptor(&mut self, now: Time, from: u8, link: usize, body: Body) {
        match body {
            Body::Prepare { epoch, ballot } => self.on_prepare(now, from, link, epoch, ballot),
            Body::Accept { epoch, ballot, ops } => {
                self.on_accept(now, from, link, epoch, ballot, ops)
            }
            _ => {}
        }
    }

    /// Phase 1: promise `ballot` (persisted before the `Promise` leaves)
    /// and report what we accepted.
    fn on_prepare(&mut self, now: Time, from: u8, link: usize, epoch: u64, ballot: Ballot) {
        if let Err(why) = self.admit(epoch, ballot, true) {
            return self.refuse(now, from, link, epoch, why);
        }
        if ballot > self.acceptor.paxos.promised {
            self.acceptor.paxos.promised = ballot;
            self.persist();
        }
        let accepted = self.acceptor.paxos.accepted.clone();
        self.send_on(
            from,
            link,
            Body::Promise {
                epoch,
                ballot,
                accepted,
            },
        );
    }

    /// Phase 2: accept `ops`, first keeping our fencing duties (see
    /// [`crate::epoch`]); the `Accepted` may be deferred.
    fn on_accept(
        &mut self,
        now: Time,
        from: u8,
        link: usize,
        epoch: u64,
        ballot: Ballot,
        ops: Vec<Op>,
    ) {
        if let Err(why) = self.admit(epoch, ballot, false) {
            return self.refuse(now, from, link, epoch, why);
        }
        self.acceptor.paxos.promised = ballot;
        let mut ready_at = now;
        for op in &ops {
            if let Op::Fence { id } = *op {
                if id == self.cfg.self_id {
                    // Voting for our own fencing means stepping down first:
                    // the lease is revoked (and stays so until we install
                    // this epoch) before our `Accepted` can leave. Refusing
                    // instead could deadlock a value Paxos must carry on.
                    self.acceptor.paxos.raise_floor(id, epoch);
                    self.persist();
                    self.revoke_lease();
                    continue;
                }
                // Stop vouching for it at once, then wait out our promises.
                self.acceptor.paxos.raise_floor(id, epoch);
                if let Some(p) = self.peer_index(id) {
                    self.peers[p].vouch = None;
                }
                // Promises of earlier incarnations: the largest horizon
                // this member ever advertised, counted from this start.
                ready_at = ready_at.max(self.started + self.storage.max_horizon);
                if let Some(t) = self.acceptor.promised_until(id) {
                    ready_at = ready_at.max(t);
                }
            }
        }
        self.persist();
        self.acceptor.pending = Some(PendingAccept {
            epoch,
            ballot,
            ops,
            from,
            ready_at,
        });
        self.run_pending_accept(now);
    }

    /// Sends the deferred `Accepted` once its promises have run out (the
    /// acceptance persisted first).
    pub(super) fn run_pending_accept(&mut self, now: Time) {
        let Some((from, epoch, ballot)) = self.acceptor.take_ready(now, self.state.epoch) else {
            return;
        };
        self.persist();
        self.send_all_links(from, Body::Accepted { epoch, ballot });
    }

    /// Vouches for peer `pi`'s latest heartbeat (echoed back in ours) unless
    /// we stopped vouching for it until a later epoch, or it runs an older
    /// epoch than ours while ours says it takes no part (it left, or never
    /// joined: a member that lost its state and replays old epochs must not
    /// get a lease to serve them); from then on we keep the promise not to
    /// accept its fence for `dead_after`.
    pub(super) fn vouch(&mut self, now: Time, pi: usize, hb: &Heartbeat) {
        let id = self.peers[pi].id;
        if hb.epoch < self.state.epoch && !self.state.participates(id) {
            return;
        }
        let peer = &mut self.peers[pi];
        if hb.epoch < self.acceptor.paxos.floor(peer.id)
            || peer.vouch.is_some_and(|(t, _)| hb.sent_at <= t)
        {
            return;
        }
        peer.vouch = Some((hb.sent_at, now));
        self.acceptor.promise(id, now + self.cfg.dead_after_ns);
    }

    /// Whether our acceptor holds something about the next epoch that only
    /// deciding it will settle.
    pub(super) fn undecided(&self) -> bool {
        self.acceptor.undecided(self.state.epoch)
    }
}
