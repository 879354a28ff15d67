//! What `xnlb status` shows: the JSON model (DESIGN 4, extended) and the
//! human table, in the spirit of `crm_mon` and `nlb query`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use xnlb_common::{counter, Counters};

/// Quorum summary.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuorumView {
    /// Whether this node is in a quorum.
    pub has: bool,
    /// Voters this node hears (itself included).
    pub votes: usize,
    /// Votes a quorum needs.
    pub needed: usize,
    /// Configured voters.
    pub voters: usize,
}

/// Bucket ownership summary.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BucketsView {
    /// Configured buckets.
    pub total: usize,
    /// Owned by this node.
    pub owned: usize,
    /// Inclusive `[first, last]` ranges owned.
    pub owned_ranges: Vec<[usize; 2]>,
}

/// One member as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberView {
    /// Member id.
    pub id: u8,
    /// Role.
    pub role: String,
    /// `alive | suspect | dead | left | draining | drained`.
    pub state: String,
    /// Weight.
    pub weight: u32,
    /// Buckets it owns.
    pub buckets: usize,
    /// Milliseconds since it was last heard (absent: never, or self).
    pub last_heard_ms: Option<u64>,
}

/// Failover history and the availability estimate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AvailabilityView {
    /// Member failures observed since the agent started.
    pub failovers: u64,
    /// Time to repair of the last failover: silence of the failed member
    /// to the epoch without it installed here (ms).
    pub last_mttr_ms: Option<f64>,
    /// Mean time to repair (ms).
    pub mttr_ms: Option<f64>,
    /// Mean time between failures (s): agent uptime / failovers.
    pub mtbf_s: Option<f64>,
    /// A = MTBF / (MTBF + MTTR); 1.0 with no failure seen.
    pub availability: f64,
    /// Agent uptime (s).
    pub uptime_s: f64,
    /// Repair times of the last failovers (ms, at most 100).
    #[serde(default)]
    pub repairs_ms: Vec<f64>,
    /// Every repair since the agent started, as a histogram (what the
    /// metrics export: cumulative, never reset while the agent runs).
    #[serde(default)]
    pub repair_histogram: RepairHistogram,
}

/// Upper bounds (ms) of the failover-repair histogram's buckets: around
/// the default 250 ms `dead_after` (a repair is that plus one epoch) and up
/// to the slow repairs worth an alert.
pub const REPAIR_BUCKETS_MS: [f64; 11] = [
    25.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 750.0, 1000.0, 2000.0, 5000.0,
];

/// Failover repair times since the agent started, bucketed by
/// [`REPAIR_BUCKETS_MS`]: a Prometheus histogram's state, kept by the
/// agent so that counts only grow (a scrape never rebuilds it from a
/// window of samples, which would make `rate()` and `histogram_quantile`
/// meaningless).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RepairHistogram {
    /// Repairs per bucket (not cumulative): `counts[i]` fell in
    /// `(REPAIR_BUCKETS_MS[i-1], REPAIR_BUCKETS_MS[i]]`; the last entry
    /// counts those above the last bound. Empty before the first repair.
    pub counts: Vec<u64>,
    /// Sum of all repair times (ms).
    pub sum_ms: f64,
}

impl RepairHistogram {
    /// Records one repair of `ms`.
    pub fn observe(&mut self, ms: f64) {
        self.counts.resize(REPAIR_BUCKETS_MS.len() + 1, 0);
        let i = REPAIR_BUCKETS_MS
            .iter()
            .position(|&le| ms <= le)
            .unwrap_or(REPAIR_BUCKETS_MS.len());
        self.counts[i] += 1;
        self.sum_ms += ms;
    }

    /// Repairs recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// `xnlb status --json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    /// This node.
    pub node_id: u8,
    /// Cluster name.
    pub cluster: String,
    /// This node's role.
    pub role: String,
    /// `joining | active | draining | drained | stopped | fenced | no-quorum`.
    pub state: String,
    /// Quorum.
    pub quorum: QuorumView,
    /// Installed epoch.
    pub epoch: u64,
    /// All live members agree on the epoch and no handoff is open.
    pub converged: bool,
    /// Buckets.
    pub buckets: BucketsView,
    /// Other members.
    pub members: Vec<MemberView>,
    /// Data-plane counters (summed over CPUs).
    pub counters: BTreeMap<String, u64>,
    /// Cluster datagrams dropped, by reason.
    pub protocol_drops: BTreeMap<String, u64>,
    /// How XDP is attached (absent on a witness).
    pub xdp: Option<String>,
    /// Milliseconds of lease left (0: fenced).
    pub lease_ms: u64,
    /// Failovers and availability.
    pub availability: AvailabilityView,
    /// What keeps this node fenced besides quorum and lease (a state file
    /// that cannot be written, a data-plane install that failed).
    #[serde(default)]
    pub blocked: Option<String>,
    /// Why this node asks to be drained: operator drain, health check
    /// failing, manual failback waiting for resume.
    #[serde(default)]
    pub drain_reasons: Vec<String>,
}

/// Data-plane counters by name; zeros when there is no data plane.
pub fn counters_map(c: Option<&Counters>) -> BTreeMap<String, u64> {
    counter::NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), c.map(|c| c.c[i]).unwrap_or(0)))
        .collect()
}

impl StatusView {
    /// Builds the view from the protocol core's status.
    pub fn from_core(
        s: &xnlb_proto::Status,
        now: xnlb_proto::Time,
        counters: Option<&Counters>,
        xdp: Option<String>,
        availability: AvailabilityView,
    ) -> StatusView {
        StatusView {
            node_id: s.node_id,
            cluster: s.cluster.clone(),
            role: s.role.as_str().into(),
            state: s.state.as_str().into(),
            quorum: QuorumView {
                has: s.quorum.has,
                votes: s.quorum.votes,
                needed: s.quorum.needed,
                voters: s.quorum.voters,
            },
            epoch: s.epoch,
            // A serving node whose data-plane lease is not (yet) valid drops
            // every VIP packet: it is not converged from a client's view.
            converged: s.converged
                && (s.role == xnlb_proto::Role::Witness || s.lease_until.0 > now.0),
            buckets: BucketsView {
                total: s.buckets_total,
                owned: s.buckets_owned,
                owned_ranges: s.owned_ranges.iter().map(|&(a, b)| [a, b]).collect(),
            },
            members: s
                .members
                .iter()
                .filter(|m| m.id != s.node_id)
                .map(|m| MemberView {
                    id: m.id,
                    role: m.role.as_str().into(),
                    state: m.state.as_str().into(),
                    weight: m.weight,
                    buckets: m.buckets,
                    last_heard_ms: m.last_heard_ns.map(|ns| ns / 1_000_000),
                })
                .collect(),
            counters: counters_map(counters),
            protocol_drops: s.dropped.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            xdp,
            lease_ms: s.lease_until.0.saturating_sub(now.0) / 1_000_000,
            availability,
            blocked: s.blocked.map(str::to_string),
            drain_reasons: s.drain_reasons.iter().map(|r| r.to_string()).collect(),
        }
    }

    /// The human table.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let q = &self.quorum;
        let _ = writeln!(
            o,
            "Cluster {}: node {} ({}), state {}, epoch {}{}",
            self.cluster,
            self.node_id,
            self.role,
            self.state,
            self.epoch,
            if self.converged {
                ", converged"
            } else {
                ", converging"
            }
        );
        let _ = writeln!(
            o,
            "Quorum: {} ({} of {} voters heard, {} needed); lease {} ms; XDP {}",
            if q.has { "yes" } else { "NO" },
            q.votes,
            q.voters,
            q.needed,
            self.lease_ms,
            self.xdp.as_deref().unwrap_or("none (witness)")
        );
        if let Some(b) = &self.blocked {
            let _ = writeln!(o, "FENCED: {b}; silent until it recovers (see the log)");
        }
        if !self.drain_reasons.is_empty() {
            let _ = writeln!(o, "Drained by: {}", self.drain_reasons.join(", "));
        }
        let ranges: Vec<String> = self
            .buckets
            .owned_ranges
            .iter()
            .take(6)
            .map(|[a, b]| {
                if a == b {
                    format!("{a}")
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        let more = if self.buckets.owned_ranges.len() > 6 {
            ", ..."
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "Buckets: {} of {} owned [{}{}]",
            self.buckets.owned,
            self.buckets.total,
            ranges.join(", "),
            more
        );
        let a = &self.availability;
        let _ = writeln!(
            o,
            "Availability: {:.6} over {:.0} s, {} failovers{}",
            a.availability,
            a.uptime_s,
            a.failovers,
            a.last_mttr_ms
                .map(|m| format!(", last MTTR {m:.0} ms"))
                .unwrap_or_default()
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  {:>4}  {:<8} {:<9} {:>6} {:>8} {:>10}",
            "ID", "ROLE", "STATE", "WEIGHT", "BUCKETS", "HEARD"
        );
        let _ = writeln!(
            o,
            "  {:>4}  {:<8} {:<9} {:>6} {:>8} {:>10}",
            format!("*{}", self.node_id),
            self.role,
            self.state,
            "-",
            self.buckets.owned,
            "self"
        );
        for m in &self.members {
            let heard = m
                .last_heard_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_else(|| "never".into());
            let _ = writeln!(
                o,
                "  {:>4}  {:<8} {:<9} {:>6} {:>8} {:>10}",
                m.id, m.role, m.state, m.weight, m.buckets, heard
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "Packets:");
        for (k, v) in &self.counters {
            if *v > 0
                || [
                    "vip_packets",
                    "passed",
                    "dropped_not_owner",
                    "dropped_fenced",
                    "dropped_malformed",
                ]
                .contains(&k.as_str())
            {
                let _ = writeln!(o, "  {k:<20} {v}");
            }
        }
        let drops: Vec<String> = self
            .protocol_drops
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !drops.is_empty() {
            let _ = writeln!(o, "Cluster datagrams dropped: {}", drops.join(", "));
        }
        o
    }
}
