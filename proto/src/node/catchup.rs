//! Getting and adopting committed states: sync requests, the commit log we
//! replay to a member slightly behind, snapshots for one further behind (or
//! one whose state differs from ours at the same epoch: the divergence
//! repair), `Commit`s, and the install of a committed state.
//!
//! Nothing is installed unless it is provably the committed one: a commit
//! must reproduce the committer's digest from our state, a snapshot must
//! decode, match its digest and fit our configuration ([`state_fits`]), and
//! a snapshot that *replaces* our state at the same epoch must be what a
//! quorum of members reports holding.

use std::collections::VecDeque;

use crate::assign::{ClusterState, Standing};
use crate::config::{Config, Failback};
use crate::epoch;
use crate::quorum;
use crate::time::Time;
use crate::wire::{Body, DropReason, Heartbeat, Op, SNAPSHOT_CHUNK};

use super::outbox::Report;
use super::{Node, Timer};

/// Committed epochs kept for replay to members that are behind.
const LOG_LEN: usize = 64;

/// A snapshot being received.
struct SnapshotRx {
    epoch: u64,
    digest: u64,
    chunks: Vec<Option<Vec<u8>>>,
}

/// Catch-up state: the commit log, the snapshot in reception and when we
/// last asked for a sync.
#[derive(Default)]
pub(crate) struct Catchup {
    /// `(epoch, ops, digest)` of the latest commits, oldest first.
    log: VecDeque<(u64, Vec<Op>, u64)>,
    snapshot_rx: Option<SnapshotRx>,
    /// Last sync request (`Time(0)`: none, or the next may go at once).
    sync_sent: Time,
    /// A request held back by the one-per-interval limit: `(to, link)`,
    /// sent when [`super::Timer::SyncBackoff`] expires.
    held: Option<(u8, usize)>,
}

impl Catchup {
    /// Whether a sync request to `to` may go now (at most one per
    /// `interval`): if so it counts as sent, else it is held back until the
    /// returned time.
    fn may_request(&mut self, now: Time, interval: u64, to: u8, link: usize) -> Result<(), Time> {
        if now.since(self.sync_sent) < interval && self.sync_sent != Time(0) {
            self.held = Some((to, link));
            return Err(self.sync_sent + interval);
        }
        self.sync_sent = now;
        self.held = None;
        Ok(())
    }

    /// Records the installed `epoch`: its ops extend the log (a state
    /// adopted whole, with no ops, breaks the chain) and older snapshots
    /// are moot.
    fn installed(&mut self, epoch: u64, ops: &[Op], digest: u64) {
        if !ops.is_empty() {
            self.log.push_back((epoch, ops.to_vec(), digest));
            while self.log.len() > LOG_LEN {
                self.log.pop_front();
            }
        } else {
            self.log.clear();
        }
        if self.snapshot_rx.as_ref().is_some_and(|r| r.epoch <= epoch) {
            self.snapshot_rx = None;
        }
    }

    /// The digest our log recorded for `epoch`, if it holds that commit.
    fn digest_of(&self, epoch: u64) -> Option<u64> {
        self.log.iter().find(|e| e.0 == epoch).map(|e| e.2)
    }

    /// The commits after `have`, if the log reaches back that far.
    fn commits_after(&self, have: u64) -> Option<Vec<(u64, Vec<Op>, u64)>> {
        let first = self.log.front()?.0;
        (first <= have + 1).then(|| self.log.iter().filter(|e| e.0 > have).cloned().collect())
    }

    /// Stores one chunk; the whole snapshot's bytes once every chunk is in.
    fn assemble(
        &mut self,
        epoch: u64,
        digest: u64,
        index: u16,
        count: u16,
        data: Vec<u8>,
    ) -> Option<Vec<u8>> {
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
        let rx = self.snapshot_rx.as_mut()?;
        rx.chunks[index as usize] = Some(data);
        if rx.chunks.iter().any(|c| c.is_none()) {
            return None;
        }
        let bytes: Vec<u8> = rx.chunks.iter().flatten().flatten().copied().collect();
        self.snapshot_rx = None;
        Some(bytes)
    }
}

impl Node {
    /// Asks `to` for what we miss (commits or a snapshot), at most once per
    /// heartbeat interval.
    pub(super) fn request_sync(&mut self, now: Time, to: u8, link: usize) {
        let interval = self.cfg.heartbeat_interval_ns;
        if let Err(until) = self.catchup.may_request(now, interval, to, link) {
            self.timers.set(Timer::SyncBackoff, until);
            return;
        }
        self.timers.stop(Timer::SyncBackoff);
        self.send_on(
            to,
            link,
            Body::SyncRequest {
                have: self.state.epoch,
                digest: self.digest,
            },
        );
    }

    /// Sends the sync request held back by the rate limit.
    pub(super) fn send_held_sync(&mut self, now: Time) {
        if let Some((to, link)) = self.catchup.held.take() {
            self.request_sync(now, to, link);
        }
    }

    /// Peer `pi` reports another state than ours at our epoch: stop
    /// vouching for it, report it once per epoch, and ask for its state
    /// (adopted only if a quorum holds it, see [`Node::on_chunk`]).
    pub(super) fn on_divergence(&mut self, now: Time, pi: usize, link: usize, hb: Heartbeat) {
        let epoch = self.state.epoch;
        let peer = &mut self.peers[pi];
        let from = peer.id;
        peer.vouch = None;
        if peer.diverged_at != epoch {
            peer.diverged_at = epoch;
            self.outbox.push_report(Report::Divergence {
                member: from,
                epoch,
            });
        }
        self.peers[pi].report = Some(hb);
        self.request_sync(now, from, link);
    }

    /// A message about catching up.
    pub(super) fn step_catchup(&mut self, now: Time, from: u8, link: usize, body: Body) {
        match body {
            Body::SyncRequest { have, digest } => self.on_sync_request(from, link, have, digest),
            Body::Commit { epoch, ops, digest } => {
                self.on_commit(now, from, link, epoch, ops, digest)
            }
            Body::SnapshotChunk {
                epoch,
                digest,
                index,
                count,
                data,
            } => self.on_chunk(now, epoch, digest, index, count, data),
            _ => {}
        }
    }

    /// Sends `from` what it misses: the commits after `have` if our log
    /// reaches back, else our whole state in chunks.
    fn on_sync_request(&mut self, from: u8, link: usize, have: u64, digest: u64) {
        if have > self.state.epoch || (have == self.state.epoch && digest == self.digest) {
            return;
        }
        // A requester whose state at `have` is not the one we committed
        // (it decided something alone, e.g. a node that lost its state and
        // was fed replayed votes of its previous life) cannot apply our
        // commits: it gets the whole state instead of a loop of refusals.
        let diverged = self.catchup.digest_of(have).is_some_and(|d| d != digest);
        if have < self.state.epoch && !diverged {
            if let Some(entries) = self.catchup.commits_after(have) {
                for (epoch, ops, digest) in entries {
                    self.send_on(from, link, Body::Commit { epoch, ops, digest });
                }
                return;
            }
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

    /// One chunk of a snapshot; a complete one that checks out is installed.
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
        let Some(bytes) = self.catchup.assemble(epoch, digest, index, count, data) else {
            return;
        };
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

    /// A decided epoch: installed if it is our next one and reproduces the
    /// committer's digest, else we sync.
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
            self.catchup.sync_sent = Time(0);
            self.request_sync(now, from, link);
            return;
        }
        self.install(now, next, String::new(), ops);
    }

    /// Adopts a committed state: persists it, reports the epoch and every
    /// standing change, refreshes the data plane and tells every peer at
    /// once (their barriers wait for our confirmation).
    pub(super) fn install(&mut self, now: Time, next: ClusterState, why: String, ops: Vec<Op>) {
        let from = self.state.epoch;
        let before = std::mem::replace(&mut self.state, next);
        self.digest = self.state.digest();
        let epoch = self.state.epoch;
        self.catchup.installed(epoch, &ops, self.digest);
        self.acceptor.paxos.advance(epoch);
        self.proposer.installed(epoch);
        if epoch != from + 1 {
            // Across a gap a member may have been re-admitted and fenced
            // again unseen: its handoff clock restarts here, never earlier
            // than the fence we did not see (its held delivery may still run).
            self.proposer.forget_orphans();
        }
        self.proposer.track_orphans(&self.state, now);
        self.plane.barrier_passed = false;
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
        self.outbox.push_report(Report::Epoch {
            from,
            to: epoch,
            why,
        });
        for m in &self.state.members {
            let old = before.member(m.id).map(|r| r.standing);
            if old != Some(m.standing) {
                self.outbox.push_report(Report::MemberState {
                    id: m.id,
                    state: self.member_state(now, m.id),
                    why: format!("epoch {epoch}: {:?} -> {:?}", old, m.standing),
                });
            }
        }
        let me = self.cfg.self_id;
        let fenced =
            |s: &ClusterState| s.member(me).is_some_and(|m| m.standing == Standing::Fenced);
        if self.cfg.failback == Failback::Manual
            && fenced(&self.state)
            && !fenced(&before)
            && !self.intent.leaving
        {
            self.intent.failback_hold = true;
        }
        if epoch != from + 1 {
            // A snapshot across a gap or a repair: our table was built for
            // epochs (or a state) the cluster left behind.
            self.distrust_dataplane(now);
        }
        self.refresh_dataplane(now);
        // Tell everyone at once: their barriers wait for our confirmation.
        self.send_heartbeats(now);
    }
}

/// Checks a state from a snapshot or a state file against our config before
/// anything uses it: a state that decodes may still come from another
/// layout, or (from a key holder) be crafted to make assignment index out of
/// range.
pub(super) fn state_fits(s: &ClusterState, cfg: &Config) -> Result<(), String> {
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
    if let Some(id) = s
        .owner
        .iter()
        .chain(s.prev.iter().flatten())
        .find(|&&id| !known(id))
    {
        return Err(format!("a slot names unknown member {id}"));
    }
    if let Some(p) = s
        .prev
        .iter()
        .find(|p| p.contains(&0) || p.windows(2).any(|w| w[0] >= w[1]))
    {
        return Err(format!(
            "a slot's previous owners {p:?} are not ascending ids"
        ));
    }

    Ok(())
}

/// `"; slots moved: N from A to B, ..."` for the epoch report.
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
