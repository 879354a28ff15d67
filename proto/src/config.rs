//! The cluster configuration the core runs with, and its validation.
//!
//! The agent parses TOML (DESIGN 4) into this plain struct; the core checks the
//! invariants it relies on (ids unique, self present, timers consistent with
//! the lease bound) and refuses to start otherwise.

use crate::time::MS;
use thiserror::Error;
use xnlb_common::{MAX_BUCKETS, MAX_SINGLE_SLOTS};

/// What a member does in the cluster (DESIGN 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, bincode::Encode, bincode::Decode)]
pub enum Role {
    /// Serves traffic: owns its weight-proportional share of the buckets.
    Active,
    /// Hot standby: owns buckets only in place of failed actives.
    Standby,
    /// Votes for quorum, owns nothing (needs no XDP).
    Witness,
}

impl Role {
    /// The name used in status output and config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Witness => "witness",
        }
    }
}

/// What this node does when it comes back after having been declared failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failback {
    /// Rejoin and take a share of the buckets at once.
    Auto,
    /// Rejoin drained; take buckets only after an operator `resume`.
    Manual,
}

/// One configured member, as every node must know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberConfig {
    /// Member id, 1..=255, unique.
    pub id: u8,
    /// Its role; every node must agree (it decides quorum and ownership).
    pub role: Role,
    /// Relative load share, 1..=10000. A member announces its own weight in
    /// its heartbeats and the cluster adopts it through an epoch, so this is
    /// authoritative only for `self_id`.
    pub weight: u32,
    /// Number of heartbeat addresses (links) of this member.
    pub addrs: usize,
}

/// Everything the core needs to run one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's member id.
    pub self_id: u8,
    /// Cluster name (also seeds the flow hash elsewhere).
    pub cluster_name: String,
    /// All configured members, including this node.
    pub members: Vec<MemberConfig>,
    /// Number of buckets (1..=MAX_BUCKETS).
    pub buckets: u32,
    /// One priority list of member ids per single slot; slot `i` is
    /// data-plane index `MAX_BUCKETS + i`.
    pub single_slots: Vec<Vec<u8>>,
    /// How often each member heartbeats each other member on each link.
    pub heartbeat_interval_ns: u64,
    /// Silence on all links after which a member is declared dead.
    pub dead_after_ns: u64,
    /// Longest a handoff keeps tracked connections on the old owner.
    pub drain_timeout_ns: u64,
    /// Cap on held delivery past a lease, and floor on how long a fenced
    /// member stays a previous owner ([`crate::quorum::hold_ns`]). Not an
    /// operator setting: it must be the same on every node, so the agent
    /// always uses [`crate::quorum::HOLD_CAP_NS`]; the simulator shortens
    /// it to fit its runs.
    pub hold_cap_ns: u64,
    /// What this node does when it returns after a failure.
    pub failback: Failback,
    /// HMAC-SHA256 key shared by the cluster.
    pub key: Vec<u8>,
    /// Digest of the config parts every member must agree on (computed by
    /// the agent); carried in every datagram, mismatches are refused.
    pub fingerprint: [u8; 32],
}

impl Config {
    /// A configuration with DESIGN 4 defaults, for tests and the simulator.
    pub fn with_defaults(self_id: u8, members: Vec<MemberConfig>) -> Config {
        Config {
            self_id,
            cluster_name: "web".into(),
            members,
            buckets: 4096,
            single_slots: Vec::new(),
            heartbeat_interval_ns: 50 * MS,
            dead_after_ns: 250 * MS,
            drain_timeout_ns: 300_000 * MS,
            hold_cap_ns: crate::quorum::HOLD_CAP_NS,

            failback: Failback::Auto,
            key: b"xnlb test key, not for production".to_vec(),
            fingerprint: [0; 32],
        }
    }

    /// Number of slots the core assigns: buckets, then single slots.
    pub fn slots(&self) -> usize {
        self.buckets as usize + self.single_slots.len()
    }

    /// Index of member `id` in `members`.
    pub fn index_of(&self, id: u8) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// Checks everything the protocol relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.members.is_empty() {
            return Err(ConfigError::NoMembers);
        }
        for (i, m) in self.members.iter().enumerate() {
            if m.id == 0 {
                return Err(ConfigError::BadMemberId(0));
            }
            if self.members[..i].iter().any(|o| o.id == m.id) {
                return Err(ConfigError::DuplicateMember(m.id));
            }
            if !(1..=10_000).contains(&m.weight) {
                return Err(ConfigError::BadWeight {
                    id: m.id,
                    weight: m.weight,
                });
            }
            if m.addrs == 0 {
                return Err(ConfigError::NoAddrs(m.id));
            }
        }
        if self.index_of(self.self_id).is_none() {
            return Err(ConfigError::SelfNotMember(self.self_id));
        }
        if self.buckets == 0 || self.buckets > MAX_BUCKETS {
            return Err(ConfigError::BadBuckets(self.buckets));
        }
        if self.single_slots.len() > MAX_SINGLE_SLOTS as usize {
            return Err(ConfigError::TooManySingleSlots(self.single_slots.len()));
        }
        for (slot, list) in self.single_slots.iter().enumerate() {
            for id in list {
                match self.index_of(*id) {
                    None => return Err(ConfigError::UnknownPriorityMember { slot, id: *id }),
                    Some(i) if self.members[i].role == Role::Witness => {
                        return Err(ConfigError::WitnessInPriority { slot, id: *id })
                    }
                    Some(_) => {}
                }
            }
        }
        if self.heartbeat_interval_ns < MS {
            return Err(ConfigError::BadTimers(
                "heartbeat_interval below 1 ms".into(),
            ));
        }
        if self.dead_after_ns < 3 * self.heartbeat_interval_ns {
            return Err(ConfigError::BadTimers(
                "dead_after must be at least 3 heartbeat intervals".into(),
            ));
        }
        if self.key.len() < 16 {
            return Err(ConfigError::ShortKey(self.key.len()));
        }
        Ok(())
    }
}

/// Why a configuration was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `members` is empty.
    #[error("no members configured")]
    NoMembers,
    /// A member id of 0 (ids are 1..=255).
    #[error("member id {0} is out of range 1..=255")]
    BadMemberId(u8),
    /// Two members share an id.
    #[error("member id {0} is configured twice")]
    DuplicateMember(u8),
    /// Weight outside 1..=10000.
    #[error("member {id}: weight {weight} is out of range 1..=10000")]
    BadWeight {
        /// Member id.
        id: u8,
        /// The weight given.
        weight: u32,
    },
    /// A member without heartbeat addresses.
    #[error("member {0} has no addresses")]
    NoAddrs(u8),
    /// `self_id` is not among `members`.
    #[error("node id {0} is not a configured member")]
    SelfNotMember(u8),
    /// `buckets` outside 1..=MAX_BUCKETS.
    #[error("buckets = {0} is out of range 1..=16384")]
    BadBuckets(u32),
    /// More single slots than the data plane has.
    #[error("{0} single slots exceed the data plane's 256")]
    TooManySingleSlots(usize),
    /// A priority list names an unknown member.
    #[error("single slot {slot}: priority names unknown member {id}")]
    UnknownPriorityMember {
        /// Single slot index.
        slot: usize,
        /// The unknown id.
        id: u8,
    },
    /// A priority list names a witness (witnesses serve nothing).
    #[error("single slot {slot}: member {id} is a witness and cannot own traffic")]
    WitnessInPriority {
        /// Single slot index.
        slot: usize,
        /// The witness id.
        id: u8,
    },
    /// Timers inconsistent with the failure detector or lease.
    #[error("timers: {0}")]
    BadTimers(String),
    /// Key too short to be a real secret.
    #[error("cluster key is {0} bytes; at least 16 required")]
    ShortKey(usize),
    /// `reconfigure` tried to change what must stay fixed while running.
    #[error("reconfigure cannot change {0} while running; restart the cluster")]
    Incompatible(String),
    /// Persisted state could not be decoded.
    #[error("persisted state is unreadable: {0}")]
    BadPersistedState(String),
}
