//! Per-CPU counters, and the one log line a dropped packet may leave: why it
//! was dropped, at most once per second per CPU.

use core::cell::Cell;

use xnlb_common::{counter, Counters};

use crate::clock::now;
use crate::{XDP_DROP, XNLB_LOGRL, XNLB_STATS};

/// Per-CPU counters of this packet's CPU (null if the map is missing), and
/// why the packet was dropped, for the one rate-limited log line.
#[derive(Clone, Copy)]
pub struct Stats<'a> {
    counters: *mut Counters,
    why: &'a Cell<u8>,
}

impl<'a> Stats<'a> {
    /// This CPU's counters; a drop reason is recorded in `why`.
    #[inline(always)]
    pub fn new(why: &'a Cell<u8>) -> Stats<'a> {
        Stats {
            counters: XNLB_STATS.get_ptr_mut(0).unwrap_or(core::ptr::null_mut()),
            why,
        }
    }

    #[inline(always)]
    pub fn bump(self, i: usize) {
        if cfg!(feature = "bisect-no-counters") {
            return;
        }
        if !self.counters.is_null() && i < counter::COUNT {
            // SAFETY: per-CPU value of this CPU; XDP runs with preemption off.
            unsafe { (*self.counters).c[i] += 1 };
        }
    }

    /// Counts a malformed drop and remembers why.
    #[inline(always)]
    pub fn malformed(self, why: u8) -> u32 {
        self.bump(counter::DROPPED_MALFORMED);
        self.why.set(why);
        XDP_DROP
    }

    /// Counts a fenced drop (lease expired).
    #[inline(always)]
    pub fn fenced(self) -> u32 {
        self.bump(counter::DROPPED_FENCED);
        self.why.set(why::FENCED);
        XDP_DROP
    }
}

/// Why a packet was dropped, for the log (0: nothing to log).
pub mod why {
    pub const TRUNCATED_L2: u8 = 1;
    pub const UNPARSABLE_L2: u8 = 2;
    pub const TRUNCATED_L3: u8 = 3;
    pub const BAD_VERSION: u8 = 4;
    pub const BAD_LENGTH: u8 = 5;
    pub const BAD_FRAGMENT: u8 = 6;
    pub const EXT_CHAIN: u8 = 7;
    pub const TRUNCATED_L4: u8 = 8;
    pub const FENCED: u8 = 9;

    /// The log text of a reason.
    #[inline(always)]
    pub fn text(why: u8) -> &'static str {
        match why {
            TRUNCATED_L2 => "frame shorter than an Ethernet header",
            UNPARSABLE_L2 => {
                "frame to a cluster MAC with an unknown ethertype or VLAN stack deeper than 2"
            }
            TRUNCATED_L3 => "IP header truncated",
            BAD_VERSION => "IP version does not match the ethertype",
            BAD_LENGTH => "IP header or datagram length inconsistent with the frame",
            BAD_FRAGMENT => "fragment offset past 64 KiB",
            EXT_CHAIN => "IPv6 extension headers too many or too long",
            TRUNCATED_L4 => "transport header (or quoted ICMP flow) truncated",
            _ => "lease expired: dropping VIP traffic until the agent renews it (fenced)",
        }
    }
}

/// Shortest interval between two log lines of one CPU.
const LOG_INTERVAL_NS: u64 = 1_000_000_000;

/// The text to log for a packet dropped because of `why` (0: it was not
/// dropped with a reason), unless this CPU logged less than
/// [`LOG_INTERVAL_NS`] ago. The caller logs it: `aya_log_ebpf::warn!` in
/// the generic entry point is instantiated once per program and inlined,
/// where one shared copy here would become a BPF-to-BPF call.
#[inline(always)]
pub fn due(why: u8) -> Option<&'static str> {
    if why != 0 && may_log() {
        Some(why::text(why))
    } else {
        None
    }
}

/// One log line per CPU per second at most: a flood of bad packets must not
/// become a flood of log records.
#[inline(always)]
fn may_log() -> bool {
    let Some(last) = XNLB_LOGRL.get_ptr_mut(0) else {
        return false;
    };
    let t = now();
    // SAFETY: this CPU's value; preemption is off in XDP.
    unsafe {
        if t.wrapping_sub(*last) < LOG_INTERVAL_NS {
            return false;
        }
        *last = t;
    }
    true
}
