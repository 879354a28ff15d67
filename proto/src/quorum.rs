//! Quorum arithmetic and the lease: why a node stops serving before anyone
//! else may take its slots.
//!
//! # The bound
//! Clocks are never compared across nodes; only their *rates* are assumed to
//! be within [`MAX_CLOCK_SKEW_PPM`] (ε = 1 %, ten times worse than any real
//! crystal) of real time: a local interval `d` lasts between `d/(1+ε)` and
//! `d/(1−ε)` real time.
//!
//! # Vouching
//! Each heartbeat carries the sender's clock `sent_at`. A receiver *vouches*
//! for the latest `sent_at` it received from a peer by echoing it back, and
//! from then on promises not to accept an epoch that fences that peer until
//! its own clock shows `dead_after` after the receipt. A node's lease may
//! extend to `T + L`, where `T` is the largest of its own timestamps vouched
//! for by a quorum of voters (itself included, vouching for "now"), and
//! `L = lease_ns(dead_after)`.
//!
//! # Proof sketch (S2, S3)
//! Slots of a member `X` move without `X`'s cooperation only through a
//! committed epoch with `Fence{X}`, accepted by a quorum `Qf`. If `X` itself
//! is in `Qf` it revoked its own lease (`Lease(0)`, and no extension until it
//! installs that epoch) before its vote left, so only `C ≠ X` matter below.
//! Each acceptor `C` in `Qf`, on seeing the proposal, stops vouching for `X`
//! at any epoch before the fencing one (its *floor*) and accepts only when its
//! clock shows `dead_after` since it received the `sent_at` it last vouched
//! for. `X`'s lease `T + L` needs a quorum vouching for `≥ T`; it intersects
//! `Qf` in some `C`; if `C = X` we are done, else `C`'s vouched timestamp `t ≥ T` was sent by `X` at
//! real time `r(t)` and received no earlier. So `C` accepted at real time
//! `≥ r(t) + dead_after/(1+ε)`, while `X`'s lease ends, by `X`'s own clock,
//! at real time `≤ r(T) + L/(1−ε) ≤ r(t) + L/(1−ε)`. With
//! `L < dead_after·(1−ε)/(1+ε)` the lease has expired before the epoch can be
//! committed, hence before any survivor installs it. A node without quorum
//! gets no fresh vouching and its lease runs out within `L` (S2). A restarted
//! node does not accept fencing before `dead_after` after its start, so the
//! promises of its previous incarnation are kept too (same monotonic clock).

/// Assumed bound on clock-rate error of any node, in parts per million.
pub const MAX_CLOCK_SKEW_PPM: u64 = 10_000;

/// Extra safety margin on the lease, in parts per million of `dead_after`
/// (covers the scheduling delay of writing the lease word).
pub const LEASE_MARGIN_PPM: u64 = 20_000;

/// Lease length `L` for a given `dead_after`:
/// `dead_after·(1−ε)/(1+ε)` minus the margin.
pub fn lease_ns(dead_after_ns: u64) -> u64 {
    let e = MAX_CLOCK_SKEW_PPM as u128;
    let m = 1_000_000u128;
    let bound = dead_after_ns as u128 * (m - e) / (m + e);
    let margin = dead_after_ns as u128 * LEASE_MARGIN_PPM as u128 / m;
    (bound - margin.min(bound)) as u64
}

/// Votes needed: more than half of all configured voters.
pub fn needed(voters: usize) -> usize {
    voters / 2 + 1
}

/// The latest `T` vouched for by at least `needed` voters, given each
/// voter's vouched timestamp (0 = none). `None` if no quorum vouches.
pub fn quorum_time(mut vouched: Vec<u64>, needed: usize) -> Option<u64> {
    if needed == 0 || vouched.len() < needed {
        return None;
    }
    vouched.sort_unstable_by(|a, b| b.cmp(a));
    let t = vouched[needed - 1];
    (t > 0).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_a_strict_majority_of_all_voters() {
        assert_eq!(needed(1), 1);
        assert_eq!(needed(2), 2);
        assert_eq!(needed(3), 2);
        assert_eq!(needed(4), 3);
        assert_eq!(needed(64), 33);
    }

    #[test]
    fn quorum_time_is_the_needed_th_largest_vouch() {
        assert_eq!(quorum_time(vec![10, 30, 20], 2), Some(20));
        assert_eq!(quorum_time(vec![10, 0, 0], 2), None);
        assert_eq!(quorum_time(vec![5, 0, 9, 7, 0], 3), Some(5));
    }

    #[test]
    fn lease_expires_before_a_fence_even_with_worst_case_skew() {
        for dead in [30_000_000u64, 250_000_000, 10_000_000_000] {
            let l = lease_ns(dead) as f64;
            let e = MAX_CLOCK_SKEW_PPM as f64 / 1e6;
            // Slowest-looking lease on a slow clock vs fastest fence on a fast one.
            assert!(l / (1.0 - e) < dead as f64 / (1.0 + e));
        }
        assert_eq!(lease_ns(250_000_000), 240_049_504);
    }
}
