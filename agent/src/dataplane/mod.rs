//! The XDP data plane from userspace: load or adopt the pinned program and
//! maps, install tables atomically, extend the lease, read counters.

mod attach;
mod bpffs;
mod error;
mod link;
mod object;
mod table;

pub use attach::AttachmentCheck;
pub use error::DataplaneError;
pub use object::embedded_object;
pub use table::Dataplane;

/// Now on the clock the XDP program's `bpf_ktime_get_ns` reads
/// (CLOCK_MONOTONIC), in nanoseconds: leases are deadlines on this clock.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Resolution of CLOCK_MONOTONIC_COARSE (one scheduler tick, e.g. 4 ms at
/// HZ=250): how far behind the precise clock the XDP program's clock can be.
pub fn coarse_tick_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        // The coarsest tick Linux supports (HZ=100).
        return 10_000_000;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
