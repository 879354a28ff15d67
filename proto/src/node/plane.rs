//! This node's data plane as the core sees it: the table last handed to the
//! shell, the barrier that lets slots gain acceptance of new flows, the
//! handoff of releasing slots, the lease word, and whether the data plane
//! actually holds our map.
//!
//! The data-plane rule (S1, S6) is enforced here: until every participating
//! member has confirmed our `(epoch, digest)` (the barrier), a slot may only
//! lose acceptance of new flows ([`limit`]); the lease is extended only while
//! this node serves and a quorum of vouchers supports it ([`crate::quorum`]).

use crate::assign::ClusterState;
use crate::config::Role;
use crate::quorum;
use crate::time::Time;
use crate::wire::Heartbeat;
use xnlb_common::slot_state::{ACQUIRING, NOT_OWNED, OWNED, RELEASING};

use super::outbox::{Action, Report, Routes};
use super::Node;

/// The data plane's table, handoff and lease.
pub(crate) struct Plane {
    /// Slot states last handed to the shell (buckets then singles).
    dp: Option<Vec<u8>>,
    /// Forwarding targets last handed to the shell with `dp`.
    routes: Routes,
    /// Every participating member confirmed our installed epoch.
    pub(crate) barrier_passed: bool,
    /// Since when some slot is `RELEASING`.
    pub(crate) releasing_since: Option<Time>,
    /// Tracked connections the data plane still has in releasing slots
    /// (unknown until it reports after the release began).
    pub(crate) flows_remaining: Option<u64>,
    /// Highest epoch whose handoff this node finished.
    pub(crate) handoff_done: u64,
    /// The handoff of this epoch timed out with connections left: its
    /// releasing slots stay dropped (the connections are cut here before
    /// the report lets the owner pass everything, never after).
    pub(crate) cut_epoch: u64,
    /// The data plane holds our installed state (false after a failed
    /// install, until a retry succeeds).
    pub(crate) installed: bool,
    /// The table the data plane holds as far as the shell has said: the
    /// last install it took without reporting a failure (`None`: none, an
    /// empty data plane). A failed install falls back to it, so the retry
    /// is limited against what the data plane really holds.
    written: Option<Vec<u8>>,
    /// The install the shell took last; it reports a failure of it before
    /// anything else, so the next one taken means it was written.
    polled: Option<Vec<u8>>,
    /// The next refresh hands the table over even if it equals `dp` (a
    /// retry after a failed install also rewrites its epoch and routes).
    reinstall: bool,
    /// The epoch of a table adopted from a previous life, and which of its
    /// slots held connections: while our (restored) state is older, those
    /// stay releasing (the previous life may have installed an epoch whose
    /// write it lost in the crash).
    adopted: Option<(u64, Vec<bool>)>,
    /// Last lease deadline handed to the shell (`Time(0)`: revoked).
    pub(crate) lease_emitted: Time,
}

impl Plane {
    /// Nothing installed yet; the shell's data plane holds no lease.
    pub(crate) fn new() -> Plane {
        Plane {
            dp: None,
            routes: Routes::default(),
            barrier_passed: false,
            releasing_since: None,
            flows_remaining: None,
            handoff_done: 0,
            cut_epoch: 0,
            installed: true,
            written: None,
            polled: None,
            reinstall: false,
            adopted: None,
            lease_emitted: Time(0),
        }
    }

    /// The shell took an install of `states` and `singles`: the one it took
    /// before was written.
    pub(crate) fn install_taken(&mut self, states: &[u8], singles: &[u8]) {
        if let Some(p) = self.polled.take() {
            self.written = Some(p);
        }
        let mut table = states.to_vec();
        table.extend_from_slice(singles);
        self.polled = Some(table);
    }

    /// The shell could not write the install it took last: the data plane
    /// keeps the table before it, and nothing is handed over again until
    /// [`Plane::retry_install`]. (Retrying from an empty table instead would
    /// drop the slots the failed one was releasing, cutting connections
    /// the data plane still passes.)
    pub(crate) fn install_refused(&mut self) {
        self.polled = None;
        self.dp = self.written.clone();
        self.installed = false;
    }

    /// Hands the table over again at the next refresh (after a failed
    /// install), limited against what the data plane holds.
    pub(crate) fn retry_install(&mut self) {
        self.installed = true;
        self.reinstall = true;
    }

    /// The table this node's data plane should hold for `state`, and the
    /// `Install` action if it differs from the one handed over.
    fn refresh(
        &mut self,
        now: Time,
        state: &ClusterState,
        id: u8,
        (participates, stopped): (bool, bool),
        buckets: usize,
    ) -> Option<Action> {
        let participating = !stopped && participates;
        let current = self.dp.as_ref();
        let mut next = Vec::with_capacity(state.owner.len());
        for s in 0..state.owner.len() {
            let holds = state.prev[s].contains(&id);
            let desired = if !participating {
                if holds && !stopped {
                    RELEASING
                } else {
                    NOT_OWNED
                }
            } else if state.owner[s] == id {
                if state.prev[s].is_empty() {
                    OWNED
                } else {
                    ACQUIRING
                }
            } else if holds {
                RELEASING
            } else {
                NOT_OWNED
            };
            let desired = if desired == RELEASING && self.cut_epoch >= state.epoch {
                NOT_OWNED
            } else {
                desired
            };
            let desired = match &self.adopted {
                Some((epoch, held))
                    if desired == NOT_OWNED && !stopped && held[s] && state.epoch < *epoch =>
                {
                    RELEASING
                }
                _ => desired,
            };
            let cur = current.map_or(NOT_OWNED, |c| c[s]);
            next.push(if self.barrier_passed {
                never_retake(cur, desired)
            } else {
                limit(cur, desired)
            });
        }
        if self
            .adopted
            .as_ref()
            .is_some_and(|(epoch, _)| state.epoch >= *epoch)
        {
            self.adopted = None;
        }
        let releasing = next.contains(&RELEASING);
        if releasing && self.releasing_since.is_none() {
            self.releasing_since = Some(now);
        }
        if !releasing {
            self.releasing_since = None;
        }
        let routes = routes_of(state);
        if current == Some(&next) && routes == self.routes && !self.reinstall {
            return None;
        }
        self.reinstall = false;
        let newly_releasing = next
            .iter()
            .zip(current.map_or(&[][..], |c| &c[..]))
            .any(|(n, c)| *n == RELEASING && *c != RELEASING)
            || (current.is_none() && releasing);
        if newly_releasing {
            // Slots that begin releasing now get the whole drain_timeout
            // (a second change during an open handoff must not time its
            // connections out at once).
            self.flows_remaining = None;
            self.releasing_since = Some(now);
        }
        let install = Action::Install {
            epoch: state.epoch,
            states: next[..buckets].to_vec(),
            singles: next[buckets..].to_vec(),
            routes: routes.clone(),
        };
        self.routes = routes;
        self.dp = Some(next);
        // Until the shell says otherwise (`install_failed`, before any
        // transmit leaves), the data plane holds this.
        self.installed = true;
        Some(install)
    }

    /// Stops trusting the table handed over as a baseline: after a state was
    /// adopted whole across a gap (a snapshot skipping epochs, or a repair),
    /// slots that accept new flows in it may have belonged to others in the
    /// epochs we never installed, and `limit` would let them keep accepting
    /// before the barrier. They only keep their tracked flows (`RELEASING`)
    /// until the barrier of the adopted epoch passes.
    fn distrust(&mut self, now: Time, epoch: u64, buckets: usize) -> Option<Action> {
        let dp = self.dp.as_mut()?;
        let mut demoted = false;
        for s in dp.iter_mut().filter(|s| **s == OWNED || **s == ACQUIRING) {
            *s = RELEASING;
            demoted = true;
        }
        if !demoted {
            return None;
        }
        // What is demoted now begins releasing now (its whole drain_timeout).
        self.flows_remaining = None;
        self.releasing_since = Some(now);
        Some(Action::Install {
            epoch,
            states: dp[..buckets].to_vec(),
            singles: dp[buckets..].to_vec(),
            routes: self.routes.clone(),
        })
    }

    /// Revokes the lease at once, if it is not revoked already.
    fn revoke(&mut self) -> Option<Action> {
        if self.lease_emitted == Time(0) {
            return None;
        }
        self.lease_emitted = Time(0);
        Some(Action::Lease {
            until: Time(0),
            hold: None,
        })
    }

    /// Extends the lease to `until` if that is worth a write (more than a
    /// quarter heartbeat later than the last one), and the held-delivery
    /// deadline `hold` after it.
    fn extend(&mut self, until: Time, interval: u64, hold: u64) -> Option<Action> {
        if until <= self.lease_emitted + interval / 4 {
            return None;
        }
        self.lease_emitted = until;
        Some(Action::Lease {
            until,
            hold: Some(until + hold),
        })
    }

    /// When the handoff of `epoch` times out, if it is open.
    pub(crate) fn handoff_deadline(&self, epoch: u64, timeout: u64) -> Option<Time> {
        // Nothing ends while the data plane refuses our table (see
        // `handoff`); the install retry's timer wakes us.
        if self.handoff_done >= epoch || !self.installed {
            return None;
        }
        self.releasing_since.map(|since| since + timeout)
    }

    /// Ends the handoff of `epoch` when the releasing slots' flows are gone
    /// or `timeout` has passed since they began releasing. A timed-out
    /// handoff first cuts what is left (`cut_epoch`; the caller reinstalls)
    /// so this node has stopped passing those connections before its
    /// report lets the new owners pass everything.
    fn handoff(&mut self, now: Time, epoch: u64, timeout: u64) -> Option<Report> {
        if !self.installed {
            // The handoff state describes a table the data plane refused:
            // nothing ends before the retry installs ours (an epoch learnt
            // meanwhile would otherwise count as handed off at once).
            return None;
        }
        let Some(since) = self.releasing_since else {
            if self.handoff_done < epoch {
                self.handoff_done = epoch;
            }
            return None;
        };
        if self.handoff_done >= epoch {
            return None;
        }
        let flows_done = self.flows_remaining == Some(0);
        let timed_out = now.since(since) >= timeout;
        if !flows_done && !timed_out {
            return None;
        }
        self.handoff_done = epoch;
        if !flows_done {
            self.cut_epoch = epoch;
        }
        Some(Report::HandoffDone {
            epoch,
            timed_out: !flows_done,
        })
    }
}

impl Node {
    /// Whether every participating member (witnesses aside: they have no
    /// data plane) has confirmed our (epoch, digest).
    pub(super) fn barrier(&self) -> bool {
        self.confirmed_by_all(|m| m.role != Role::Witness)
    }

    /// Hands the shell the table our installed state asks for, limited by
    /// the barrier.
    pub(super) fn refresh_dataplane(&mut self, now: Time) {
        if !self.plane.installed {
            return; // until the install retry
        }
        if !self.plane.barrier_passed && self.barrier() {
            self.plane.barrier_passed = true;
        }
        let install = self.plane.refresh(
            now,
            &self.state,
            self.cfg.self_id,
            (self.self_participates(), self.intent.stopped),
            self.cfg.buckets as usize,
        );
        self.outbox.push_action(install);
    }

    /// A state was adopted across a gap: see [`Plane::distrust`].
    pub(super) fn distrust_dataplane(&mut self, now: Time) {
        let demote = self
            .plane
            .distrust(now, self.state.epoch, self.cfg.buckets as usize);
        // While an install is refused nothing is handed over: the demotion
        // stays in the table the retry refreshes over.
        if self.plane.installed {
            self.outbox.push_action(demote);
        }
    }

    /// Fences this node's data plane at once.
    pub(super) fn revoke_lease(&mut self) {
        let revoke = self.plane.revoke();
        self.outbox.push_action(revoke);
    }

    /// Extends the lease as far as a quorum of vouchers supports, or revokes
    /// it if this node may not serve.
    pub(super) fn refresh_lease(&mut self, now: Time) {
        let me = self.cfg.self_id;
        let serving = !self.intent.stopped
            && self.blocked().is_none()
            && self.self_participates()
            && self.state.epoch >= self.acceptor.paxos.floor(me);
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
        let extend = self.plane.extend(
            Time(t),
            self.cfg.heartbeat_interval_ns,
            quorum::hold_ns(self.cfg.drain_timeout_ns, self.cfg.hold_cap_ns),
        );

        self.outbox.push_action(extend);
    }

    /// Ends the handoff of our installed epoch when it is done.
    pub(super) fn refresh_handoff(&mut self, now: Time) {
        let timeout = self
            .intent
            .drain_timeout_override
            .unwrap_or(self.cfg.drain_timeout_ns);
        let done = self.plane.handoff(now, self.state.epoch, timeout);
        if matches!(
            done,
            Some(Report::HandoffDone {
                timed_out: true,
                ..
            })
        ) {
            self.refresh_dataplane(now);
        }
        self.outbox.push_report(done);
    }

    /// Takes the table a previous agent left live in the data plane as the
    /// baseline instead of starting from an empty one, distrusted like a
    /// state adopted across a gap ([`Plane::distrust`]): its connections
    /// keep being served (`RELEASING`) while this incarnation rejoins, and
    /// no slot accepts new flows before the barrier. `epoch` is the live
    /// table's: the previous life may have installed an epoch whose state
    /// write the crash lost, and until our state reaches that epoch the
    /// slots holding connections stay releasing rather than being dropped
    /// for an older map's sake. Call right after [`Node::new`] or
    /// [`Node::restore`], before polling anything.
    pub fn adopt_dataplane(&mut self, now: Time, epoch: u64, states: &[u8], singles: &[u8]) {
        let mut live = states.to_vec();
        live.extend_from_slice(singles);
        if live.len() != self.state.owner.len() {
            return; // another layout: start from nothing, as before
        }
        self.plane.adopted = Some((epoch, live.iter().map(|&s| s != NOT_OWNED).collect()));
        self.outbox.drop_installs();
        // The live table comes with the previous life's lease, which peers
        // stop honouring as soon as they hear our new incarnation (they
        // drop its vouch): it must end now, not when it runs out.
        self.outbox.push_action(Some(Action::Lease {
            until: Time(0),
            hold: None,
        }));
        self.plane.written = Some(live.clone());
        self.plane.polled = None;
        self.plane.dp = Some(live);
        self.distrust_dataplane(now);
        self.refresh_dataplane(now);
    }
}

/// Never gain acceptance of new flows without the barrier, nor take up
/// again connections this data plane had let go of (a cut after a timed-out
/// handoff that a restart forgot: the owner may pass them by now).
fn limit(current: u8, desired: u8) -> u8 {
    let accepts_new = |s: u8| s == OWNED || s == ACQUIRING;
    match (current, never_retake(current, desired)) {
        (OWNED, ACQUIRING) => ACQUIRING,
        (c, d) if accepts_new(d) && !accepts_new(c) => c,
        (ACQUIRING, OWNED) => ACQUIRING,
        (_, d) => d,
    }
}

/// Never take up again connections this data plane let go of, barrier or
/// not: a handoff cut in one epoch (`cut_epoch`) leaves the member in the
/// slot's previous owners until its report is committed, and a later epoch
/// learnt meanwhile would otherwise ask it to release (serve) them again
/// after the owner began passing everything.
fn never_retake(current: u8, desired: u8) -> u8 {
    if current == NOT_OWNED && desired == RELEASING {
        NOT_OWNED
    } else {
        desired
    }
}

/// Whether a peer's heartbeat says its data plane holds `(epoch, digest)`,
/// sent after it heard this `incarnation` of ours (it echoes it): a
/// heartbeat from before our start, delayed or replayed, may describe an
/// epoch its sender has long left.
pub(super) fn reports(h: &Heartbeat, epoch: u64, digest: u64, incarnation: u64) -> bool {
    h.installed && h.epoch == epoch && h.digest == digest && h.echo_incarnation == incarnation
}

/// Routed mode's forwarding targets in `state`: each slot's owner, and
/// its two lowest-id previous owners other than the owner (where its
/// connections' packets go, in that order, when the owner's kernel does
/// not hold them). `prev` is kept in ascending ids.
fn routes_of(state: &ClusterState) -> Routes {
    let nth = |n: usize| -> Vec<u8> {
        state
            .prev
            .iter()
            .zip(&state.owner)
            .map(|(prev, owner)| {
                prev.iter()
                    .copied()
                    .filter(|p| p != owner)
                    .nth(n)
                    .unwrap_or(xnlb_common::NO_MEMBER)
            })
            .collect()
    };
    Routes {
        owners: state.owner.clone(),
        holders: nth(0),
        holders2: nth(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_adopted_across_a_gap_keeps_no_slot_accepting_new_flows() {
        let mut plane = Plane::new();
        plane.dp = Some(vec![OWNED, ACQUIRING, RELEASING, NOT_OWNED, OWNED]);
        let Some(Action::Install {
            states, singles, ..
        }) = plane.distrust(Time(5), 9, 4)
        else {
            panic!("the demoted table must be installed");
        };
        assert_eq!(states, vec![RELEASING, RELEASING, RELEASING, NOT_OWNED]);
        assert_eq!(singles, vec![RELEASING]);
        // Without the barrier, nothing regains acceptance from there.
        assert_eq!(limit(RELEASING, OWNED), RELEASING);
        assert_eq!(limit(RELEASING, ACQUIRING), RELEASING);
        assert!(
            plane.distrust(Time(6), 9, 4).is_none(),
            "nothing left to demote"
        );
    }

    /// Found by the simulator (seed 6106 at the time): after a handoff cut
    /// in one epoch, the next epoch learnt before the cut was committed
    /// still listed this member as a previous owner, and with its barrier
    /// passed it released (served) the cut connections again.
    #[test]
    fn a_slot_let_go_is_never_released_again_barrier_or_not() {
        for s in [NOT_OWNED, OWNED, ACQUIRING, RELEASING] {
            assert_eq!(never_retake(s, NOT_OWNED), NOT_OWNED);
        }
        assert_eq!(never_retake(NOT_OWNED, RELEASING), NOT_OWNED);
        assert_eq!(limit(NOT_OWNED, RELEASING), NOT_OWNED);
        assert_eq!(never_retake(OWNED, RELEASING), RELEASING);
        assert_eq!(never_retake(NOT_OWNED, OWNED), OWNED);

        // The same through `refresh`: a table with the slot let go, a state
        // that lists us as its previous owner again, the barrier passed.
        let mut plane = Plane::new();
        plane.dp = Some(vec![NOT_OWNED, OWNED]);
        plane.barrier_passed = true;
        let members = (1..=2)
            .map(|id| crate::config::MemberConfig {
                id,
                role: Role::Active,
                weight: 100,
                addrs: 1,
            })
            .collect();
        let mut cfg = crate::config::Config::with_defaults(1, members);
        cfg.buckets = 2;
        let mut state = ClusterState::genesis(&cfg);
        state.epoch = 4;
        state.owner = vec![2, 1];
        state.prev = vec![vec![1], vec![]];
        let install = plane.refresh(Time(1), &state, 1, (true, false), 2);
        if let Some(Action::Install { states, .. }) = install {
            assert_eq!(states, vec![NOT_OWNED, OWNED]);
        }
        assert_eq!(plane.dp.as_deref(), Some(&[NOT_OWNED, OWNED][..]));
    }
}
