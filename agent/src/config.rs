//! The configuration file (DESIGN section 4): strict TOML schema and
//! validation. Every error names the key and the line, and nothing on the
//! host is touched until the whole file is valid.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

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

fn default_role() -> Spanned<String> {
    Spanned::new(0..0, "active".into())
}
fn default_weight() -> Spanned<u32> {
    Spanned::new(0..0, 100)
}
fn default_auto() -> Spanned<String> {
    Spanned::new(0..0, "auto".into())
}
fn default_buckets() -> Spanned<u32> {
    Spanned::new(0..0, 4096)
}
fn default_hb() -> Spanned<u64> {
    Spanned::new(0..0, 50)
}
fn default_dead() -> Spanned<u64> {
    Spanned::new(0..0, 250)
}
fn default_drain() -> Spanned<u64> {
    Spanned::new(0..0, 300)
}
fn default_multicast() -> Spanned<String> {
    Spanned::new(0..0, "multicast".into())
}
fn default_single() -> Spanned<String> {
    Spanned::new(0..0, "single".into())
}
fn default_none() -> Spanned<String> {
    Spanned::new(0..0, "none".into())
}
fn default_multiple() -> Spanned<String> {
    Spanned::new(0..0, "multiple".into())
}

/// The file as written (raw, spanned): see [`Config`] for the validated form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    node: RawNode,
    cluster: RawCluster,
    #[serde(default)]
    vip: Vec<RawVip>,
    #[serde(default)]
    control: RawControl,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: Spanned<i64>,
    #[serde(default)]
    interface: Option<Spanned<String>>,
    #[serde(default = "default_role")]
    role: Spanned<String>,
    #[serde(default = "default_weight")]
    weight: Spanned<u32>,
    #[serde(default = "default_auto")]
    xdp_mode: Spanned<String>,
    #[serde(default = "default_auto")]
    failback: Spanned<String>,
    #[serde(default)]
    state_dir: Option<Spanned<String>>,
    #[serde(default)]
    pin_dir: Option<Spanned<String>>,
    #[serde(default)]
    heartbeat_priority: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Spanned<String>,
    key_file: Spanned<String>,
    listen: Spanned<Vec<String>>,
    #[serde(default = "default_buckets")]
    buckets: Spanned<u32>,
    #[serde(default = "default_hb")]
    heartbeat_interval_ms: Spanned<u64>,
    #[serde(default = "default_dead")]
    dead_after_ms: Spanned<u64>,
    #[serde(default = "default_drain")]
    drain_timeout_s: Spanned<u64>,
    #[serde(default)]
    member: Vec<RawMember>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    id: Spanned<i64>,
    addrs: Spanned<Vec<String>>,
    #[serde(default = "default_role")]
    role: Spanned<String>,
    #[serde(default)]
    weight: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    address: Spanned<String>,
    #[serde(default = "default_multicast")]
    mac_mode: Spanned<String>,
    #[serde(default = "default_single")]
    default: Spanned<String>,
    #[serde(default)]
    priority: Option<Spanned<Vec<i64>>>,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    health: Option<RawHealth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default)]
    tcp: Option<Spanned<String>>,
    #[serde(default)]
    command: Option<Spanned<String>>,
    #[serde(default)]
    interval_ms: Option<Spanned<u64>>,
    #[serde(default)]
    timeout_ms: Option<Spanned<u64>>,
    #[serde(default)]
    fall: Option<Spanned<u32>>,
    #[serde(default)]
    rise: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    protocol: Spanned<String>,
    ports: Spanned<String>,
    #[serde(default = "default_multiple")]
    mode: Spanned<String>,
    #[serde(default = "default_none")]
    affinity: Spanned<String>,
    #[serde(default)]
    priority: Option<Spanned<Vec<i64>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    #[serde(default)]
    socket: Option<Spanned<String>>,
    #[serde(default)]
    metrics: Option<Spanned<String>>,
}

/// A member's role (DESIGN 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves traffic.
    Active,
    /// Serves only in place of failed actives.
    Standby,
    /// Votes, serves nothing.
    Witness,
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
    /// `true` for unicast cluster MAC mode.
    pub unicast_mac: bool,
    /// Mode for traffic no rule matches.
    pub default: Mode,
    /// Priority of the default when `single`.
    pub default_priority: Vec<u8>,
    /// Port rules, first match wins.
    pub rules: Vec<PortRule>,
    /// Optional health check.
    pub health: Option<Health>,
}

/// A validated configuration.
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
    /// `true` for manual failback.
    pub failback_manual: bool,
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

/// Default control socket.
pub const DEFAULT_SOCKET: &str = "/run/xnlb/xnlb.sock";

struct Ctx<'a> {
    path: &'a Path,
    src: &'a str,
}

impl Ctx<'_> {
    fn health(
        &self,
        h: &RawHealth,
        key: &str,
        at: std::ops::Range<usize>,
    ) -> Result<Health, ConfigError> {
        let probe = match (&h.tcp, &h.command) {
            (Some(t), None) => HealthProbe::Tcp(t.get_ref().parse().or_else(|_| {
                self.err(
                    t.span(),
                    format!("{key}.tcp"),
                    format!("{:?} is not an IP:port address", t.get_ref()),
                )
            })?),
            (None, Some(c)) if !c.get_ref().trim().is_empty() => {
                HealthProbe::Command(c.get_ref().clone())
            }
            (None, Some(c)) => return self.err(c.span(), format!("{key}.command"), "is empty"),
            _ => return self.err(at, key.to_string(), "needs exactly one of tcp or command"),
        };
        let num = |v: &Option<Spanned<u64>>,
                   name: &str,
                   default: u64,
                   max: u64|
         -> Result<u64, ConfigError> {
            match v {
                None => Ok(default),
                Some(x) if (1..=max).contains(x.get_ref()) => Ok(*x.get_ref()),
                Some(x) => self.err(
                    x.span(),
                    format!("{key}.{name}"),
                    format!("{} is not in 1..={max}", x.get_ref()),
                ),
            }
        };
        let count =
            |v: &Option<Spanned<u32>>, name: &str, default: u32| -> Result<u32, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(x) if (1..=100).contains(x.get_ref()) => Ok(*x.get_ref()),
                    Some(x) => self.err(
                        x.span(),
                        format!("{key}.{name}"),
                        format!("{} is not in 1..=100", x.get_ref()),
                    ),
                }
            };
        let interval_ms = num(&h.interval_ms, "interval_ms", 1000, MAX_HEALTH_MS)?;
        let timeout_ms = num(&h.timeout_ms, "timeout_ms", 500, MAX_HEALTH_MS)?;
        if timeout_ms > interval_ms {
            let span = h.timeout_ms.as_ref().map(|t| t.span()).unwrap_or(at);
            return self.err(
                span,
                format!("{key}.timeout_ms"),
                format!("{timeout_ms} is longer than interval_ms {interval_ms}"),
            );
        }
        Ok(Health {
            probe,
            interval_ms,
            timeout_ms,
            fall: count(&h.fall, "fall", 3)?,
            rise: count(&h.rise, "rise", 2)?,
        })
    }

    fn line(&self, offset: usize) -> usize {
        self.src[..offset.min(self.src.len())].matches('\n').count() + 1
    }

    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            path: self.path.to_owned(),
            line: self.line(span.start),
            key: key.into(),
            message: message.into(),
        })
    }

    fn choice<T: Copy>(
        &self,
        v: &Spanned<String>,
        key: &str,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        match options.iter().find(|(name, _)| *name == v.get_ref()) {
            Some((_, t)) => Ok(*t),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.err(
                    v.span(),
                    key,
                    format!("{:?} is not one of {}", v.get_ref(), names.join(", ")),
                )
            }
        }
    }

    fn member_id(
        &self,
        v: i64,
        span: std::ops::Range<usize>,
        key: &str,
    ) -> Result<u8, ConfigError> {
        if (1..=255).contains(&v) {
            Ok(v as u8)
        } else {
            self.err(span, key, format!("{v} is not a member id in 1..=255"))
        }
    }

    fn addrs(&self, v: &Spanned<Vec<String>>, key: &str) -> Result<Vec<SocketAddr>, ConfigError> {
        if v.get_ref().is_empty() {
            return self.err(v.span(), key, "needs at least one address");
        }
        v.get_ref()
            .iter()
            .map(|a| {
                a.parse::<SocketAddr>().or_else(|_| {
                    self.err(v.span(), key, format!("{a:?} is not an IP:port address"))
                })
            })
            .collect()
    }

    fn priority(
        &self,
        v: &Option<Spanned<Vec<i64>>>,
        key: &str,
        members: &[Member],
    ) -> Result<Vec<u8>, ConfigError> {
        let Some(v) = v else {
            return Ok(default_priority(members));
        };
        let mut out = Vec::new();
        for id in v.get_ref() {
            let id = self.member_id(*id, v.span(), key)?;
            match members.iter().find(|m| m.id == id) {
                None => {
                    return self.err(
                        v.span(),
                        key,
                        format!("member {id} is not in [[cluster.member]]"),
                    )
                }
                Some(m) if m.role == Role::Witness => {
                    return self.err(
                        v.span(),
                        key,
                        format!("member {id} is a witness and serves nothing"),
                    )
                }
                Some(_) => {}
            }
            if out.contains(&id) {
                return self.err(v.span(), key, format!("member {id} is listed twice"));
            }
            out.push(id);
        }
        if out.is_empty() {
            return self.err(v.span(), key, "needs at least one member");
        }
        Ok(out)
    }
}

/// Actives by ascending id, then standbys: the order DESIGN gives for
/// `single` mode when no priority is configured.
pub fn default_priority(members: &[Member]) -> Vec<u8> {
    let mut ids: Vec<(bool, u8)> = members
        .iter()
        .filter(|m| m.role != Role::Witness)
        .map(|m| (m.role == Role::Standby, m.id))
        .collect();
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

fn parse_ports(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let p = s.trim().parse().ok()?;
            (p, p)
        }
    };
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &src)
    }

    /// Validates `src` as the contents of `path`.
    pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(src).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let cx = Ctx { path, src };
        let roles = [
            ("active", Role::Active),
            ("standby", Role::Standby),
            ("witness", Role::Witness),
        ];

        let n = &raw.node;
        let node_id = cx.member_id(*n.id.get_ref(), n.id.span(), "node.id")?;
        let role = cx.choice(&n.role, "node.role", &roles)?;
        let weight = *n.weight.get_ref();
        if !(1..=10_000).contains(&weight) {
            return cx.err(
                n.weight.span(),
                "node.weight",
                format!("{weight} is not in 1..=10000"),
            );
        }
        let xdp_mode = cx.choice(
            &n.xdp_mode,
            "node.xdp_mode",
            &[
                ("auto", XdpMode::Auto),
                ("native", XdpMode::Native),
                ("generic", XdpMode::Generic),
            ],
        )?;
        let failback_manual = cx.choice(
            &n.failback,
            "node.failback",
            &[("auto", false), ("manual", true)],
        )?;
        let interface =
            match &n.interface {
                Some(i) if i.get_ref().is_empty() || i.get_ref().len() > 15 => {
                    return cx.err(i.span(), "node.interface", "is not an interface name")
                }
                Some(i) => Some(i.get_ref().clone()),
                None if role != Role::Witness => return cx.err(
                    n.id.span(),
                    "node.interface",
                    "missing: an active or standby node needs the interface VIP traffic arrives on",
                ),
                None => None,
            };
        let heartbeat_priority = match &n.heartbeat_priority {
            Some(p) if !(0..=99).contains(p.get_ref()) => {
                return cx.err(
                    p.span(),
                    "node.heartbeat_priority",
                    "is not a SCHED_FIFO priority in 0..=99",
                )
            }
            Some(p) => *p.get_ref() as u8,
            None => 0,
        };

        let c = &raw.cluster;
        let name = c.name.get_ref();
        if name.is_empty() || name.len() > 64 {
            return cx.err(c.name.span(), "cluster.name", "must be 1 to 64 characters");
        }
        let listen = cx.addrs(&c.listen, "cluster.listen")?;
        let buckets = *c.buckets.get_ref();
        if !(1..=xnlb_common::MAX_BUCKETS).contains(&buckets) {
            return cx.err(
                c.buckets.span(),
                "cluster.buckets",
                format!("{buckets} is not in 1..={}", xnlb_common::MAX_BUCKETS),
            );
        }
        let hb = *c.heartbeat_interval_ms.get_ref();
        if !(1..=MAX_HEARTBEAT_INTERVAL_MS).contains(&hb) {
            return cx.err(
                c.heartbeat_interval_ms.span(),
                "cluster.heartbeat_interval_ms",
                format!("{hb} is not in 1..={MAX_HEARTBEAT_INTERVAL_MS} (at most 10 s)"),
            );
        }
        let drain_timeout_s = *c.drain_timeout_s.get_ref();
        if drain_timeout_s > MAX_DRAIN_TIMEOUT_S {
            return cx.err(
                c.drain_timeout_s.span(),
                "cluster.drain_timeout_s",
                format!("{drain_timeout_s} is more than {MAX_DRAIN_TIMEOUT_S} (one day)"),
            );
        }
        let dead = *c.dead_after_ms.get_ref();
        if dead > MAX_DEAD_AFTER_MS {
            return cx.err(
                c.dead_after_ms.span(),
                "cluster.dead_after_ms",
                format!("{dead} is more than {MAX_DEAD_AFTER_MS} (60 s): a member silent that long is dead"),
            );
        }
        if dead < 3 * hb {
            return cx.err(
                c.dead_after_ms.span(),
                "cluster.dead_after_ms",
                format!(
                    "{dead} ms is less than 3 heartbeat intervals ({} ms)",
                    3 * hb
                ),
            );
        }

        let mut members: Vec<Member> = Vec::new();
        for (i, m) in c.member.iter().enumerate() {
            let key = format!("cluster.member[{i}]");
            let id = cx.member_id(*m.id.get_ref(), m.id.span(), &format!("{key}.id"))?;
            if members.iter().any(|o| o.id == id) {
                return cx.err(
                    m.id.span(),
                    format!("{key}.id"),
                    format!("member {id} is listed twice"),
                );
            }
            let role = cx.choice(&m.role, &format!("{key}.role"), &roles)?;
            let weight = match &m.weight {
                Some(w) if !(1..=10_000).contains(w.get_ref()) => {
                    return cx.err(
                        w.span(),
                        format!("{key}.weight"),
                        format!("{} is not in 1..=10000", w.get_ref()),
                    )
                }
                Some(w) => *w.get_ref(),
                None => 100,
            };
            let addrs = cx.addrs(&m.addrs, &format!("{key}.addrs"))?;
            members.push(Member {
                id,
                addrs,
                role,
                weight,
            });
        }
        let Some(me) = members.iter_mut().find(|m| m.id == node_id) else {
            return cx.err(
                n.id.span(),
                "node.id",
                format!("node {node_id} is not in [[cluster.member]]"),
            );
        };
        if me.role != role {
            return cx.err(
                n.role.span(),
                "node.role",
                format!(
                    "{role:?} differs from this node's [[cluster.member]] role {:?}",
                    me.role
                ),
            );
        }
        if me.addrs.len() != listen.len()
            || me
                .addrs
                .iter()
                .zip(&listen)
                .any(|(a, b)| a.port() != b.port())
        {
            return cx.err(
                c.listen.span(),
                "cluster.listen",
                "must list this node's [[cluster.member]] addrs, link by link",
            );
        }
        me.weight = weight;
        let links = members[0].addrs.len();
        if let Some(m) = members.iter().find(|m| m.addrs.len() != links) {
            let span = c
                .member
                .iter()
                .find(|r| *r.id.get_ref() == m.id as i64)
                .map(|r| r.addrs.span())
                .unwrap_or(0..0);
            return cx.err(
                span,
                format!("cluster.member (id {}).addrs", m.id),
                format!(
                    "has {} links where member {} has {links}: links pair by index",
                    m.addrs.len(),
                    members[0].id
                ),
            );
        }
        members.sort_by_key(|m| m.id);

        let mut vips = Vec::new();
        let mut seen = BTreeSet::new();
        let mut single_slots = 0usize;
        for (i, v) in raw.vip.iter().enumerate() {
            let key = format!("vip[{i}]");
            let address: IpAddr = v.address.get_ref().parse().or_else(|_| {
                cx.err(
                    v.address.span(),
                    format!("{key}.address"),
                    format!("{:?} is not an IP address", v.address.get_ref()),
                )
            })?;
            if !seen.insert(address) {
                return cx.err(
                    v.address.span(),
                    format!("{key}.address"),
                    format!("{address} is listed twice"),
                );
            }
            let unicast_mac = cx.choice(
                &v.mac_mode,
                &format!("{key}.mac_mode"),
                &[("multicast", false), ("unicast", true)],
            )?;
            let modes = [
                ("multiple", Mode::Multiple),
                ("single", Mode::Single),
                ("disabled", Mode::Disabled),
            ];
            let default = cx.choice(&v.default, &format!("{key}.default"), &modes)?;
            let default_priority =
                cx.priority(&v.priority, &format!("{key}.priority"), &members)?;
            single_slots += (default == Mode::Single) as usize;
            let mut rules = Vec::new();
            if v.rule.len() > xnlb_common::MAX_RULES {
                return cx.err(
                    v.address.span(),
                    format!("{key}.rule"),
                    format!("{} rules; at most {}", v.rule.len(), xnlb_common::MAX_RULES),
                );
            }
            for (j, r) in v.rule.iter().enumerate() {
                let rk = format!("{key}.rule[{j}]");
                let protocol = cx.choice(
                    &r.protocol,
                    &format!("{rk}.protocol"),
                    &[
                        ("tcp", Protocol::Tcp),
                        ("udp", Protocol::Udp),
                        ("both", Protocol::Both),
                    ],
                )?;
                let Some((port_lo, port_hi)) = parse_ports(r.ports.get_ref()) else {
                    return cx.err(
                        r.ports.span(),
                        format!("{rk}.ports"),
                        format!(
                            "{:?} is not a port or range like \"80\" or \"8000-8100\"",
                            r.ports.get_ref()
                        ),
                    );
                };
                let mode = cx.choice(&r.mode, &format!("{rk}.mode"), &modes)?;
                let affinity = cx.choice(
                    &r.affinity,
                    &format!("{rk}.affinity"),
                    &[
                        ("none", Affinity::None),
                        ("single", Affinity::Single),
                        ("network", Affinity::Network),
                    ],
                )?;
                if r.priority.is_some() && mode != Mode::Single {
                    let span = r.priority.as_ref().map(|p| p.span()).unwrap_or(0..0);
                    return cx.err(
                        span,
                        format!("{rk}.priority"),
                        "only applies to mode = \"single\"",
                    );
                }
                let priority = cx.priority(&r.priority, &format!("{rk}.priority"), &members)?;
                single_slots += (mode == Mode::Single) as usize;
                rules.push(PortRule {
                    protocol,
                    port_lo,
                    port_hi,
                    mode,
                    affinity,
                    priority,
                });
            }
            let health = match &v.health {
                None => None,
                Some(h) => Some(cx.health(h, &format!("{key}.health"), v.address.span())?),
            };
            vips.push(Vip {
                address,
                unicast_mac,
                default,
                default_priority,
                rules,
                health,
            });
        }
        if vips.len() > xnlb_common::MAX_VIPS {
            return cx.err(
                raw.vip[xnlb_common::MAX_VIPS].address.span(),
                "vip",
                format!("at most {} VIPs", xnlb_common::MAX_VIPS),
            );
        }
        if single_slots > xnlb_common::MAX_SINGLE_SLOTS as usize {
            return cx.err(
                0..0,
                "vip",
                format!(
                    "{single_slots} single-mode rules and defaults; at most {}",
                    xnlb_common::MAX_SINGLE_SLOTS
                ),
            );
        }

        let socket = raw
            .control
            .socket
            .as_ref()
            .map(|s| PathBuf::from(s.get_ref()))
            .unwrap_or_else(|| DEFAULT_SOCKET.into());
        let metrics = match &raw.control.metrics {
            Some(m) if m.get_ref().is_empty() => None,
            Some(m) => Some(m.get_ref().parse().or_else(|_| {
                cx.err(
                    m.span(),
                    "control.metrics",
                    format!("{:?} is not an IP:port address", m.get_ref()),
                )
            })?),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9477))),
        };
        let pin_dir = match &n.pin_dir {
            Some(p) if !p.get_ref().starts_with("/sys/fs/bpf/") => {
                return cx.err(
                    p.span(),
                    "node.pin_dir",
                    "must be a directory under /sys/fs/bpf/",
                )
            }
            Some(p) => PathBuf::from(p.get_ref()),
            None => Path::new(xnlb_common::PIN_DIR).join(format!("node{node_id}")),
        };
        let state_dir = n
            .state_dir
            .as_ref()
            .map(|s| PathBuf::from(s.get_ref()))
            .unwrap_or_else(|| "/var/lib/xnlb".into());
        Ok(Config {
            path: path.to_owned(),
            node_id,
            interface,
            role,
            weight,
            xdp_mode,
            failback_manual,
            state_dir,
            pin_dir,
            heartbeat_priority,
            cluster_name: name.clone(),
            key_file: PathBuf::from(c.key_file.get_ref()),
            listen,
            buckets,
            heartbeat_interval_ms: hb,
            dead_after_ms: dead,
            drain_timeout_s,
            members,
            vips,
            socket,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
[node]
id = 1
interface = "eth0"
role = "active"
weight = 100

[cluster]
name = "web"
key_file = "/etc/xnlb/cluster.key"
listen = ["198.18.1.1:7450"]

[[cluster.member]]
id = 1
addrs = ["198.18.1.1:7450"]
[[cluster.member]]
id = 2
addrs = ["198.18.1.2:7450"]
[[cluster.member]]
id = 3
addrs = ["198.18.1.3:7450"]
role = "witness"

[[vip]]
address = "198.18.0.100"
[[vip.rule]]
protocol = "tcp"
ports = "80"
mode = "multiple"
[[vip.rule]]
protocol = "both"
ports = "8000-8100"
mode = "single"
priority = [2, 1]
"#;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("xnlb.toml"), src)
    }

    #[test]
    fn the_design_example_parses() {
        let c = parse(EXAMPLE).expect("valid");
        assert_eq!(c.node_id, 1);
        assert_eq!(c.members.len(), 3);
        assert_eq!(c.members[2].role, Role::Witness);
        assert_eq!(c.vips[0].rules[1].priority, vec![2, 1]);
        assert_eq!(c.vips[0].default, Mode::Single);
        assert_eq!(c.vips[0].default_priority, vec![1, 2]);
    }

    fn expect_err(src: &str, key: &str, line: usize) {
        match parse(src) {
            Err(ConfigError::Invalid {
                key: k,
                line: l,
                message,
                ..
            }) => {
                assert_eq!((k.as_str(), l), (key, line), "message: {message}");
            }
            Err(e @ ConfigError::Parse { .. }) => {
                let s = e.to_string();
                assert!(
                    s.contains(key) && s.contains(&format!("line {line}")),
                    "{s}"
                );
            }
            other => panic!("expected an error at {key} line {line}, got {other:?}"),
        }
    }

    /// `EXAMPLE` with `line` added under `[cluster]` (line 12 of the result).
    fn with_cluster_line(line: &str) -> String {
        EXAMPLE.replace(
            "listen = [\"198.18.1.1:7450\"]\n",
            &format!("listen = [\"198.18.1.1:7450\"]\n{line}\n"),
        )
    }

    #[test]
    fn every_duration_has_an_upper_bound_named_with_key_and_line() {
        // At the bound: accepted.
        for ok in [
            "heartbeat_interval_ms = 10000\ndead_after_ms = 60000",
            "drain_timeout_s = 86400",
            "dead_after_ms = 60000",
        ] {
            parse(&with_cluster_line(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        // One past it: refused, naming the key and its line.
        expect_err(
            &with_cluster_line("heartbeat_interval_ms = 10001"),
            "cluster.heartbeat_interval_ms",
            12,
        );
        expect_err(
            &with_cluster_line("dead_after_ms = 60001"),
            "cluster.dead_after_ms",
            12,
        );
        expect_err(
            &with_cluster_line("dead_after_ms = 9223372036854775807"),
            "cluster.dead_after_ms",
            12,
        );
        expect_err(
            &with_cluster_line("drain_timeout_s = 86401"),
            "cluster.drain_timeout_s",
            12,
        );
        expect_err(
            &with_cluster_line("drain_timeout_s = 9223372036854775807"),
            "cluster.drain_timeout_s",
            12,
        );
        let health =
            |body: &str| format!("{EXAMPLE}[vip.health]\ntcp = \"127.0.0.1:80\"\n{body}\n");
        let line = EXAMPLE.lines().count() + 3;
        parse(&health("interval_ms = 3600000\ntimeout_ms = 3600000")).expect("at the bound");
        expect_err(
            &health("interval_ms = 3600001"),
            "vip[0].health.interval_ms",
            line,
        );
        expect_err(
            &health("timeout_ms = 3600001"),
            "vip[0].health.timeout_ms",
            line,
        );
    }

    #[test]
    fn errors_name_the_key_and_line() {
        expect_err(
            &EXAMPLE.replace("weight = 100", "weight = 0"),
            "node.weight",
            6,
        );
        expect_err(
            &EXAMPLE.replace("ports = \"80\"", "ports = \"80-70\""),
            "vip[0].rule[0].ports",
            28,
        );
        expect_err(
            &EXAMPLE.replace("priority = [2, 1]", "priority = [2, 3]"),
            "vip[0].rule[1].priority",
            34,
        );
        expect_err(
            &EXAMPLE.replace("mode = \"multiple\"", "mode = \"many\""),
            "vip[0].rule[0].mode",
            29,
        );
        expect_err(
            &EXAMPLE.replace("id = 3\n", "id = 2\n"),
            "cluster.member[2].id",
            20,
        );
        expect_err(
            &EXAMPLE.replace("weight = 100", "weight = 100\ncolour = 1"),
            "colour",
            7,
        );
        expect_err(
            &EXAMPLE.replace("address = \"198.18.0.100\"", "address = \"198.18.0\""),
            "vip[0].address",
            25,
        );
    }
}
