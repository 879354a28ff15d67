//! The two clocks the program reads, and why each.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns};
use aya_ebpf::{macros::map, maps::PerCpuArray};
use xnlb_common::ctrl;
use xnlb_common::lease_clock::{self, Reading};
pub use xnlb_common::Standing;

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

/// This CPU's last precise clock reading ([`lease_clock`]).
#[map]
static XNLB_CLOCK: PerCpuArray<Reading> = PerCpuArray::with_max_entries(1, 0);

/// This node's [`Standing`]: from this CPU's last precise clock reading
/// while that certainly still holds ([`lease_clock`]: jiffies unchanged,
/// more than [`lease_clock::TRUST_NS`] of lease left, fewer than
/// [`lease_clock::MAX_USES`] packets on it), else from a new precise read
/// (see [`lease_valid`] for why this clock).
#[inline(always)]
pub fn standing() -> Standing {
    if cfg!(feature = "bisect-no-lease-clock") {
        return Standing::Serving;
    }
    let Some(lease) = XNLB_CTRL.get(ctrl::LEASE) else {
        return Standing::Fenced;
    };
    let lease = *lease;
    let Some(last) = XNLB_CLOCK.get_ptr_mut(0) else {
        return standing_at(precise(), lease);
    };
    // SAFETY: this CPU's slot of a per-CPU map, valid for this run. XDP
    // runs with bottom halves off (NAPI softirq, threaded NAPI, cpumap),
    // so no other run of the filter on this CPU interleaves with this one.
    // (`BPF_PROG_TEST_RUN` only disables migration: two test runs on one
    // CPU could tear the reading; the agent never test-runs the live
    // program, and every test fixture has maps of its own.)
    let last = unsafe { &mut *last };
    // Jiffies first, then the precise clock: the reading's time is then
    // no older than its jiffies value. The other order would let a CPU
    // held up between the two reads (a preempted vCPU) pair an old time
    // with new jiffies and trust it for a whole tick.
    // SAFETY: a helper call with no arguments (a load of jiffies_64 once
    // the verifier has inlined it).
    let jiffies = unsafe { bpf_jiffies64() };
    if !cfg!(feature = "bisect-lease-clock-every-packet")
        && lease_clock::lease_certainly_valid(last, jiffies, lease)
    {
        last.uses += 1;
        return Standing::Serving;
    }
    let boot = precise();
    *last = Reading {
        jiffies,
        boot,
        uses: 0,
    };
    standing_at(boot, lease)
}

/// CLOCK_BOOTTIME, read precisely.
#[inline(always)]
fn precise() -> u64 {
    // SAFETY: a helper call with no arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// The [`Standing`] at boot time `now` with the lease ending at `lease`.
#[inline(always)]
fn standing_at(now: u64, lease: u64) -> Standing {
    // Only a node past its lease reads the held-delivery word.
    xnlb_common::standing(now, lease, || {
        XNLB_CTRL.get(ctrl::HOLD).map_or(0, |hold| *hold)
    })
}

/// True while the agent's lease is valid (S3). The deadline is on
/// CLOCK_BOOTTIME, read precisely: it keeps counting through suspend, so a
/// node that wakes up after its peers took its buckets over is fenced at
/// once, and no tick of lag has to be allowed for. Only a packet this node
/// would otherwise accept asks (see [`crate::vip::VipPacket`]), and it pays
/// for a precise read about once a tick per CPU ([`standing`]).
#[inline(always)]
pub fn lease_valid() -> bool {
    standing() == Standing::Serving
}
