//! Time as the core sees it: nanoseconds on the caller's steady clock.
//!
//! The core never reads a clock. The shell passes `now` into every call, taken
//! from `CLOCK_BOOTTIME`: the same clock the XDP program reads with
//! `bpf_ktime_get_boot_ns`, so a lease deadline computed here can be written
//! to the data plane's lease word unchanged. Unlike `CLOCK_MONOTONIC` it
//! keeps counting through suspend, so leases and promises run out in real
//! elapsed time. (A hypervisor that freezes and restores a guest's clocks
//! across a pause hides the pause from every guest clock: see the README.)

use core::fmt;
use core::ops::{Add, Sub};

/// A point on this node's steady clock (`CLOCK_BOOTTIME`), in nanoseconds.
///
/// Times from different nodes are never compared: a timestamp that travels
/// over the wire only ever comes back to the node that made it (see
/// [`crate::quorum`]), so clock offsets between nodes do not matter and only
/// the clock *rate* error is bounded ([`crate::quorum::MAX_CLOCK_SKEW_PPM`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// Time zero; as a lease it means "fenced now".
    pub const ZERO: Time = Time(0);

    /// Nanoseconds elapsed since `earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<u64> for Time {
    type Output = Time;
    fn add(self, ns: u64) -> Time {
        Time(self.0.saturating_add(ns))
    }
}

impl Sub<u64> for Time {
    type Output = Time;
    fn sub(self, ns: u64) -> Time {
        Time(self.0.saturating_sub(ns))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}ms", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// Nanoseconds in a millisecond, for messages and defaults.
pub const MS: u64 = 1_000_000;
