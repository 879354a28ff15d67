//! Agreement on epochs: single-decree Paxos per epoch number, plus the
//! acceptor's fencing promises.
//!
//! Each epoch `E` (one past the committed one) is decided among all voters
//! with classic Paxos: a proposer (normally the coordinator, the lowest-id
//! live voter) sends `Prepare(E, b)`, adopts the highest-ballot value any
//! promise reports (or its own ops if none), sends `Accept(E, b, ops)`, and on
//! a quorum of `Accepted` broadcasts `Commit`. Acceptor state is persisted by
//! the shell ([`crate::Action::Persist`]) before the reply leaves, so a
//! restarted acceptor never forgets a promise: the chosen value per epoch is
//! unique, hence every node's state at `(E, digest)` is the same.
//!
//! Fencing adds two acceptor duties (see [`crate::quorum`]): on an `Accept`
//! that fences `X` it raises `X`'s vouching floor to `E` at once, and it
//! replies `Accepted` only once its clock passes the promise it gave `X`
//! (`dead_after` after the last vouched receipt) and `dead_after` after its
//! own start. The reply is deferred, never refused, so a fence value that
//! Paxos must carry forward always completes.

use crate::time::Time;
use crate::wire::{Ballot, Op};
use bincode::{Decode, Encode};

/// Acceptor state for the next epoch, persisted across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Acceptor {
    /// The epoch `promised`/`accepted` refer to.
    pub epoch: u64,
    /// Highest ballot promised for `epoch`.
    pub promised: Ballot,
    /// Highest-ballot value accepted for `epoch`.
    pub accepted: Option<(Ballot, Vec<Op>)>,
    /// Per member id: lowest epoch at which we vouch for it again after we
    /// accepted a proposal fencing it.
    pub floors: Vec<(u8, u64)>,
}

impl Acceptor {
    /// Forgets promises about epochs at or below `committed`.
    pub fn advance(&mut self, committed: u64) {
        if self.epoch <= committed {
            self.epoch = committed + 1;
            self.promised = 0;
            self.accepted = None;
        }
    }

    /// Vouching floor for member `id`.
    pub fn floor(&self, id: u8) -> u64 {
        self.floors
            .iter()
            .find(|(m, _)| *m == id)
            .map_or(0, |&(_, e)| e)
    }

    /// Raises the vouching floor of `id` to `epoch`; true if it changed.
    pub fn raise_floor(&mut self, id: u8, epoch: u64) -> bool {
        match self.floors.iter_mut().find(|(m, _)| *m == id) {
            Some((_, e)) if *e >= epoch => false,
            Some((_, e)) => {
                *e = epoch;
                true
            }
            None => {
                self.floors.push((id, epoch));
                true
            }
        }
    }
}

/// An `Accept` whose reply waits for fencing promises to run out.
#[derive(Clone, Debug)]
pub struct PendingAccept {
    /// Epoch.
    pub epoch: u64,
    /// Ballot.
    pub ballot: Ballot,
    /// Value.
    pub ops: Vec<Op>,
    /// Proposer to answer.
    pub from: u8,
    /// When the promises allow accepting.
    pub ready_at: Time,
}

/// A voter's promise: its id and the value it accepted before, if any.
pub type PromiseFrom = (u8, Option<(Ballot, Vec<Op>)>);

/// Where a proposal is.
#[derive(Clone, Debug)]
pub enum Phase {
    /// Collecting promises: (voter, its accepted value).
    Preparing(Vec<PromiseFrom>),
    /// Collecting acceptances of `ops`.
    Accepting {
        /// The value.
        ops: Vec<Op>,
        /// Voters that accepted.
        accepted: Vec<u8>,
    },
}

/// A proposal in flight.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// Epoch being decided.
    pub epoch: u64,
    /// Our ballot.
    pub ballot: Ballot,
    /// Phase.
    pub phase: Phase,
    /// When it started (gives up and retries with a higher ballot later).
    pub started: Time,
    /// Last (re)transmission.
    pub last_sent: Time,
}

/// Ballot for round `round` by proposer `id`.
pub fn ballot(round: u64, id: u8) -> Ballot {
    (round << 8) | id as u64
}

/// Round of a ballot.
pub fn round_of(b: Ballot) -> u64 {
    b >> 8
}

/// Human-readable operation, for epoch events.
pub fn describe(op: &Op) -> String {
    match op {
        Op::Fence { id } => format!("member {id} fenced"),
        Op::Admit {
            id, drained: false, ..
        } => format!("member {id} joined"),
        Op::Admit {
            id, drained: true, ..
        } => format!("member {id} joined drained"),
        Op::Drain { id } => format!("member {id} draining"),
        Op::Resume { id } => format!("member {id} resumed"),
        Op::Leave { id } => format!("member {id} leaving"),
        Op::HandoffDone { id } => format!("member {id} handoff done"),
        Op::SetWeight { id, weight } => format!("member {id} weight {weight}"),
        Op::Rebalance { id, .. } => format!("rebalance requested at member {id}"),
    }
}
