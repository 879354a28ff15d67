//! The status model behind `xnlb status --json` (DESIGN 4).
//!
//! Plain data with a hand-written JSON rendering, so the core needs no serde;
//! the agent may wrap these types in its own serializable ones.

use crate::config::Role;
use crate::node::MemberState;
use crate::time::{Time, MS};

/// Node state (DESIGN 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Not (yet) admitted to the cluster.
    Joining,
    /// Serving its share.
    Active,
    /// Handing off after `drain` or `stop`.
    Draining,
    /// Owns nothing by request.
    Drained,
    /// Left after `stop`.
    Stopped,
    /// Declared failed by the cluster, or its lease ran out.
    Fenced,
    /// Cannot reach a quorum of voters.
    NoQuorum,
}

impl NodeState {
    /// Name in status JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Drained => "drained",
            NodeState::Stopped => "stopped",
            NodeState::Fenced => "fenced",
            NodeState::NoQuorum => "no-quorum",
        }
    }
}

/// Quorum figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumStatus {
    /// Whether this node sees a quorum.
    pub has: bool,
    /// Voters reachable, self included.
    pub votes: usize,
    /// Votes needed.
    pub needed: usize,
    /// Configured voters.
    pub voters: usize,
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// Member id.
    pub id: u8,
    /// Role.
    pub role: Role,
    /// State.
    pub state: MemberState,
    /// Weight in use.
    pub weight: u32,
    /// Buckets owned in our installed epoch.
    pub buckets: usize,
    /// Nanoseconds since last heard (`None` = never; 0 for self).
    pub last_heard_ns: Option<u64>,
    /// Nanoseconds since last heard on each of our links, by local link
    /// index (`None` = never; empty for self): `xnlb doctor` names a link
    /// a member is silent on while another still carries it.
    pub last_heard_link_ns: Vec<Option<u64>>,
    /// Incarnation last heard.
    pub incarnation: u64,
    /// Epoch the member last reported.
    pub epoch: u64,
}

/// Everything `xnlb status` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Our id.
    pub node_id: u8,
    /// Cluster name.
    pub cluster: String,
    /// Our role.
    pub role: Role,
    /// Our state.
    pub state: NodeState,
    /// Quorum.
    pub quorum: QuorumStatus,
    /// Installed epoch.
    pub epoch: u64,
    /// Every participating member confirmed our epoch and no handoff is open.
    pub converged: bool,
    /// Configured buckets.
    pub buckets_total: usize,
    /// Buckets we own.
    pub buckets_owned: usize,
    /// Inclusive `[first, last]` ranges of owned buckets.
    pub owned_ranges: Vec<(usize, usize)>,
    /// Last lease deadline written.
    pub lease_until: Time,
    /// All members, self included.
    pub members: Vec<MemberStatus>,
    /// Dropped datagrams by reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// Bytes sent since start.
    pub sent_bytes: u64,
    /// Datagrams sent since start.
    pub sent_datagrams: u64,
    /// What keeps this node fenced and silent besides quorum and lease
    /// (a failed state write or data-plane install), if anything.
    pub blocked: Option<&'static str>,
    /// Why this node asks to be drained (operator, health check, manual
    /// failback hold); empty when it wants to serve.
    pub drain_reasons: Vec<&'static str>,
}

/// Inclusive ranges of `true` runs.
pub fn ranges(owned: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &o) in owned.iter().enumerate() {
        match (o, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i - 1));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, owned.len() - 1));
    }
    out
}

impl Status {
    /// The DESIGN 4 JSON shape (the data-plane `counters` are the agent's to
    /// add; ours are under `protocol_drops`).
    pub fn to_json(&self) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let ranges: Vec<String> = self
            .owned_ranges
            .iter()
            .map(|(a, b)| format!("[{a}, {b}]"))
            .collect();
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                format!(
                    "{{\"id\": {}, \"role\": \"{}\", \"state\": \"{}\", \"weight\": {}, \"buckets\": {}, \"last_heard_ms\": {}, \"epoch\": {}}}",
                    m.id,
                    m.role.as_str(),
                    m.state.as_str(),
                    m.weight,
                    m.buckets,
                    m.last_heard_ns.map_or("null".to_string(), |n| (n / MS).to_string()),
                    m.epoch
                )
            })
            .collect();
        let drops: Vec<String> = self
            .dropped
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        format!(
            "{{\"node_id\": {}, \"cluster\": \"{}\", \"role\": \"{}\", \"state\": \"{}\", \"quorum\": {{\"has\": {}, \"votes\": {}, \"needed\": {}, \"voters\": {}}}, \"epoch\": {}, \"converged\": {}, \"buckets\": {{\"total\": {}, \"owned\": {}, \"owned_ranges\": [{}]}}, \"members\": [{}], \"protocol_drops\": {{{}}}}}",
            self.node_id,
            esc(&self.cluster),
            self.role.as_str(),
            self.state.as_str(),
            self.quorum.has,
            self.quorum.votes,
            self.quorum.needed,
            self.quorum.voters,
            self.epoch,
            self.converged,
            self.buckets_total,
            self.buckets_owned,
            ranges.join(", "),
            members.join(", "),
            drops.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_runs() {
        assert_eq!(ranges(&[true, true, false, true]), vec![(0, 1), (3, 3)]);
        assert_eq!(ranges(&[false, false]), vec![]);
    }
}
