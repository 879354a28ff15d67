//! Named timers, as in quinn-proto's `connection/timer.rs`: every deadline
//! the node keeps is one [`Timer`] in one [`TimerTable`].
//! [`crate::Node::poll_timeout`] returns the earliest armed one, and
//! [`crate::Node::handle_timeout`] handles each expired one by name, so a
//! retry or a deadline fires at its own time rather than whenever a
//! heartbeat happens to tick.
//!
//! Some timers are armed where their deadline begins (a heartbeat sent, a
//! write or install failed, a sync request held back, a proposer outbid, a
//! promise horizon to lower); the others follow state that many inputs
//! change and are re-armed from it after every input (`Node::arm_timers`,
//! like quinn's loss-detection timer).

use crate::time::Time;

use super::Node;

/// Every deadline the node keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Next heartbeat to every peer.
    Heartbeat,
    /// A participating peer crosses `dead_after`: act on its failure at once.
    FailureDetection,
    /// The deferred `Accepted` may leave (our fencing promises ran out).
    PendingAccept,
    /// The proposal in flight is due for a resend (one heartbeat interval
    /// after the last).
    ProposalResend,
    /// The proposal in flight has taken too long: give it up, so the next
    /// one starts with a higher ballot.
    ProposalGiveUp,
    /// Back-off after a live lower-id rival outbid us: no proposal before.
    ProposalBackoff,
    /// `drain_timeout` since our slots began releasing: end the handoff.
    HandoffDeadline,
    /// A sync request was held back (one per heartbeat interval): send it.
    SyncBackoff,
    /// Retry a failed data-plane install.
    InstallRetry,
    /// Retry a failed state write.
    PersistRetry,
    /// Promises made under a larger horizon have run out: lower it.
    HorizonLower,
}

impl Timer {
    /// Every timer, in the order expired ones are handled.
    pub(crate) const VALUES: [Timer; 11] = [
        Timer::Heartbeat,
        Timer::PersistRetry,
        Timer::HorizonLower,
        Timer::InstallRetry,
        Timer::PendingAccept,
        Timer::FailureDetection,
        Timer::ProposalGiveUp,
        Timer::ProposalResend,
        Timer::ProposalBackoff,
        Timer::HandoffDeadline,
        Timer::SyncBackoff,
    ];
}

/// One optional deadline per [`Timer`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TimerTable {
    data: [Option<Time>; Timer::VALUES.len()],
}

impl TimerTable {
    /// Arms `timer` for `time` (replacing any earlier deadline).
    pub(crate) fn set(&mut self, timer: Timer, time: Time) {
        self.data[timer as usize] = Some(time);
    }

    /// Arms `timer` for `time`, or stops it if `None`.
    pub(crate) fn set_or_stop(&mut self, timer: Timer, time: Option<Time>) {
        self.data[timer as usize] = time;
    }

    /// The deadline of `timer`, if armed.
    pub(crate) fn get(&self, timer: Timer) -> Option<Time> {
        self.data[timer as usize]
    }

    /// Disarms `timer`.
    pub(crate) fn stop(&mut self, timer: Timer) {
        self.data[timer as usize] = None;
    }

    /// The earliest armed deadline.
    pub(crate) fn next_timeout(&self) -> Option<Time> {
        self.data.iter().flatten().min().copied()
    }

    /// Whether `timer` is armed and its deadline is not after `now`.
    pub(crate) fn is_expired(&self, timer: Timer, now: Time) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }
}

impl Node {
    /// Re-arms the timers that follow state many inputs change: the
    /// deferred `Accepted`, the proposal's resend and give-up, the handoff
    /// deadline and failure detection.
    pub(super) fn arm_timers(&mut self) {
        let interval = self.cfg.heartbeat_interval_ns;
        self.timers
            .set_or_stop(Timer::PendingAccept, self.acceptor.pending_ready_at());
        let (resend, give_up) = self
            .proposer
            .deadlines(interval, self.cfg.dead_after_ns + 4 * interval);
        self.timers.set_or_stop(Timer::ProposalResend, resend);
        self.timers.set_or_stop(Timer::ProposalGiveUp, give_up);
        let timeout = self
            .intent
            .drain_timeout_override
            .unwrap_or(self.cfg.drain_timeout_ns);
        let handoff = self.plane.handoff_deadline(self.state.epoch, timeout);
        self.timers.set_or_stop(Timer::HandoffDeadline, handoff);
        // Wake exactly when a participating peer crosses `dead_after`, so a
        // failure is acted on at once rather than at the next heartbeat.
        let dead_at = self
            .peers
            .iter()
            .filter(|p| self.state.participates(p.id))
            .filter_map(|p| p.last_heard)
            .map(|last| last + self.cfg.dead_after_ns)
            .filter(|&t| t > self.last_input)
            .min();
        self.timers.set_or_stop(Timer::FailureDetection, dead_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_timeout_is_the_earliest_armed_timer() {
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::Heartbeat, Time(50));
        t.set(Timer::SyncBackoff, Time(20));
        assert_eq!(t.next_timeout(), Some(Time(20)));
        assert!(t.is_expired(Timer::SyncBackoff, Time(20)));
        assert!(!t.is_expired(Timer::Heartbeat, Time(20)));
        t.stop(Timer::SyncBackoff);
        assert_eq!(t.next_timeout(), Some(Time(50)));
    }

    #[test]
    fn a_failed_write_is_retried_an_interval_later_not_at_the_next_heartbeat() {
        use crate::config::{Config, MemberConfig, Role};
        use crate::node::Action;
        use crate::time::MS;
        let members = (1..=3)
            .map(|id| MemberConfig {
                id,
                role: Role::Active,
                weight: 100,
                addrs: 1,
            })
            .collect();
        let start = Time(1_000 * MS);
        let mut node = Node::new(Config::with_defaults(1, members), start, 1).expect("valid");
        node.handle_timeout(start);
        let writes = |n: &mut Node| {
            std::iter::from_fn(|| n.poll_action())
                .filter(|a| matches!(a, Action::Persist { .. }))
                .count()
        };
        assert_eq!(writes(&mut node), 1, "the incarnation is written at start");
        // The write fails half-way between two heartbeats.
        let failed_at = start + 25 * MS;
        node.persisted(failed_at, 1, false);
        assert_eq!(
            node.poll_timeout(),
            Some(start + 50 * MS),
            "heartbeat first"
        );
        node.handle_timeout(start + 50 * MS);
        assert_eq!(writes(&mut node), 0, "a heartbeat does not retry the write");
        assert_eq!(node.poll_timeout(), Some(failed_at + 50 * MS));
        node.handle_timeout(failed_at + 50 * MS);
        assert_eq!(writes(&mut node), 1, "retried at its own deadline");
    }

    #[test]
    fn every_timer_is_listed_once() {
        for (i, t) in Timer::VALUES.iter().enumerate() {
            assert_eq!(Timer::VALUES.iter().filter(|u| *u == t).count(), 1);
            assert!((*t as usize) < Timer::VALUES.len(), "{i}: {t:?}");
        }
    }
}
