//! When the XDP program may trust the lease without reading the precise
//! clock (docs/SAFETY.md, S3, "Reading the clock once a tick").
//!
//! A precise CLOCK_BOOTTIME read costs ~60 ns per accepted packet in a VM
//! (a serialized TSC read, `bench dataplane`), more than the rest of the
//! owned path. So the program keeps, per CPU, its last precise reading and
//! the jiffies counter (one load, inlined by the verifier) read just before
//! it, and accepts on that reading alone while:
//! - jiffies have not moved. The timekeeping CPU advances them every tick
//!   (1-10 ms); when it goes idle another CPU's tick takes the duty over,
//!   and since Linux 5.18 (stable 5.10.193, 5.15.y) a CPU whose own ticks
//!   see jiffies stand still for five ticks advances them itself (best
//!   effort: about six tick periods, 60 ms at HZ 100). So in any normal
//!   run less than [`TRUST_NS`] has passed since the reading;
//! - the reading had more than [`TRUST_NS`] of lease left, so the lease is
//!   still valid now;
//! - it has admitted fewer than [`MAX_USES`] packets.
//!
//! The last two bound the harm whatever the clocks do: a reading can be
//! trusted past the lease's end only if it was taken more than
//! [`TRUST_NS`] before that end, every reading taken later is refused, and
//! each admits at most [`MAX_USES`] packets. So even with jiffies stuck
//! (a stalled timekeeping vCPU, a pause no tick has followed yet: a VM
//! resumed by its hypervisor, a host back from suspend) a CPU accepts at
//! most [`MAX_USES`] packets after its lease ended, the same order as the
//! packets already in flight between the program and the stack at such a
//! pause (up to a NAPI budget of 64 per CPU), which no clock check can take
//! back.
//!
//! Otherwise (a tick passed, the lease is close to its end or revoked, or
//! the reading is used up) the program reads the precise clock, as before:
//! the node still stops accepting at the lease's end, not later.

/// How long jiffies may stand still while this CPU handles packets, with a
/// wide margin (see the module documentation: about six tick periods, 60 ms
/// at HZ 100, when the timekeeping CPU stalls).
pub const TRUST_NS: u64 = 100_000_000;

/// Packets one precise reading may admit (see the module documentation).
pub const MAX_USES: u64 = 64;

/// This CPU's last precise reading of CLOCK_BOOTTIME and what has been
/// made of it. All zeros before the first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The jiffies counter, read first.
    pub jiffies: u64,
    /// CLOCK_BOOTTIME, read precisely right after.
    pub boot: u64,
    /// Packets accepted on this reading without a new one.
    pub uses: u64,
}

/// Whether a lease ending at `lease` (boot ns) is certainly still valid,
/// given jiffies now and this CPU's last [`Reading`], without a new precise
/// read. The caller counts the use.
#[inline(always)]
pub fn lease_certainly_valid(last: &Reading, jiffies_now: u64, lease: u64) -> bool {
    last.boot != 0
        && last.jiffies == jiffies_now
        && last.uses < MAX_USES
        && last.boot.saturating_add(TRUST_NS) < lease
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn reading() -> Reading {
        Reading {
            jiffies: 4_294_900_000,
            boot: 41 * MS,
            uses: 0,
        }
    }

    #[test]
    fn a_reading_in_the_same_tick_with_a_long_lease_left_is_trusted() {
        let last = reading();
        assert!(lease_certainly_valid(
            &last,
            last.jiffies,
            41 * MS + TRUST_NS + 1
        ));
    }

    #[test]
    fn a_tick_later_the_clock_is_read_again() {
        let last = reading();
        assert!(!lease_certainly_valid(&last, last.jiffies + 1, 500 * MS));
    }

    #[test]
    fn a_lease_near_its_end_is_read_precisely() {
        let last = reading();
        assert!(!lease_certainly_valid(
            &last,
            last.jiffies,
            41 * MS + TRUST_NS
        ));
        assert!(!lease_certainly_valid(&last, last.jiffies, 42 * MS));
    }

    #[test]
    fn a_revoked_lease_is_never_trusted() {
        let last = reading();
        assert!(!lease_certainly_valid(&last, last.jiffies, 0));
    }

    #[test]
    fn a_used_up_reading_is_not_trusted() {
        let mut last = reading();
        last.uses = MAX_USES - 1;
        assert!(lease_certainly_valid(&last, last.jiffies, 500 * MS));
        last.uses = MAX_USES;
        assert!(!lease_certainly_valid(&last, last.jiffies, 500 * MS));
    }

    #[test]
    fn no_reading_yet_is_never_trusted() {
        assert!(!lease_certainly_valid(&Reading::default(), 0, u64::MAX));
    }
}
