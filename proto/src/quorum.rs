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
//! for the latest `sent_at` it received from a peer by echoing it back
//! together with its *promise horizon* `h` (its own `dead_after` at the time
//! of receipt), and from then on promises not to accept an epoch that fences
//! that peer until its own clock shows `h` after the receipt. Each voucher
//! `C` thus bounds the peer's lease by `t_C + L(h_C)`, where
//! `L(h) = lease_ns(h)`; the node itself contributes `now + L(own)` (it
//! revokes its own lease before it can vote for its own fence). The lease is
//! the largest end that a quorum of voters supports: the `needed`-th largest
//! of these per-voter ends ([`lease_end`]).
//!
//! The horizon travels with the echo so that no node ever sizes its lease
//! from its *own* timers: a node whose `dead_after` was raised (a reload, a
//! restart with another config) cannot stretch promises its peers made
//! under smaller timers.
//!
//! # Proof sketch (S2, S3)
//! Slots of a member `X` move without `X`'s cooperation only through a
//! committed epoch with `Fence{X}`, accepted by a quorum `Qf`. If `X` itself
//! is in `Qf` it revoked its own lease (`Lease(0)`, and no extension until it
//! installs that epoch) before its vote left, so only `C ≠ X` matter below.
//! Each acceptor `C` in `Qf`, on seeing the proposal, stops vouching for `X`
//! at any epoch before the fencing one (its *floor*) and accepts only when its
//! clock shows `h_C` since it received the `sent_at` it last vouched for.
//! `X`'s lease end `E` needs a quorum whose per-voter ends are all `≥ E`; it
//! intersects `Qf` in some `C`; if `C = X` we are done, else `C`'s vouched
//! timestamp `t` with `t + L(h_C) ≥ E` was sent by `X` at real time `r(t)`
//! and received no earlier. So `C` accepted at real time
//! `≥ r(t) + h_C/(1+ε)`, while `X`'s lease ends, by `X`'s own clock, at real
//! time `≤ r(t) + L(h_C)/(1−ε)`. With `L(h) < h·(1−ε)/(1+ε)` the lease has
//! expired before the epoch can be committed, hence before any survivor
//! installs it. A node without quorum gets no fresh vouching and its lease
//! runs out within `L` (S2).
//!
//! # Restarts
//! A restarted node does not accept fencing before `H` after its start,
//! where `H` is the largest horizon it ever advertised: the node persists
//! `H` and advertises a horizon only once it is durable, so the promises of
//! every previous incarnation are kept however its timers changed. Clocks
//! are the boot-time clock (`CLOCK_BOOTTIME`), which keeps counting through
//! suspend, so a suspended node's lease and promises run out in real time.

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

/// Longest a node keeps delivering, past its lease, the connections its own
/// kernel already holds (and how long, at least, the cluster keeps a fenced
/// member as a previous owner of its slots).
pub const HOLD_CAP_NS: u64 = 30_000_000_000;

/// How long after its lease ends a node may still deliver packets of
/// connections its kernel holds ("held delivery", S6), on its own clock.
///
/// Every other node drops those packets only while the node is listed as a
/// previous owner of the slot, so the slot's owner looks its own sockets up
/// instead of passing everything (`ACQUIRING`). A fenced member is listed
/// until its handoff is ended by a coordinator at least
/// [`orphan_timeout_ns`] after it installed the fence, and the fence is
/// committed only after the member's lease ended (the bound above). Hence
/// `hold` must be below `orphan_timeout` in real time on any pair of
/// clocks: with both derived from [`HOLD_CAP_NS`] and 1/16 taken off, that
/// holds for any two nodes' `drain_timeout`, which need not agree (the cap
/// is the same everywhere: [`crate::config::Config::hold_cap_ns`]).
pub fn hold_ns(drain_timeout_ns: u64, cap_ns: u64) -> u64 {
    drain_timeout_ns.min(cap_ns) / 16 * 15
}

/// How long a coordinator keeps a fenced member as a previous owner before
/// it ends the member's handoff (the member's host is then presumed gone):
/// never shorter than any member's [`hold_ns`].
pub fn orphan_timeout_ns(drain_timeout_ns: u64, cap_ns: u64) -> u64 {
    drain_timeout_ns.max(cap_ns)
}

/// Votes needed: more than half of all configured voters.
pub fn needed(voters: usize) -> usize {
    voters / 2 + 1
}

/// The end one voucher supports: its echo of our timestamp `echo` (0 =
/// none) plus the lease its promise horizon allows.
pub fn voucher_end(echo: u64, horizon_ns: u64) -> u64 {
    if echo == 0 || horizon_ns == 0 {
        0
    } else {
        echo.saturating_add(lease_ns(horizon_ns))
    }
}

/// The latest lease end supported by at least `needed` voters, given each
/// voter's supported end (0 = none). `None` if no quorum supports one.
pub fn lease_end(mut ends: Vec<u64>, needed: usize) -> Option<u64> {
    if needed == 0 || ends.len() < needed {
        return None;
    }
    ends.sort_unstable_by(|a, b| b.cmp(a));
    let t = ends[needed - 1];
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
    fn lease_end_is_the_needed_th_largest_supported_end() {
        assert_eq!(lease_end(vec![10, 30, 20], 2), Some(20));
        assert_eq!(lease_end(vec![10, 0, 0], 2), None);
        assert_eq!(lease_end(vec![5, 0, 9, 7, 0], 3), Some(5));
    }

    #[test]
    fn a_voucher_with_a_shorter_horizon_supports_a_shorter_lease() {
        let ms = 1_000_000;
        assert_eq!(voucher_end(0, 250 * ms), 0, "no echo, no support");
        assert_eq!(voucher_end(7, 0), 0, "no horizon, no support");
        assert!(voucher_end(1000, 250 * ms) < voucher_end(1000, 1000 * ms));
        // A node whose own dead_after is 1 s but whose peers promised only
        // 250 ms gets a lease sized by the peers.
        let own = 5000 + lease_ns(1000 * ms);
        let peer = voucher_end(5000, 250 * ms);
        assert_eq!(lease_end(vec![own, peer, 0], 2), Some(peer));
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

    #[test]
    fn held_delivery_ends_before_any_coordinator_forgets_the_holder() {
        let e = MAX_CLOCK_SKEW_PPM as f64 / 1e6;
        let s = 1_000_000_000u64;
        for mine in [0, s, 2 * s, 29 * s, 30 * s, 300 * s, 86_400 * s] {
            for theirs in [0, s, 30 * s, 300 * s] {
                // Slowest-looking hold on a slow clock vs the earliest a
                // coordinator on a fast clock ends the handoff.
                let hold_real = hold_ns(mine, HOLD_CAP_NS) as f64 / (1.0 - e);
                let forget_real = orphan_timeout_ns(theirs, HOLD_CAP_NS) as f64 / (1.0 + e);
                assert!(hold_real < forget_real, "{mine} vs {theirs}");
            }
        }
        assert_eq!(
            hold_ns(0, HOLD_CAP_NS),
            0,
            "drain_timeout 0: no held delivery"
        );
    }
}
