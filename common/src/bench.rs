//! What `cargo xtask bench peers` shares with its reference XDP program,
//! `xnlb-minimal` (`ebpf/src/bin/xnlb-minimal.rs`): the least a bucket
//! filter can do, to measure xnlb's per-packet cost against.

use crate::layout::MAX_BUCKETS;

/// Name of the minimal filter program in its own object.
pub const PROG_MINIMAL: &str = "xnlb_minimal";
/// Name of its only map: one [`MinimalTable`].
pub const MAP_MINIMAL: &str = "XNLB_MINIMAL";

/// Everything the minimal filter reads: one array value, found with one
/// lookup, of which a packet touches the header and one state byte.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MinimalTable {
    /// Hash seed, as [`crate::Table::seed`].
    pub seed: u64,
    /// The one IPv4 VIP, as [`crate::addr_words`] word 0.
    pub vip: u32,
    /// Buckets in use (1..=[`MAX_BUCKETS`]).
    pub buckets: u32,
    /// The interface's MAC in the low 6 bytes (wire order), written over
    /// an accepted frame's destination as xnlb does for a cluster MAC: the
    /// stack then handles the packet as its own (`PACKET_HOST`) in both.
    pub if_mac: u64,
    /// [`crate::slot_state`] per bucket.
    pub state: [u8; MAX_BUCKETS as usize],
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers only, no padding (8 + 4 + 4 + 8 + bytes).
unsafe impl aya::Pod for MinimalTable {}
