//! Is this node still serving what it says it serves?
//!
//! The protocol core knows the bucket map it agreed to, not whether the
//! host still carries it out: an XDP link dropped with its pin, a bpffs
//! unmount, or a VIP flushed from `lo` leave the node's share of flows
//! unanswered while `xnlb status` says active and converged, and no other
//! node takes those buckets over because this one still heartbeats. The
//! runtime therefore runs [`check`] every [`PERIOD`] on the protocol thread:
//! what can be mended is mended (and logged at warn), and what cannot makes
//! the node stop serving cleanly, so its buckets fail over as for a crash.

use std::time::Duration;

use crate::dataplane::{AttachmentCheck, Dataplane};
use crate::host::Host;

/// How often the check runs: a couple of heartbeat intervals at the
/// default 50 ms, far inside `dead_after`, and cheap (a few syscalls, no
/// process spawned unless something is being repaired).
pub const PERIOD: Duration = Duration::from_millis(100);

/// What one check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// What was wrong and has been put right (one warning each).
    pub repaired: Vec<String>,
    /// Why the node can no longer serve, if it cannot.
    pub lost: Option<String>,
}

/// Checks the data plane's attachment (if any) and the VIPs on `lo`.
pub fn check(dp: Option<&mut Dataplane>, host: &mut Host) -> Report {
    let mut report = Report::default();
    if let Some(dp) = dp {
        match dp.verify_attachment() {
            Ok(AttachmentCheck::Intact | AttachmentCheck::NotAttached) => {}
            Ok(AttachmentCheck::Repaired(what)) => report.repaired.push(what),
            Err(e) => report.lost = Some(e.to_string()),
        }
    }
    match host.restore_missing_vips() {
        Ok(vips) => report.repaired.extend(
            vips.into_iter()
                .map(|v| format!("VIP {v} was missing from lo; added it again")),
        ),
        Err(e) => {
            report
                .lost
                .get_or_insert_with(|| format!("checking the VIPs on lo: {e}"));
        }
    }
    report
}
