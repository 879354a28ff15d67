//! The two clocks the program reads, and why each.

use aya_ebpf::helpers::{bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns};
pub use xnlb_common::Standing;
use xnlb_common::ctrl;

use crate::XNLB_CTRL;

/// Now, on CLOCK_MONOTONIC_COARSE: the timekeeper's last tick, read without
/// touching the clock source (a few nanoseconds where a precise read costs
/// tens in a VM). For bookkeeping only (log rate, tracking, fragment age):
/// it stops during suspend and lags by a tick, so the lease never uses it.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper call with no arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// This node's [`Standing`], from one precise clock read (see
/// [`lease_valid`] for why this clock).
#[inline(always)]
pub fn standing() -> Standing {
    if cfg!(feature = "bisect-no-lease-clock") {
        return Standing::Serving;
    }
    let Some(lease) = XNLB_CTRL.get(ctrl::LEASE) else {
        return Standing::Fenced;
    };
    // SAFETY: a helper call with no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // Only a node past its lease reads the held-delivery word.
    xnlb_common::standing(now, *lease, || {
        XNLB_CTRL.get(ctrl::HOLD).map_or(0, |hold| *hold)
    })
}

/// True while the agent's lease is valid (S3). The deadline is on
/// CLOCK_BOOTTIME, read precisely: it keeps counting through suspend, so a
/// node that wakes up after its peers took its buckets over is fenced at
/// once, and no tick of lag has to be allowed for. Only a packet this node
/// would otherwise accept pays for the read (see [`crate::vip::VipPacket`]).
#[inline(always)]
pub fn lease_valid() -> bool {
    standing() == Standing::Serving
}
