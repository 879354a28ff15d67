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

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{Config, MacMode, VipMode};

/// Why host setup failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its error output.
        stderr: String,
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
    maddrs: Vec<String>,
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

fn run(args: &[&str]) -> Result<String, HostError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| HostError::Command {
            cmd: args.join(" "),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(HostError::Command {
            cmd: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

fn mac_text(m: [u8; 6]) -> String {
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

/// An `ifreq` ioctl on a throwaway socket of this network namespace
/// (sysfs may belong to another namespace, e.g. under `nsenter --net`).
fn ifreq_ioctl(
    interface: &str,
    request: libc::c_ulong,
    data: Option<*mut libc::c_void>,
) -> Result<libc::ifreq, HostError> {
    let err = |e: std::io::Error| HostError::Command {
        cmd: format!("ioctl on {interface}"),
        stderr: e.to_string(),
    };
    if interface.len() >= libc::IFNAMSIZ {
        return Err(err(std::io::Error::from(std::io::ErrorKind::InvalidInput)));
    }
    // SAFETY: a zeroed ifreq is valid; the name fits (checked above); the
    // socket is closed on every path.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(interface.bytes()) {
            *d = s as libc::c_char;
        }
        if let Some(p) = data {
            ifr.ifr_ifru.ifru_data = p as *mut libc::c_char;
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        let rc = libc::ioctl(fd, request as _, &mut ifr);
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err(e));
        }
        Ok(ifr)
    }
}

/// The interface's MAC address.
pub fn interface_mac(interface: &str) -> Result<[u8; 6], HostError> {
    let ifr = ifreq_ioctl(interface, libc::SIOCGIFHWADDR, None)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

/// The interface's driver name (ethtool), e.g. `veth`, `ixgbe`.
pub fn interface_driver(interface: &str) -> Option<String> {
    // struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32],
    // bus_info[32], erom_version[32], reserved2[12], 5 x u32.
    let mut info = [0u8; 4 + 32 * 5 + 12 + 20];
    info[..4].copy_from_slice(&0x0000_0003u32.to_ne_bytes()); // ETHTOOL_GDRVINFO
    ifreq_ioctl(
        interface,
        0x8946,
        Some(info.as_mut_ptr() as *mut libc::c_void),
    )
    .ok()?; // SIOCETHTOOL
    let name = &info[4..36];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
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

/// Puts `vip` on `lo` (idempotent).
fn add_vip(vip: IpAddr) -> Result<(), HostError> {
    let addr = vip_prefix(vip);
    let mut args = vec!["ip", "addr", "replace", &addr, "dev", "lo"];
    if vip.is_ipv6() {
        args.push("nodad");
    }
    run(&args).map(|_| ())
}

/// The addresses on `interface`, from `getifaddrs(3)`: a netlink dump, no
/// process spawned, cheap enough for every few heartbeats.
pub fn addresses_on(interface: &str) -> Result<Vec<IpAddr>, HostError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(HostError::Command {
            cmd: "getifaddrs".into(),
            stderr: std::io::Error::last_os_error().to_string(),
        });
    }
    let mut out = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: a node of the list getifaddrs returned; its name is a
        // C string and its address, when present, a sockaddr of the
        // family it names.
        unsafe {
            let ifa = &*p;
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name);
            if !ifa.ifa_addr.is_null() && name.to_bytes() == interface.as_bytes() {
                match (*ifa.ifa_addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            p = ifa.ifa_next;
        }
    }
    // SAFETY: the list getifaddrs allocated, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
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
                    run(&["ip", "link", "set", "dev", interface, "promisc", "on"])?;
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
        run(&["ip", "link", "set", "dev", "lo", "up"])?;
        Ok(())
    }

    fn add_maddr(&mut self, interface: &str, mac: [u8; 6]) -> Result<(), HostError> {
        let m = mac_text(mac);
        if self.maddrs.contains(&m) {
            return Ok(());
        }
        let present = run(&["ip", "maddr", "show", "dev", interface])?.contains(&m);
        if !present {
            run(&["ip", "maddr", "add", &m, "dev", interface])?;
        }
        self.maddrs.push(m);
        Ok(())
    }

    /// Undoes everything [`Host::setup`] changed; failures are logged, not
    /// fatal: teardown runs on the way out and must finish.
    pub fn teardown(&mut self) {
        self.remove_vips();
        for m in self.maddrs.drain(..) {
            let _ = run(&["ip", "maddr", "del", &m, "dev", &self.interface]);
        }
        if self.promisc {
            let _ = run(&[
                "ip",
                "link",
                "set",
                "dev",
                &self.interface,
                "promisc",
                "off",
            ]);
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
            if let Err(e) = run(&["ip", "addr", "del", &vip_prefix(vip), "dev", "lo"]) {
                tracing::warn!("removing VIP {vip} from lo: {e}");
            }
        }
    }
}
