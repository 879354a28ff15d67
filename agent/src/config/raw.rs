//! The file as written: serde structs that mirror the TOML schema, every
//! value kept with its span so that validation can name the line.
//!
//! Every default of the file is written here once, in [`defaults`], and
//! nowhere else: the section parsers only check and convert. A defaulted
//! value carries the empty span `0..0` (line 1); where an error about a
//! defaulted value must point elsewhere, the parser says so (see
//! [`given_or`]).

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// Declares one serde default function per line: `name: type = value`.
macro_rules! defaults {
    ($($name:ident: $ty:ty = $value:expr;)*) => {
        /// The file's defaults, as serde default functions.
        pub(super) mod defaults {
            use toml::Spanned;
            $(
                pub(in crate::config) fn $name() -> Spanned<$ty> {
                    Spanned::new(0..0, $value.into())
                }
            )*
        }
    };
}

defaults! {
    role: String = "active";
    weight: u32 = 100u32;
    xdp_mode: String = "auto";
    failback: String = "auto";
    state_dir: String = "/var/lib/xnlb";
    heartbeat_priority: i64 = 0i64;
    buckets: u32 = 4096u32;
    heartbeat_interval_ms: u64 = 50u64;
    dead_after_ms: u64 = 250u64;
    drain_timeout_s: u64 = 300u64;
    vip_mode: String = "flood";
    mac_mode: String = "multicast";
    vip_default: String = "single";
    rule_mode: String = "multiple";
    affinity: String = "none";
    health_interval_ms: u64 = 1000u64;
    health_timeout_ms: u64 = 500u64;
    health_fall: u32 = 3u32;
    health_rise: u32 = 2u32;
    socket: String = crate::config::DEFAULT_SOCKET;
    metrics: String = "127.0.0.1:9477";
}

/// The span of a value the file gave, or `fallback` for a default (whose
/// span is empty).
pub(super) fn given_or<T>(v: &Spanned<T>, fallback: Range<usize>) -> Range<usize> {
    if v.span().is_empty() {
        fallback
    } else {
        v.span()
    }
}

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub node: RawNode,
    pub cluster: RawCluster,
    #[serde(default)]
    pub vip: Vec<RawVip>,
    #[serde(default)]
    pub control: RawControl,
}

/// `[node]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub id: Spanned<i64>,
    #[serde(default)]
    pub interface: Option<Spanned<String>>,
    #[serde(default = "defaults::role")]
    pub role: Spanned<String>,
    #[serde(default = "defaults::weight")]
    pub weight: Spanned<u32>,
    #[serde(default = "defaults::xdp_mode")]
    pub xdp_mode: Spanned<String>,
    #[serde(default = "defaults::failback")]
    pub failback: Spanned<String>,
    #[serde(default = "defaults::state_dir")]
    pub state_dir: Spanned<String>,
    /// No fixed default: it is derived from the node id.
    #[serde(default)]
    pub pin_dir: Option<Spanned<String>>,
    #[serde(default = "defaults::heartbeat_priority")]
    pub heartbeat_priority: Spanned<i64>,
}

/// `[cluster]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub name: Spanned<String>,
    pub key_file: Spanned<String>,
    pub listen: Spanned<Vec<String>>,
    #[serde(default = "defaults::buckets")]
    pub buckets: Spanned<u32>,
    #[serde(default = "defaults::heartbeat_interval_ms")]
    pub heartbeat_interval_ms: Spanned<u64>,
    #[serde(default = "defaults::dead_after_ms")]
    pub dead_after_ms: Spanned<u64>,
    #[serde(default = "defaults::drain_timeout_s")]
    pub drain_timeout_s: Spanned<u64>,
    #[serde(default)]
    pub member: Vec<RawMember>,
}

/// `[[cluster.member]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMember {
    pub id: Spanned<i64>,
    pub addrs: Spanned<Vec<String>>,
    #[serde(default = "defaults::role")]
    pub role: Spanned<String>,
    #[serde(default = "defaults::weight")]
    pub weight: Spanned<u32>,
}

/// `[[vip]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVip {
    pub address: Spanned<String>,
    #[serde(default = "defaults::vip_mode")]
    pub mode: Spanned<String>,
    #[serde(default = "defaults::mac_mode")]
    pub mac_mode: Spanned<String>,
    #[serde(default = "defaults::vip_default")]
    pub default: Spanned<String>,
    /// No fixed default: derived from the members' roles.
    #[serde(default)]
    pub priority: Option<Spanned<Vec<i64>>>,
    #[serde(default)]
    pub rule: Vec<RawRule>,
    #[serde(default)]
    pub health: Option<RawHealth>,
}

/// `[vip.health]`: every key may be left out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHealth {
    pub tcp: Option<Spanned<String>>,
    pub command: Option<Spanned<String>>,
    pub interval_ms: Spanned<u64>,
    pub timeout_ms: Spanned<u64>,
    pub fall: Spanned<u32>,
    pub rise: Spanned<u32>,
}

impl Default for RawHealth {
    fn default() -> RawHealth {
        RawHealth {
            tcp: None,
            command: None,
            interval_ms: defaults::health_interval_ms(),
            timeout_ms: defaults::health_timeout_ms(),
            fall: defaults::health_fall(),
            rise: defaults::health_rise(),
        }
    }
}

/// `[[vip.rule]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub protocol: Spanned<String>,
    pub ports: Spanned<String>,
    #[serde(default = "defaults::rule_mode")]
    pub mode: Spanned<String>,
    #[serde(default = "defaults::affinity")]
    pub affinity: Spanned<String>,
    /// Only for `mode = "single"`; derived from the members' roles if absent.
    #[serde(default)]
    pub priority: Option<Spanned<Vec<i64>>>,
}

/// `[control]`: every key may be left out, and the table too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawControl {
    pub socket: Spanned<String>,
    /// `""` disables the endpoint.
    pub metrics: Spanned<String>,
}

impl Default for RawControl {
    fn default() -> RawControl {
        RawControl {
            socket: defaults::socket(),
            metrics: defaults::metrics(),
        }
    }
}
