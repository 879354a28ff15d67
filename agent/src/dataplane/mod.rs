//! The XDP data plane from userspace: load or adopt the pinned program and
//! maps, install tables atomically, extend the lease, read counters.

mod attach;
mod bpffs;
mod error;
mod link;
mod object;
mod table;

pub use attach::AttachmentCheck;
pub use bpffs::is_bpffs;
pub use error::DataplaneError;
pub use link::ifindex;
pub use object::embedded_object;
pub use table::Dataplane;

/// Now on the clock the XDP program's lease check reads
/// (`bpf_ktime_get_boot_ns`, CLOCK_BOOTTIME), in nanoseconds. The protocol
/// core runs on it too, so leases and promises are deadlines in real
/// elapsed time: unlike CLOCK_MONOTONIC it keeps counting while the host is
/// suspended, so a node that wakes up finds its lease expired rather than
/// serving on one its peers no longer honour.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_BOOTTIME exists since 2.6.39.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
