//! What the checks read: the agent's own facts (sent over the control
//! socket) and the host's (read by the command in the node's namespace).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A member's liveness on one of our heartbeat links.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkFacts {
    /// Our address on this link.
    pub local: String,
    /// The member's address on this link.
    pub remote: String,
    /// Milliseconds since the member was last heard on it (`None`: never).
    pub heard_ms_ago: Option<u64>,
}

/// A peer as this agent sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFacts {
    /// Member id.
    pub id: u8,
    /// `active`, `standby` or `witness`.
    pub role: String,
    /// Per link.
    pub links: Vec<LinkFacts>,
}

/// A VIP and the cluster-MAC probes received for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipFacts {
    /// The VIP.
    pub address: String,
    /// Its cluster MAC.
    pub mac: String,
    /// `multicast` or `unicast`.
    pub mac_mode: String,
    /// Per serving peer: milliseconds since its last probe to this MAC
    /// arrived here (`None`: never).
    pub probes: BTreeMap<u8, Option<u64>>,
    /// A routed VIP (no flooding to check: forwarding instead).
    #[serde(default)]
    pub routed: bool,
}

/// What the agent knows about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFacts {
    /// This node.
    pub node_id: u8,
    /// The interface VIP traffic arrives on (`None`: witness).
    pub interface: Option<String>,
    /// Its driver (ethtool).
    pub driver: Option<String>,
    /// `node.xdp_mode` as configured.
    pub xdp_requested: String,
    /// How XDP is attached (`None`: no data plane).
    pub xdp: Option<String>,
    /// The agent's RLIMIT_NOFILE soft limit.
    pub nofile: u64,
    /// Descriptors the agent may need at worst.
    pub nofile_needed: u64,
    /// `node.state_dir`.
    pub state_dir: PathBuf,
    /// Why a file could not be created and synced there (`None`: it can).
    pub state_dir_error: Option<String>,
    /// `cluster.key_file`.
    pub key_file: PathBuf,
    /// Milliseconds since the agent started.
    pub uptime_ms: u64,
    /// `cluster.dead_after_ms`.
    pub dead_after_ms: u64,
    /// Whether the cluster-MAC probe runs.
    pub probing: bool,
    /// How long this agent has been listening for peers' probes, ms.
    pub probe_listening_ms: u64,
    /// Every other member.
    pub members: Vec<MemberFacts>,
    /// Every VIP.
    pub vips: Vec<VipFacts>,
    /// Routed mode: per serving peer, how this node forwards to it (`None`:
    /// it cannot). Empty without routed VIPs.
    #[serde(default)]
    pub forwarding: BTreeMap<u8, Option<String>>,
}

/// What the host looks like from the node's network namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Sysctl values by key (`None`: absent).
    pub sysctls: BTreeMap<String, Option<String>>,
    /// The current clock source.
    pub clocksource: Option<String>,
    /// Resolution of CLOCK_MONOTONIC_COARSE (one tick), ms.
    pub coarse_tick_ms: f64,
    /// Largest lag of CLOCK_MONOTONIC_COARSE behind CLOCK_MONOTONIC seen
    /// over a short sampling, ms.
    pub coarse_lag_ms: f64,
    /// Whether /sys/fs/bpf is a BPF filesystem.
    pub bpffs: bool,
    /// Why the key file is unusable (`None`: it is fine).
    pub key_error: Option<String>,
}

/// The ARP sysctls the design needs, for `interface`.
pub fn arp_keys(interface: &str) -> Vec<String> {
    let mut v = Vec::new();
    for scope in ["all", interface] {
        v.push(format!("net.ipv4.conf.{scope}.arp_ignore"));
        v.push(format!("net.ipv4.conf.{scope}.arp_announce"));
    }
    v
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Samples how far the coarse clock lags the precise one (200 samples
/// over ~100 ms) and the coarse clock's resolution, in ms.
fn coarse_clock() -> (f64, f64) {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
    let tick = (res.tv_sec as f64) * 1e3 + res.tv_nsec as f64 / 1e6;
    let mut lag = 0i128;
    for _ in 0..200 {
        let coarse = clock_ns(libc::CLOCK_MONOTONIC_COARSE);
        let precise = clock_ns(libc::CLOCK_MONOTONIC);
        lag = lag.max(precise - coarse);
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    (tick, lag as f64 / 1e6)
}

impl HostFacts {
    /// Reads the host as the agent `a` runs on it.
    pub fn gather(a: &AgentFacts) -> HostFacts {
        let mut sysctls = BTreeMap::new();
        if let Some(i) = &a.interface {
            for k in arp_keys(i) {
                let v = read(format!("/proc/sys/{}", k.replace('.', "/")));
                sysctls.insert(k, v);
            }
        }
        let (coarse_tick_ms, coarse_lag_ms) = coarse_clock();
        HostFacts {
            sysctls,
            clocksource: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
            coarse_tick_ms,
            coarse_lag_ms,
            bpffs: a.interface.is_none() || crate::dataplane::is_bpffs(Path::new("/sys/fs/bpf")),
            key_error: crate::key::load(&a.key_file).err().map(|e| e.to_string()),
        }
    }
}
