//! The configuration file (DESIGN section 4): strict TOML schema and
//! validation. Every error names the key and the line, and nothing on the
//! host is touched until the whole file is valid.
//!
//! Shape: [`raw`] is the file as written (serde structs, every default
//! written once); one parser per section turns it into the validated
//! model below: [`node`] (`[node]`), [`cluster`] (`[cluster]` and its
//! members), [`vip`] (VIPs, rules, health checks) and [`control`]
//! (`[control]`), in that order, each failing on its first bad key through
//! the helpers of [`context`]. [`Config::parse`] only strings them
//! together. Roles and failback are the protocol core's own types
//! ([`xnlb_proto::Role`], [`xnlb_proto::Failback`]): the agent hands them
//! over unchanged.

pub mod check;
mod cluster;
mod context;
mod control;
pub mod effective;
mod node;
mod raw;
mod vip;
mod words;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use vip::default_priority;
pub use xnlb_proto::{Failback, Role};

/// A configuration error, with the key and line it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or schema error (toml names the key, line and column).
    #[error("{path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        /// File path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Dotted key, e.g. `vip[0].rule[1].ports`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The role names of `node.role` and `cluster.member.role`.
const ROLES: [(&str, Role); 3] = [
    ("active", Role::Active),
    ("standby", Role::Standby),
    ("witness", Role::Witness),
];

/// The name the file uses for `role` (`"standby"`, not `Standby`).
pub fn role_name(role: Role) -> &'static str {
    ROLES
        .iter()
        .find(|(_, r)| *r == role)
        .map_or("unknown", |(name, _)| name)
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Native where the driver supports it properly, else generic.
    Auto,
    /// In the driver.
    Native,
    /// In the stack (skb mode).
    Generic,
}

/// A VIP's cluster MAC (DESIGN 1): what the switch sees and how the NIC is
/// told to accept it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacMode {
    /// A multicast MAC the NIC joins: switches flood it, the host stays
    /// out of promiscuous mode.
    Multicast,
    /// A unicast MAC no port owns (switches flood unknown unicast): for
    /// networks that filter multicast; the NIC runs promiscuous.
    Unicast,
}

/// How a VIP's packets reach the nodes (README, "Routed mode").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VipMode {
    /// Every node receives every packet through the cluster MAC (as
    /// Windows NLB): one L2 segment.
    Flood,
    /// The routers spread packets over the nodes by ECMP; each healthy
    /// member announces the VIP through BIRD (see [`crate::announce`]).
    /// No cluster MAC is joined.
    Routed,
}

/// A member as every node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// 1..=255.
    pub id: u8,
    /// Heartbeat addresses (links, paired by index).
    pub addrs: Vec<SocketAddr>,
    /// Role.
    pub role: Role,
    /// Relative load share.
    pub weight: u32,
}

/// Port-rule protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
    /// Both.
    Both,
}

/// Rule and default modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Load-balanced over buckets.
    Multiple,
    /// One node, by priority.
    Single,
    /// Dropped everywhere.
    Disabled,
}

/// Hash affinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Affinity {
    /// Per connection.
    None,
    /// Per client address.
    Single,
    /// Per client network.
    Network,
}

/// A port rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRule {
    /// Protocol.
    pub protocol: Protocol,
    /// First port.
    pub port_lo: u16,
    /// Last port.
    pub port_hi: u16,
    /// Mode.
    pub mode: Mode,
    /// Affinity.
    pub affinity: Affinity,
    /// For `single`: preferred node order.
    pub priority: Vec<u8>,
}

/// What a health check runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthProbe {
    /// A TCP connect to a local service.
    Tcp(SocketAddr),
    /// A command (run with `sh -c`); exit status 0 is healthy.
    Command(String),
}

/// A VIP's health check: the node drains while it fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// The probe.
    pub probe: HealthProbe,
    /// Time between probes.
    pub interval_ms: u64,
    /// Time a probe may take.
    pub timeout_ms: u64,
    /// Consecutive failures that drain the node.
    pub fall: u32,
    /// Consecutive successes that resume it.
    pub rise: u32,
}

/// A VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    /// The address.
    pub address: IpAddr,
    /// Flooded to every node, or routed to one by the routers' ECMP.
    pub mode: VipMode,
    /// Its cluster MAC's kind (flood mode).
    pub mac_mode: MacMode,
    /// Mode for traffic no rule matches.
    pub default: Mode,
    /// Priority of the default when `single`.
    pub default_priority: Vec<u8>,
    /// Port rules, first match wins.
    pub rules: Vec<PortRule>,
    /// Optional health check.
    pub health: Option<Health>,
}

/// A validated configuration: what the rest of the agent reads, never the
/// file itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// This node's id.
    pub node_id: u8,
    /// Interface for VIP traffic (absent on a witness).
    pub interface: Option<String>,
    /// This node's role.
    pub role: Role,
    /// This node's weight.
    pub weight: u32,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// What this node does when it returns after being fenced.
    pub failback: Failback,
    /// Where durable protocol state lives.
    pub state_dir: PathBuf,
    /// Where the XDP program's link and maps are pinned (bpffs).
    pub pin_dir: PathBuf,
    /// SCHED_FIFO priority of the heartbeat thread (0: normal scheduling).
    pub heartbeat_priority: u8,
    /// Cluster name (also the hash seed).
    pub cluster_name: String,
    /// Cluster key file.
    pub key_file: PathBuf,
    /// Our heartbeat addresses.
    pub listen: Vec<SocketAddr>,
    /// Bucket count.
    pub buckets: u32,
    /// Heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a member is dead.
    pub dead_after_ms: u64,
    /// Longest wait for connections on a graceful handoff.
    pub drain_timeout_s: u64,
    /// All members, self included, by id.
    pub members: Vec<Member>,
    /// VIPs.
    pub vips: Vec<Vip>,
    /// Control socket path.
    pub socket: PathBuf,
    /// Prometheus listen address (None: disabled).
    pub metrics: Option<SocketAddr>,
}

/// Upper bounds of the configured durations. Every duration is turned into
/// nanoseconds (`u64`) and added to monotonic timestamps by the agent and
/// the protocol core; bounding them at parse time keeps all of that
/// arithmetic far from overflow, and no sane cluster needs more.
pub const MAX_HEARTBEAT_INTERVAL_MS: u64 = 10_000;
/// See [`MAX_HEARTBEAT_INTERVAL_MS`]: 60 s.
pub const MAX_DEAD_AFTER_MS: u64 = 60_000;
/// See [`MAX_HEARTBEAT_INTERVAL_MS`]: one day (also bounds `xnlb drain --timeout`).
pub const MAX_DRAIN_TIMEOUT_S: u64 = 86_400;
/// See [`MAX_HEARTBEAT_INTERVAL_MS`]: health-check interval and timeout, 1 h.
pub const MAX_HEALTH_MS: u64 = 3_600_000;

/// Default control socket (also where the CLI looks without `--socket`).
pub const DEFAULT_SOCKET: &str = "/run/xnlb/xnlb.sock";

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &src)
    }

    /// Validates `src` as the contents of `path`, section by section; the
    /// first bad key ends it.
    pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawFile = toml::from_str(src).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: words::plain(e.to_string().trim_end()),
        })?;
        let cx = context::Ctx { path, src };
        let node = node::parse(&cx, &raw.node)?;
        let cluster = cluster::parse(&cx, &raw.cluster, &raw.node, &node)?;
        let vips = vip::parse(&cx, &raw.vip, &cluster.members)?;
        let control = control::parse(&cx, &raw.control)?;
        let (state_dir, pin_dir) = node::dirs(&cx, &raw.node, node.id)?;
        Ok(Config {
            path: path.to_owned(),
            node_id: node.id,
            interface: node.interface,
            role: node.role,
            weight: node.weight,
            xdp_mode: node.xdp_mode,
            failback: node.failback,
            state_dir,
            pin_dir,
            heartbeat_priority: node.heartbeat_priority,
            cluster_name: cluster.name,
            key_file: PathBuf::from(raw.cluster.key_file.get_ref()),
            listen: cluster.listen,
            buckets: cluster.buckets,
            heartbeat_interval_ms: cluster.timers.heartbeat_interval_ms,
            dead_after_ms: cluster.timers.dead_after_ms,
            drain_timeout_s: cluster.timers.drain_timeout_s,
            members: cluster.members,
            vips,
            socket: control.socket,
            metrics: control.metrics,
        })
    }
}

#[cfg(test)]
mod tests;
