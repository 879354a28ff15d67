//! What the node tells about itself: `xnlb status`, member and node states,
//! the one-line debug dump, the config summary carried in heartbeats (and
//! what differs when a peer's does not match), and the liveness and quorum
//! reports for the log.
//!
//! There is one mapping from a member's standing and liveness to its
//! [`MemberState`] ([`Node::member_state`]); status rows and the reports an
//! install emits both use it, so the log and `xnlb status` never disagree.

use crate::assign::Standing;
use crate::membership::Liveness;
use crate::quorum;
use crate::status::{self, MemberStatus, NodeState, QuorumStatus, Status};
use crate::time::{Time, MS};
use crate::wire::ConfigSummary;

use super::outbox::Report;
use super::plane::reports;
use super::{Blocked, Node};

/// Member state as reported in [`Report::MemberState`] and status (DESIGN 4).
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

impl Node {
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
            let (last_heard_ns, last_heard_link_ns, incarnation) = if m.id == id {
                (Some(0), Vec::new(), self.incarnation)
            } else {
                let p = self.peer(m.id);
                (
                    p.and_then(|p| p.last_heard).map(|t| now.since(t)),
                    p.map_or(Vec::new(), |p| {
                        p.last_heard_link
                            .iter()
                            .map(|t| t.map(|t| now.since(t)))
                            .collect()
                    }),
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
                last_heard_link_ns,
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
        // Voters actually heard and not dead. The core's own count also
        // gives never-heard peers the benefit of the doubt for dead_after
        // after a start (they are suspect, not dead), which must not show
        // an operator a quorum of voters nobody has heard.
        let votes = 1 + self
            .peers
            .iter()
            .filter(|p| p.last_heard.is_some() && self.liveness(now, p) != Liveness::Dead)
            .count();
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
            lease_until: self.plane.lease_emitted,
            members,
            dropped: self
                .counters
                .iter()
                .map(|&(r, n)| (r.as_str(), n))
                .collect(),
            sent_bytes: self.outbox.sent_bytes,
            sent_datagrams: self.outbox.sent_datagrams,
            blocked: self.blocked().map(Blocked::as_str),
            drain_reasons: self.drain_reasons(),
        }
    }

    /// Internal protocol state in one line, for simulator traces and bug
    /// reports.
    pub fn debug_line(&self, now: Time) -> String {
        format!(
            "id {} epoch {} wish {:?} coord {} quorum {} proposal {:?} acceptor {:?} pending {:?} handoff_done {} releasing_since {:?} flows {:?} barrier {} desired {:?} lease {} horizon {}ms (lower at {:?}) blocked {:?}",
            self.cfg.self_id,
            self.state.epoch,
            self.intent.wish(),
            self.is_coordinator(now),
            self.has_quorum(now),
            self.proposer.summary(),
            self.acceptor.summary(),
            self.acceptor.pending_summary(),
            self.plane.handoff_done,
            self.plane.releasing_since,
            self.plane.flows_remaining,
            self.plane.barrier_passed,
            self.desired_ops(now),
            self.plane.lease_emitted,
            self.storage.max_horizon / MS,
            self.timers.get(super::Timer::HorizonLower),
            self.blocked(),
        )
    }

    /// The one mapping to a member's state: its standing in our installed
    /// epoch says what it does (left, handing off, drained, fenced); for a
    /// member that serves or was never admitted, liveness says how it is.
    ///
    /// A fenced member is `Dead` whether or not we hear it: the cluster
    /// declared it failed and serves its buckets, and it must be admitted
    /// again before it counts (hearing it again is reported as `Alive`
    /// by the liveness reports, and its admission as a standing change).
    pub(super) fn member_state(&self, now: Time, id: u8) -> MemberState {
        match self.state.member(id).map(|m| m.standing) {
            Some(Standing::Left) => return MemberState::Left,
            Some(Standing::Draining | Standing::Leaving) => return MemberState::Draining,
            Some(Standing::Drained) => return MemberState::Drained,
            Some(Standing::Fenced) => return MemberState::Dead,
            Some(Standing::Active | Standing::Absent) | None => {}
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
        if self.intent.stopped {
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
        if self.plane.lease_emitted <= now {
            return NodeState::Fenced;
        }
        match standing {
            Some(Standing::Draining | Standing::Leaving) => NodeState::Draining,
            Some(Standing::Drained) => NodeState::Drained,
            _ => NodeState::Active,
        }
    }

    /// Whether the barrier passed, no member that takes part has a handoff
    /// open, and every participating member reports our (epoch, digest).
    /// A fenced member's open handoff (its host may still hold connections,
    /// see `assign`) does not count: every bucket is served and the map
    /// agreed; it only ends when the member rejoins or after drain_timeout.
    fn converged(&self) -> bool {
        self.plane.barrier_passed
            && self
                .state
                .prev
                .iter()
                .flatten()
                .all(|&p| !self.state.participates(p))
            && self.confirmed_by_all(|_| true)
    }

    /// Whether every participating member that `counts` has confirmed our
    /// (epoch, digest) in its latest heartbeat ([`reports`]: one sent to
    /// this incarnation, so that no stale heartbeat opens a barrier for a
    /// node that lost its state and replays old epochs).
    pub(super) fn confirmed_by_all(
        &self,
        counts: impl Fn(&crate::assign::MemberRec) -> bool,
    ) -> bool {
        self.state.members.iter().all(|m| {
            !m.standing.participates()
                || !counts(m)
                || m.id == self.cfg.self_id
                || self
                    .peer(m.id)
                    .and_then(|p| p.report.as_ref())
                    .is_some_and(|h| reports(h, self.state.epoch, self.digest, self.incarnation))
        })
    }

    /// Our settings, as carried in heartbeats so that a peer whose
    /// fingerprint differs can say what differs.
    pub(super) fn summary(&self) -> ConfigSummary {
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

    /// Reports, once per incarnation, that peer `pi`'s configuration
    /// differs from ours, naming what differs.
    pub(super) fn report_mismatch(&mut self, pi: usize, theirs: &ConfigSummary) {
        if self.peers[pi].mismatch_reported {
            return;
        }
        let what = self.mismatch(theirs);
        self.peers[pi].mismatch_reported = true;
        self.outbox.push_report(Report::ConfigMismatch {
            member: self.peers[pi].id,
            what,
        });
    }

    /// What differs between `theirs` and our summary, for the operator.
    fn mismatch(&self, theirs: &ConfigSummary) -> String {
        let ours = self.summary();
        let checks = [
            (
                ours.buckets != theirs.buckets,
                format!("buckets {} vs ours {}", theirs.buckets, ours.buckets),
            ),
            (
                ours.singles != theirs.singles,
                format!(
                    "{} single-slot rules vs ours {}",
                    theirs.singles, ours.singles
                ),
            ),
            (
                ours.heartbeat_ms != theirs.heartbeat_ms,
                format!(
                    "heartbeat_interval_ms {} vs ours {}",
                    theirs.heartbeat_ms, ours.heartbeat_ms
                ),
            ),
            (
                ours.dead_after_ms != theirs.dead_after_ms,
                format!(
                    "dead_after_ms {} vs ours {}",
                    theirs.dead_after_ms, ours.dead_after_ms
                ),
            ),
            (
                ours.members_digest != theirs.members_digest,
                "member list or roles differ".to_string(),
            ),
        ];
        let d: Vec<String> = checks
            .into_iter()
            .filter_map(|(differs, what)| differs.then_some(what))
            .collect();
        if d.is_empty() {
            return "config fingerprint differs (VIPs, rules or other shared keys)".into();
        }
        d.join("; ")
    }

    /// Quorum gained or lost, and each peer's liveness change, as reports.
    pub(super) fn refresh_liveness_reports(&mut self, now: Time) {
        let has = self.has_quorum(now);
        if has != self.had_quorum {
            self.had_quorum = has;
            let votes = self.votes(now);
            self.outbox.push_report(Report::Quorum {
                has,
                why: format!(
                    "{votes} of {} voters reachable, {} needed",
                    self.voters,
                    quorum::needed(self.voters)
                ),
            });
        }
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
            let silent_ms = now.since(p.last_heard.unwrap_or(now)) / MS;
            let (state, why) = match l {
                Liveness::Alive => (MemberState::Alive, format!("member {} heard", p.id)),
                Liveness::Suspect => (
                    MemberState::Suspect,
                    format!("member {} silent for {silent_ms} ms", p.id),
                ),
                Liveness::Dead => (
                    MemberState::Dead,
                    format!(
                        "member {} silent for {silent_ms} ms on all {} links (dead after {} ms)",
                        p.id,
                        p.links,
                        dead / MS
                    ),
                ),
            };
            self.outbox.push_report(Report::MemberState {
                id: p.id,
                state,
                why,
            });
        }
    }
}
