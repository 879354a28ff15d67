//! Host setup for a serving node: each VIP on `lo` (so the stack accepts and
//! answers from it), ARP/NS never answered by the kernel with the node's own
//! MAC, and the cluster MACs accepted by the NIC. Every step is idempotent
//! (a host left dirty by a crash is fine) and undone by [`Host::teardown`].
//!
//! The sysctls' original values are written to a small journal in the
//! state directory before the first one is changed. An agent killed with
//! SIGKILL cannot undo anything; the next agent finds the journal and, on
//! its own teardown, restores the host's values rather than the ones the
//! dead agent had set (which is all it could read from /proc by then).

use netlink_packet_route::link::LinkFlags;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::{Config, MacMode, VipMode};

mod ifreq;
mod rtnl;

pub use rtnl::RouteTo;

/// Why host setup failed: every variant names the interface and what
/// was being done to it.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The interface does not exist in this network namespace.
    #[error("interface {interface} does not exist in this network namespace")]
    NoInterface {
        /// The interface.
        interface: String,
    },
    /// A route-netlink request was refused.
    #[error("{op} on {interface} (netlink): {source}")]
    Netlink {
        /// The interface.
        interface: String,
        /// What was being done, e.g. `adding address 198.18.0.100/32`.
        op: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// An interface ioctl failed.
    #[error("{op} on {interface} (ioctl): {source}")]
    Ioctl {
        /// The interface.
        interface: String,
        /// What was being done, e.g. `adding 03:bf:c6:12:00:64 to the multicast filter`.
        op: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// The journal of original sysctl values could not be written.
    #[error("recording the host's original sysctl values in {path}: {source}")]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A sysctl could not be read or written.
    #[error("sysctl {key}: {source}")]
    Sysctl {
        /// The key.
        key: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// What was changed on the host, so it can be undone exactly.
#[derive(Debug, Default)]
pub struct Host {
    interface: String,
    vips: Vec<IpAddr>,
    maddrs: Vec<[u8; 6]>,
    promisc: bool,
    sysctls: Vec<(String, String)>,
    /// The journal of original sysctl values (see the module doc).
    journal: Option<PathBuf>,
}

/// The journal of node `id`'s original sysctl values in `state_dir`.
pub fn sysctl_journal_path(state_dir: &Path, id: u8) -> PathBuf {
    state_dir.join(format!("node{id}.sysctl-originals"))
}

/// Reads a journal: `key value` per line. A missing or unreadable file is
/// an empty journal (nothing to restore beyond what /proc says now).
fn read_journal(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Writes a journal durably (temporary file, fsync, rename) so a crash
/// leaves either the old or the new one.
fn write_journal(path: &Path, originals: &BTreeMap<String, String>) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    for (k, v) in originals {
        writeln!(f, "{k} {v}")?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

fn read_sysctl(key: &str) -> Result<String, HostError> {
    std::fs::read_to_string(sysctl_path(key))
        .map(|s| s.trim().to_string())
        .map_err(|source| HostError::Sysctl {
            key: key.into(),
            source,
        })
}

fn write_sysctl(key: &str, value: &str) -> Result<(), HostError> {
    std::fs::write(sysctl_path(key), value).map_err(|source| HostError::Sysctl {
        key: key.into(),
        source,
    })
}

/// A MAC as `ip link` prints it.
pub fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The cluster MAC of a VIP (DESIGN 1).
pub fn cluster_mac(vip: IpAddr, mac: MacMode) -> [u8; 6] {
    let b = crate::flow::ip_bytes(vip);
    let fam = if vip.is_ipv4() {
        xnlb_common::family::V4
    } else {
        xnlb_common::family::V6
    };
    let mode = match mac {
        MacMode::Unicast => xnlb_common::mac_mode::UNICAST,
        MacMode::Multicast => xnlb_common::mac_mode::MULTICAST,
    };
    xnlb_common::cluster_mac(mode, &b, fam)
}

/// The interface's MAC address.
pub fn interface_mac(interface: &str) -> Result<[u8; 6], HostError> {
    ifreq::mac(interface).map_err(|source| HostError::Ioctl {
        interface: interface.into(),
        op: "reading the MAC address".into(),
        source,
    })
}

/// The interface's driver name (ethtool), e.g. `veth`, `ixgbe`.
pub fn interface_driver(interface: &str) -> Option<String> {
    ifreq::driver(interface)
}

/// True for a veth: `auto` XDP mode uses generic XDP there, because a veth
/// classifies frames (PACKET_OTHERHOST for a cluster MAC) before its native
/// XDP hook can rewrite the destination MAC, so the stack would drop them.
pub fn is_veth(interface: &str) -> bool {
    interface_driver(interface).as_deref() == Some("veth")
}

fn vip_prefix(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// The index of `interface` in this network namespace.
fn index_of(interface: &str) -> Result<u32, HostError> {
    match crate::dataplane::ifindex(interface) {
        0 => Err(HostError::NoInterface {
            interface: interface.into(),
        }),
        i => Ok(i),
    }
}

fn netlink(interface: &str, op: String) -> impl FnOnce(std::io::Error) -> HostError + '_ {
    move |source| HostError::Netlink {
        interface: interface.into(),
        op,
        source,
    }
}

/// Puts `vip` on `lo` (idempotent: `ip addr replace`).
fn add_vip(vip: IpAddr) -> Result<(), HostError> {
    rtnl::replace_address(index_of("lo")?, vip)
        .map_err(netlink("lo", format!("adding address {}", vip_prefix(vip))))
}

/// Takes `vip` off `lo`.
fn del_vip(vip: IpAddr) -> Result<(), HostError> {
    rtnl::delete_address(index_of("lo")?, vip).map_err(netlink(
        "lo",
        format!("removing address {}", vip_prefix(vip)),
    ))
}

/// Sets or clears link `flags` of `interface`.
fn set_flags(interface: &str, flags: LinkFlags, on: bool, what: &str) -> Result<(), HostError> {
    rtnl::set_link_flags(index_of(interface)?, flags, on)
        .map_err(netlink(interface, format!("setting {what}")))
}

/// The addresses on `interface`: a netlink dump, no process spawned,
/// cheap enough for every few heartbeats.
pub fn addresses_on(interface: &str) -> Result<Vec<IpAddr>, HostError> {
    rtnl::addresses(index_of(interface)?).map_err(netlink(interface, "listing addresses".into()))
}

/// The usable entries of `interface`'s neighbour table (address, MAC):
/// where routed mode learns the members' MACs.
pub fn neighbours_on(interface: &str) -> Result<Vec<(IpAddr, [u8; 6])>, HostError> {
    rtnl::neighbours(index_of(interface)?).map_err(netlink(interface, "listing neighbours".into()))
}

/// The route to `dst` (`ip route get`), if any.
pub fn route_to(dst: std::net::Ipv4Addr) -> Result<Option<RouteTo>, HostError> {
    rtnl::route_to(dst).map_err(netlink(
        "(routing table)",
        format!("looking up the route to {dst}"),
    ))
}

/// The index of `interface`, or the error naming it.
pub fn interface_index(interface: &str) -> Result<u32, HostError> {
    index_of(interface)
}

/// Whether `interface` is up and in promiscuous mode: `(up, promisc)`.
pub fn link_state(interface: &str) -> Result<(bool, bool), HostError> {
    let f = rtnl::link_flags(index_of(interface)?)
        .map_err(netlink(interface, "reading link flags".into()))?;
    Ok((f.contains(LinkFlags::Up), f.contains(LinkFlags::Promisc)))
}

impl Host {
    /// Applies the host side of `cfg`. On error, whatever was applied is
    /// undone before returning.
    pub fn setup(cfg: &Config) -> Result<Host, HostError> {
        let Some(interface) = cfg.interface.clone() else {
            return Ok(Host::default());
        };
        let mut host = Host {
            interface: interface.clone(),
            journal: Some(sysctl_journal_path(&cfg.state_dir, cfg.node_id)),
            ..Host::default()
        };
        match host.apply(cfg, &interface) {
            Ok(()) => Ok(host),
            Err(e) => {
                host.teardown();
                Err(e)
            }
        }
    }

    /// Sets every sysctl in `wanted` (skipping optional ones the kernel
    /// does not have), after recording their original values in the
    /// journal. An original recorded by an earlier agent wins over what
    /// /proc says now: that agent may have died before restoring it.
    fn set_sysctls(&mut self, wanted: &[(String, &str, bool)]) -> Result<(), HostError> {
        let journaled = self
            .journal
            .as_deref()
            .map(read_journal)
            .unwrap_or_default();
        let mut originals = journaled.clone();
        let mut plan = Vec::new();
        for (key, value, optional) in wanted {
            let now = match read_sysctl(key) {
                Ok(v) => v,
                Err(_) if *optional => continue,
                Err(e) => return Err(e),
            };
            let original = journaled.get(key).cloned().unwrap_or_else(|| now.clone());
            originals.insert(key.clone(), original.clone());
            plan.push((key.clone(), *value, now, original));
        }
        if let Some(path) = &self.journal {
            if originals != journaled {
                write_journal(path, &originals).map_err(|source| HostError::Journal {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        for (key, value, now, original) in plan {
            if now != value {
                write_sysctl(&key, value)?;
            }
            if original != value {
                self.sysctls.push((key, original));
            }
        }
        Ok(())
    }

    fn apply(&mut self, cfg: &Config, interface: &str) -> Result<(), HostError> {
        // The kernel must never answer ARP for a VIP with this node's MAC
        // (the XDP program answers with the cluster MAC), nor use a VIP as
        // the source of its own ARP requests.
        let mut wanted = Vec::new();
        for scope in ["all", interface] {
            wanted.push((format!("net.ipv4.conf.{scope}.arp_ignore"), "1", false));
            wanted.push((format!("net.ipv4.conf.{scope}.arp_announce"), "2", false));
        }
        // Fail closed without XDP: a VIP packet reaches the stack with the
        // cluster MAC (multicast) only if no XDP program rewrote it, i.e.
        // while the filter is detached. The stack must drop it rather than
        // answer every flow (an overlap with the buckets' owners); accepted
        // packets carry the interface MAC and are not affected.
        wanted.push((
            format!("net.ipv4.conf.{interface}.drop_unicast_in_l2_multicast"),
            "1",
            false,
        ));
        wanted.push((
            format!("net.ipv6.conf.{interface}.drop_unicast_in_l2_multicast"),
            "1",
            true,
        ));
        self.set_sysctls(&wanted)?;
        for v in &cfg.vips {
            add_vip(v.address)?;
            self.vips.push(v.address);
            if v.mode == VipMode::Routed {
                // Routers send it to this node's own MAC: no cluster MAC to
                // join, no promiscuous mode, no solicited-node group.
                continue;
            }
            match v.mac_mode {
                MacMode::Unicast if !self.promisc => {
                    set_flags(interface, LinkFlags::Promisc, true, "promisc on")?;
                    self.promisc = true;
                }
                MacMode::Unicast => {}
                MacMode::Multicast => {
                    self.add_maddr(interface, cluster_mac(v.address, MacMode::Multicast))?
                }
            }
            if let IpAddr::V6(a) = v.address {
                // Neighbour solicitations for the VIP go to its
                // solicited-node group, which only addresses on the NIC join.
                let o = a.octets();
                self.add_maddr(interface, [0x33, 0x33, 0xff, o[13], o[14], o[15]])?;
            }
        }
        set_flags("lo", LinkFlags::Up, true, "link up")?;
        Ok(())
    }

    fn add_maddr(&mut self, interface: &str, mac: [u8; 6]) -> Result<(), HostError> {
        if self.maddrs.contains(&mac) {
            return Ok(());
        }
        ifreq::add_multicast(interface, mac).map_err(|source| HostError::Ioctl {
            interface: interface.into(),
            op: format!("adding {} to the multicast filter", mac_text(mac)),
            source,
        })?;
        self.maddrs.push(mac);
        Ok(())
    }

    /// Undoes everything [`Host::setup`] changed; failures are logged, not
    /// fatal: teardown runs on the way out and must finish.
    pub fn teardown(&mut self) {
        self.remove_vips();
        for m in self.maddrs.drain(..) {
            if let Err(e) = ifreq::del_multicast(&self.interface, m) {
                tracing::warn!(
                    "removing {} from {}'s multicast filter: {e}",
                    mac_text(m),
                    self.interface
                );
            }
        }
        if self.promisc {
            if let Err(e) = set_flags(&self.interface, LinkFlags::Promisc, false, "promisc off") {
                tracing::warn!("{e}");
            }
            self.promisc = false;
        }
        let mut restored = true;
        for (key, old) in self.sysctls.drain(..).rev() {
            if let Err(e) = write_sysctl(&key, &old) {
                tracing::warn!("restoring {key}: {e}");
                restored = false;
            }
        }
        // Kept if a value could not be restored: the next agent retries.
        if let (true, Some(path)) = (restored, &self.journal) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Puts back every VIP that is no longer on `lo` (an operator's `ip
    /// addr del`, a network manager's flush): without it the stack drops
    /// the packets XDP accepts and this node's buckets go unanswered while
    /// it reports itself converged. Returns the VIPs it put back.
    pub fn restore_missing_vips(&mut self) -> Result<Vec<IpAddr>, HostError> {
        if self.vips.is_empty() {
            return Ok(Vec::new());
        }
        let present = addresses_on("lo")?;
        let mut restored = Vec::new();
        for vip in self.vips.iter().filter(|v| !present.contains(v)) {
            add_vip(*vip)?;
            restored.push(*vip);
        }
        Ok(restored)
    }

    /// Removes the VIPs from `lo` at once (the stack stops answering for
    /// them), keeping the rest for [`Host::teardown`].
    pub fn remove_vips(&mut self) {
        for vip in self.vips.drain(..) {
            if let Err(e) = del_vip(vip) {
                tracing::warn!("{e}");
            }
        }
    }
}
