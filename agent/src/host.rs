//! Host setup for a serving node: each VIP on `lo` (so the stack accepts and
//! answers from it), ARP/NS never answered by the kernel with the node's own
//! MAC, and the cluster MACs accepted by the NIC. Every step is idempotent
//! (a host left dirty by a crash is fine) and undone by [`Host::teardown`].

use std::net::IpAddr;
use std::process::Command;

use crate::config::Config;

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
pub fn cluster_mac(vip: IpAddr, unicast: bool) -> [u8; 6] {
    let b = crate::flow::ip_bytes(vip);
    let fam = if vip.is_ipv4() {
        xnlb_common::family::V4
    } else {
        xnlb_common::family::V6
    };
    let mode = if unicast {
        xnlb_common::mac_mode::UNICAST
    } else {
        xnlb_common::mac_mode::MULTICAST
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

impl Host {
    /// Applies the host side of `cfg`. On error, whatever was applied is
    /// undone before returning.
    pub fn setup(cfg: &Config) -> Result<Host, HostError> {
        let Some(interface) = cfg.interface.clone() else {
            return Ok(Host::default());
        };
        let mut host = Host {
            interface: interface.clone(),
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

    fn set_sysctl(&mut self, key: &str, value: &str) -> Result<(), HostError> {
        let old = read_sysctl(key)?;
        if old != value {
            write_sysctl(key, value)?;
            self.sysctls.push((key.to_string(), old));
        }
        Ok(())
    }

    fn apply(&mut self, cfg: &Config, interface: &str) -> Result<(), HostError> {
        // The kernel must never answer ARP for a VIP with this node's MAC
        // (the XDP program answers with the cluster MAC), nor use a VIP as
        // the source of its own ARP requests.
        for scope in ["all", interface] {
            self.set_sysctl(&format!("net.ipv4.conf.{scope}.arp_ignore"), "1")?;
            self.set_sysctl(&format!("net.ipv4.conf.{scope}.arp_announce"), "2")?;
        }
        for v in &cfg.vips {
            let (addr, extra): (String, &[&str]) = match v.address {
                IpAddr::V4(a) => (format!("{a}/32"), &[]),
                IpAddr::V6(a) => (format!("{a}/128"), &["nodad"]),
            };
            let mut args = vec!["ip", "addr", "replace", &addr, "dev", "lo"];
            args.extend_from_slice(extra);
            run(&args)?;
            self.vips.push(v.address);
            if v.unicast_mac {
                if !self.promisc {
                    run(&["ip", "link", "set", "dev", interface, "promisc", "on"])?;
                    self.promisc = true;
                }
            } else {
                self.add_maddr(interface, cluster_mac(v.address, false))?;
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
        for vip in self.vips.drain(..) {
            let addr = match vip {
                IpAddr::V4(a) => format!("{a}/32"),
                IpAddr::V6(a) => format!("{a}/128"),
            };
            if let Err(e) = run(&["ip", "addr", "del", &addr, "dev", "lo"]) {
                tracing::warn!("removing VIP {vip} from lo: {e}");
            }
        }
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
        for (key, old) in self.sysctls.drain(..).rev() {
            if let Err(e) = write_sysctl(&key, &old) {
                tracing::warn!("restoring {key}: {e}");
            }
        }
    }
}
