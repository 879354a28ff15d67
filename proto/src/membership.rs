//! What this node knows about each peer: liveness per link, replay window,
//! lease echoes in both directions, and the peer's reported state.

use crate::time::Time;
use crate::wire::{Heartbeat, Wish};

/// Sliding window over sequence numbers: accepts each number at most once and
/// tolerates reordering up to [`ReplayWindow::WIDTH`] datagrams (heartbeats on
/// two links interleave, the network reorders).
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `i` set: `highest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    /// How far behind the highest sequence number a datagram may arrive.
    pub const WIDTH: u64 = 64;

    /// Records `seq`; false if it was seen before or is too old.
    pub fn check_and_record(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= Self::WIDTH {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = seq;
            return true;
        }
        let back = self.highest - seq;
        if back >= Self::WIDTH || self.seen & (1 << back) != 0 {
            return false;
        }
        self.seen |= 1 << back;
        true
    }
}

/// Liveness as reported in status (DESIGN 4 member states, in part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Heard within two heartbeat intervals.
    Alive,
    /// Missed beats, not yet dead.
    Suspect,
    /// Silent on all links for `dead_after` (or never heard).
    Dead,
}

/// Everything known about one peer.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Member id.
    pub id: u8,
    /// Number of links (addresses) it has.
    pub links: usize,
    /// Current incarnation (0 = never heard).
    pub incarnation: u64,
    /// Replay window for `incarnation`.
    pub replay: ReplayWindow,
    /// Last authenticated datagram on any link.
    pub last_heard: Option<Time>,
    /// Last authenticated datagram per local link.
    pub last_heard_link: Vec<Option<Time>>,
    /// Latest `sent_at` of the peer that we vouch for (echo back), and when
    /// we received it. Vouching is a promise: we will not accept fencing this
    /// peer until `dead_after` after that receipt (see [`crate::quorum`]).
    pub vouch: Option<(u64, Time)>,
    /// Latest of our own `sent_at` the peer vouched for (this incarnation).
    pub echo_of_ours: u64,
    /// The promise horizon the peer gave with that echo (ns).
    pub echo_horizon: u64,
    /// Epoch at which our states were last seen to differ (0 = never).
    pub diverged_at: u64,
    /// The peer's latest heartbeat.
    pub report: Option<Heartbeat>,
    /// Fingerprint mismatch already reported (once per incarnation).
    pub mismatch_reported: bool,
    /// Liveness last reported as an event.
    pub reported_liveness: Option<Liveness>,
}

impl Peer {
    /// A peer never heard from.
    pub fn new(id: u8, links: usize, local_links: usize) -> Peer {
        Peer {
            id,
            links,
            incarnation: 0,
            replay: ReplayWindow::default(),
            last_heard: None,
            last_heard_link: vec![None; local_links.max(1)],
            vouch: None,
            echo_of_ours: 0,
            echo_horizon: 0,
            diverged_at: 0,
            report: None,
            mismatch_reported: false,
            reported_liveness: None,
        }
    }

    /// Liveness at `now`. `since` is when we started listening: a peer
    /// never heard counts as silent since then.
    pub fn liveness(&self, now: Time, since: Time, interval: u64, dead_after: u64) -> Liveness {
        let last = self.last_heard.unwrap_or(since).max(since);
        let silent = now.since(last);
        if silent >= dead_after {
            Liveness::Dead
        } else if self.last_heard.is_none() || silent > 2 * interval {
            Liveness::Suspect
        } else {
            Liveness::Alive
        }
    }

    /// The peer's wish, epoch and digest as last reported.
    pub fn wish(&self) -> Option<Wish> {
        self.report.as_ref().map(|h| h.wish)
    }

    /// Links on which we heard it within `window` of `now`.
    pub fn links_heard(&self, now: Time, window: u64) -> usize {
        self.last_heard_link
            .iter()
            .filter(|t| t.is_some_and(|t| now.since(t) < window))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_accepts_each_sequence_once_and_tolerates_reordering() {
        let mut w = ReplayWindow::default();
        assert!(w.check_and_record(5));
        assert!(w.check_and_record(3));
        assert!(!w.check_and_record(3));
        assert!(!w.check_and_record(5));
        assert!(w.check_and_record(100));
        assert!(!w.check_and_record(5), "too old");
        assert!(w.check_and_record(99));
        assert!(!w.check_and_record(0));
    }
}
