//! Failover statistics for `xnlb status` and the metrics: how long each
//! failure of another member took to repair (its silence began to the
//! first epoch without it), and the availability estimate derived from
//! those repair times.

use std::collections::{BTreeSet, VecDeque};

use tracing::info;
use xnlb_proto::{MemberState, Time};

use crate::status::{AvailabilityView, RepairHistogram};

/// Repair times kept one by one for `xnlb status --json`.
const RECENT: usize = 100;

/// Failover bookkeeping for MTTR and availability.
pub(super) struct Failovers {
    started: Time,
    /// Members currently dead in our view (a Dead event repeats as the
    /// cluster fences them; count each failure once).
    dead: BTreeSet<u8>,
    /// Whether we are in a quorum: a node cut off sees everyone die, which
    /// is its own failure, not theirs.
    quorum: bool,
    /// Members declared dead whose buckets are not yet re-served: (id,
    /// time their silence began).
    pending: Vec<(u8, Time)>,
    /// Every repair since the start (count, sum and buckets).
    repairs: RepairHistogram,
    /// The last [`RECENT`] repair times (ms).
    recent_ms: VecDeque<f64>,
}

impl Failovers {
    /// No failure seen yet; uptime counts from `started`.
    pub fn new(started: Time) -> Failovers {
        Failovers {
            started,
            dead: BTreeSet::new(),
            quorum: false,
            pending: Vec::new(),
            repairs: RepairHistogram::default(),
            recent_ms: VecDeque::new(),
        }
    }

    /// Member `id` changed state at `now`; a member declared dead went
    /// silent `dead_after_ms` before.
    pub fn member(&mut self, id: u8, state: MemberState, now: Time, dead_after_ms: u64) {
        if state == MemberState::Dead {
            if self.dead.insert(id) && self.quorum {
                let silent_since = Time(now.0.saturating_sub(dead_after_ms * 1_000_000));
                self.pending.push((id, silent_since));
            }
        } else if state == MemberState::Alive {
            self.dead.remove(&id);
        }
    }

    /// This node gained or lost its quorum.
    pub fn quorum(&mut self, has: bool) {
        self.quorum = has;
    }

    /// A new epoch is in place at `now`: every pending failure is repaired.
    pub fn epoch(&mut self, now: Time) {
        for (id, since) in self.pending.drain(..) {
            let ms = now.0.saturating_sub(since.0) as f64 / 1e6;
            info!("failover of member {id} repaired in {ms:.0} ms (silence to new epoch)");
            self.repairs.observe(ms);
            if self.recent_ms.len() == RECENT {
                self.recent_ms.pop_front();
            }
            self.recent_ms.push_back(ms);
        }
    }

    /// The status view at `now`.
    pub fn view(&self, now: Time) -> AvailabilityView {
        let uptime_s = now.0.saturating_sub(self.started.0) as f64 / 1e9;
        let n = self.repairs.count();
        let mttr = (n > 0).then(|| self.repairs.sum_ms / n as f64);
        let mtbf = (n > 0).then(|| uptime_s / n as f64);
        let availability = match (mtbf, mttr) {
            (Some(b), Some(r)) => b / (b + r / 1000.0),
            _ => 1.0,
        };
        AvailabilityView {
            failovers: n,
            last_mttr_ms: self.recent_ms.back().copied(),
            mttr_ms: mttr,
            mtbf_s: mtbf,
            availability,
            uptime_s,
            repairs_ms: self.recent_ms.iter().copied().collect(),
            repair_histogram: self.repairs.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_failure_counts_once_and_only_inside_a_quorum() {
        let mut f = Failovers::new(Time(0));
        // Cut off: everyone dies in our view; that is our failure.
        f.member(2, MemberState::Dead, Time(1_000 * MS), 250);
        f.epoch(Time(1_100 * MS));
        assert_eq!(f.view(Time(2_000 * MS)).failovers, 0);
        f.member(2, MemberState::Alive, Time(1_500 * MS), 250);
        f.quorum(true);
        f.member(3, MemberState::Dead, Time(3_000 * MS), 250);
        f.member(3, MemberState::Dead, Time(3_010 * MS), 250);
        f.epoch(Time(3_050 * MS));
        let v = f.view(Time(10_000 * MS));
        assert_eq!(v.failovers, 1, "{v:?}");
        assert_eq!(
            v.last_mttr_ms,
            Some(300.0),
            "silence (250 ms) to epoch (50 ms)"
        );
    }

    #[test]
    fn the_repair_histogram_counts_every_failover_not_the_last_hundred() {
        let mut f = Failovers::new(Time(0));
        f.quorum(true);
        let mut t = 1_000 * MS;
        for i in 0..150u64 {
            let id = 2 + (i % 2) as u8;
            f.member(id, MemberState::Dead, Time(t), 250);
            // Repairs of 260 ms, 270 ms, 280 ms, ...
            f.epoch(Time(t + (10 + i % 3 * 10) * MS));
            f.member(id, MemberState::Alive, Time(t + 500 * MS), 250);
            t += 1_000 * MS;
        }
        let v = f.view(Time(t));
        let h = &v.repair_histogram;
        assert_eq!((v.failovers, h.count()), (150, 150), "{h:?}");
        assert_eq!(v.repairs_ms.len(), 100, "status keeps the last 100");
        // Every repair (260..=280 ms) is in the (200, 300] bucket.
        let i300 = crate::status::REPAIR_BUCKETS_MS
            .iter()
            .position(|&b| b == 300.0)
            .expect("a 300 ms bound");
        assert_eq!(h.counts[i300], 150, "{h:?}");
        assert!((h.sum_ms - 150.0 * 270.0).abs() < 1.0, "{}", h.sum_ms);
    }
}
