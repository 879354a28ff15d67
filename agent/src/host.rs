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

/// The interface's MAC address.
pub fn interface_mac(interface: &str) -> Result<[u8; 6], HostError> {
    let key = format!("/sys/class/net/{interface}/address");
    let text = std::fs::read_to_string(&key).map_err(|source| HostError::Sysctl { key, source })?;
    let mut mac = [0u8; 6];
    for (m, part) in mac.iter_mut().zip(text.trim().split(':')) {
        *m = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    Ok(mac)
}

/// True for interfaces without a physical device behind them (veth,
/// bridges, dummies): `auto` XDP mode uses generic XDP there, because a veth
/// classifies frames before its native XDP hook can rewrite the cluster MAC.
pub fn is_virtual(interface: &str) -> bool {
    !std::path::Path::new(&format!("/sys/class/net/{interface}/device")).exists()
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
