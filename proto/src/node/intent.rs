//! What this node is asked to do by its operator and its health checks,
//! kept apart from what the cluster decided: the node asks to be drained
//! while any reason holds, and the coordinator turns the resulting [`Wish`]
//! into operations.

use crate::wire::Wish;

/// Local intentions, as set by the operator API and health checks.
#[derive(Default)]
pub(crate) struct Intent {
    /// `xnlb drain` until `xnlb resume`.
    pub(crate) operator_drain: bool,
    /// `failback = "manual"`: fenced once, drained until `xnlb resume`.
    pub(crate) failback_hold: bool,
    /// A health check is failing.
    pub(crate) health_drain: bool,
    /// `xnlb stop`: hand everything off and leave.
    pub(crate) leaving: bool,
    /// Operator `rebalance` requests so far (the cluster applies each once).
    pub(crate) rebalance_requests: u32,
    /// Left the cluster: the data plane owns nothing any more.
    pub(crate) stopped: bool,
    /// [`crate::Action::Stopped`] was emitted: nothing more will happen.
    pub(crate) stop_emitted: bool,
    /// `drain --timeout` (or 0 for `stop`) instead of `drain_timeout`.
    pub(crate) drain_timeout_override: Option<u64>,
}

impl Intent {
    /// What this node asks of the cluster, from its reasons.
    pub(crate) fn wish(&self) -> Wish {
        if self.leaving {
            Wish::Leave
        } else if self.operator_drain || self.health_drain || self.failback_hold {
            Wish::Drained
        } else {
            Wish::Active
        }
    }

    /// Why this node is drained by its own choice, for status.
    pub(crate) fn drained(&self) -> bool {
        self.operator_drain || self.health_drain || self.failback_hold
    }

    pub(crate) fn drain_reasons(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if self.operator_drain {
            r.push("operator drain");
        }
        if self.health_drain {
            r.push("health check failing");
        }
        if self.failback_hold {
            r.push("manual failback: waiting for resume");
        }
        r
    }
}
