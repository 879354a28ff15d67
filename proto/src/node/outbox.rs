//! Everything that leaves the node: datagrams (with their sequence numbers
//! and the write each waits for), messages to itself (the local queue),
//! actions the shell must carry out and reports it should log; plus the
//! senders that fill them (heartbeats, per-link sends, broadcasts).
//!
//! Ordering is the contract, and the types carry it: an [`Action`] must be
//! done before any later datagram leaves, so `poll_transmit` yields nothing
//! while one waits; a datagram carries the number of the write it waits for
//! ([`Transmit::after_persist`]). A [`Report`] is only information and
//! orders nothing.

use std::collections::VecDeque;

use crate::auth::Authenticator;
use crate::time::Time;
use crate::wire::{self, Body, Header, Heartbeat, Message};

use super::report::MemberState;
use super::Node;

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
    /// Sequence number of the [`Action::Persist`] that must be durable before
    /// this datagram may leave (0: none). Votes, proposals and commits
    /// announce state a restart must remember; heartbeats need only the
    /// first write (this incarnation), so a slow disk never delays them.
    pub after_persist: u64,
}

/// Routed mode's forwarding targets per slot (buckets, then single
/// slots, as in the data plane): installed with the slot states, so that a
/// packet's verdict and where it is sent on come from one epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// The member owning each slot (`xnlb_common::NO_MEMBER`: nobody).
    pub owners: Vec<u8>,
    /// A previous owner still holding each slot's connections (the
    /// lowest id of them; `NO_MEMBER`: none), where the owner sends a
    /// connection's packet its kernel does not hold.
    pub holders: Vec<u8>,
    /// The next lowest previous owner still holding connections (a slot
    /// handed on again during an open handoff), where the first holder
    /// sends what it does not hold.
    pub holders2: Vec<u8>,
}

/// Something the shell **must do**, in order, before it sends any datagram
/// polled after it: [`Node::poll_transmit`] yields nothing while an action
/// is waiting in [`Node::poll_action`]. This is what makes
/// install-before-send and persist-before-send hold: a heartbeat that claims
/// an installed epoch leaves only after the shell wrote (or reported failing
/// to write, [`Node::install_failed`]) its `Install`, and a vote, proposal or
/// commit leaves only after the shell was handed its `Persist` (and then,
/// per [`Transmit::after_persist`], only once that write is durable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these slot states to the data plane atomically (one table
    /// flip). `states` has one entry per bucket, `singles` one per single
    /// slot (data-plane index `MAX_BUCKETS + i`). On failure call
    /// [`Node::install_failed`] before polling anything else.
    Install {
        /// Epoch of the map.
        epoch: u64,
        /// [`xnlb_common::slot_state`] per bucket for this node.
        states: Vec<u8>,
        /// Per single slot.
        singles: Vec<u8>,
        /// Where routed mode forwards what this node does not accept.
        routes: Routes,
    },
    /// Write to the data plane's lease word; `Time(0)` fences at once.
    Lease {
        /// Deadline on the node's clock ([`Time`]).
        until: Time,
        /// New held-delivery deadline (the data plane may still deliver
        /// connections its kernel holds until then, see
        /// [`crate::quorum::hold_ns`]); `None`: keep the one it has (a
        /// revocation never shortens nor extends it).
        hold: Option<Time>,
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
    /// The node has left the cluster (after `stop`); the shell may exit.
    Stopped,
}

/// Something the shell **should log** (or count): nothing depends on when,
/// or whether, it is read. Drained by [`Node::poll_report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
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
    /// Our state and a peer's differ at the same epoch (a bug or a state
    /// file rolled back): we stop vouching for it and repair by snapshot.
    Divergence {
        /// The peer.
        member: u8,
        /// The epoch at which the digests differ.
        epoch: u64,
    },
}

/// The queues the shell drains, and the counters of what was sent.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Sequence number of the last datagram (replay protection at peers).
    seq: u64,
    transmits: VecDeque<Transmit>,
    /// Messages to ourselves (we are one of the voters we broadcast to),
    /// handled before the input returns.
    pub(crate) local: VecDeque<(u8, Body)>,
    actions: VecDeque<Action>,
    reports: VecDeque<Report>,
    /// Bytes sent since start.
    pub(crate) sent_bytes: u64,
    /// Datagrams sent since start.
    pub(crate) sent_datagrams: u64,
}

impl Outbox {
    /// Queues an action for the shell (if there is one).
    pub(crate) fn push_action(&mut self, action: impl Into<Option<Action>>) {
        self.actions.extend(action.into());
    }

    /// Queues a report for the shell (if there is one).
    pub(crate) fn push_report(&mut self, report: impl Into<Option<Report>>) {
        self.reports.extend(report.into());
    }

    /// Queues write `seq`. Only the latest matters: an unconsumed older one
    /// is dropped (its waiting transmits are released by this one's write).
    pub(crate) fn queue_persist(&mut self, seq: u64, state: Vec<u8>) {
        self.actions
            .retain(|a| !matches!(a, Action::Persist { .. }));
        self.actions.push_back(Action::Persist { seq, state });
    }

    /// Whether a write is queued and not yet taken by the shell.
    pub(crate) fn persist_queued(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Persist { .. }))
    }

    /// Drops queued table installs (a later one replaces them).
    pub(crate) fn drop_installs(&mut self) {
        self.actions
            .retain(|a| !matches!(a, Action::Install { .. }));
    }

    /// Drops queued lease extensions (not revocations): after a failed
    /// install they must not reach a data plane holding the old map.
    pub(crate) fn drop_lease_extensions(&mut self) {
        self.actions
            .retain(|a| !matches!(a, Action::Lease { until, .. } if until.0 > 0));
    }

    /// Drops the datagrams queued so far.
    pub(crate) fn clear_transmits(&mut self) {
        self.transmits.clear();
    }

    /// Next action for the shell.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next report for the shell.
    pub(crate) fn poll_report(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }

    /// Next datagram for the shell, once every action before it is taken.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        if !self.actions.is_empty() {
            return None;
        }
        self.transmits.pop_front()
    }

    /// Numbers, seals and queues one datagram.
    fn seal(
        &mut self,
        auth: &Authenticator,
        mut header: Header,
        body: Body,
        link: usize,
        after_persist: u64,
    ) {
        self.seq += 1;
        header.seq = self.seq;
        let to = header.to;
        if let Some(bytes) = wire::encode(auth, &Message { header, body }) {
            self.sent_bytes += bytes.len() as u64;
            self.sent_datagrams += 1;
            self.transmits.push_back(Transmit {
                to,
                link,
                bytes,
                after_persist,
            });
        }
    }
}

impl Node {
    /// One heartbeat to every peer on every link: liveness, our vouching
    /// echoes, and what we hold and wish.
    pub(super) fn send_heartbeats(&mut self, now: Time) {
        if self.intent.stop_emitted || self.blocked().is_some() {
            // A node that cannot write its state or install its map goes
            // silent (no datagram at all, see `send_on`), so the others
            // fence it and serve its buckets rather than leave them
            // unserved; it rejoins once it recovers.
            return;
        }
        let summary = self.summary();
        let quorum = self.has_quorum(now);
        let undecided = self.undecided();
        let weight = self.own_config().map_or(1, |m| m.weight);
        // Advertise only a horizon a restart would keep (durable), and never
        // more than the promise we actually keep now (`dead_after`).
        let echo_horizon = self.cfg.dead_after_ns.min(self.storage.durable_horizon);
        let wish = self.intent.wish();
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
                installed: self.plane.installed,
                wish,
                weight,
                handoff_done: self.plane.handoff_done,
                rebalance_requests: self.intent.rebalance_requests,
                quorum,
                undecided,
                summary: summary.clone(),
            };
            let id = p.id;
            self.send_all_links(id, Body::Heartbeat(hb));
        }
    }

    /// Links we share with member `to` (paired by index).
    fn links_to(&self, to: u8) -> usize {
        let mine = self.own_config().map_or(1, |m| m.addrs);
        let theirs = self.peer(to).map_or(1, |p| p.links);
        mine.min(theirs).max(1)
    }

    /// To member `to` on every link we share.
    pub(super) fn send_all_links(&mut self, to: u8, body: Body) {
        if to == self.cfg.self_id {
            self.outbox.local.push_back((to, body));
            return;
        }
        for link in 0..self.links_to(to) {
            self.send_on(to, link, body.clone());
        }
    }

    /// To member `to` on one link (answers go back where the request came).
    pub(super) fn send_on(&mut self, to: u8, link: usize, body: Body) {
        if self.blocked().is_some() {
            // Silent while blocked: see `send_heartbeats`.
            return;
        }
        if to == self.cfg.self_id {
            self.outbox.local.push_back((to, body));
            return;
        }
        // Heartbeats wait only for the first write, which records this
        // incarnation: a restart whose incarnation was never written could
        // reuse it after a clock step, and be taken for a replay.
        let after_persist = if matches!(body, Body::Heartbeat(_)) {
            self.storage.persist_seq.min(1)
        } else {
            self.storage.persist_seq
        };
        let header = Header {
            from: self.cfg.self_id,
            to,
            incarnation: self.incarnation,
            seq: 0,
            fingerprint: self.cfg.fingerprint,
        };
        let link = link.min(self.links_to(to) - 1);
        self.outbox
            .seal(&self.auth, header, body, link, after_persist);
    }

    /// To every voter, ourselves included (via the local queue).
    pub(super) fn broadcast(&mut self, body: Body) {
        self.outbox
            .local
            .push_back((self.cfg.self_id, body.clone()));
        self.broadcast_remote(body);
    }

    /// To every peer on every link.
    pub(super) fn broadcast_remote(&mut self, body: Body) {
        let ids: Vec<u8> = self.peers.iter().map(|p| p.id).collect();
        for id in ids {
            self.send_all_links(id, body.clone());
        }
    }
}
