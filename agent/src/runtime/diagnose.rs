//! The agent's half of `xnlb doctor`: what only the running agent knows.

use std::collections::BTreeMap;
use std::io::Write;

use xnlb_proto::Role;

use super::now;
use super::shell::Shell;
use crate::admission::MAX_CONNECTIONS;
use crate::config::XdpMode;
use crate::doctor::{AgentFacts, LinkFacts, MemberFacts, VipFacts};
use crate::host::{cluster_mac, interface_driver, mac_text};

/// Descriptors beyond sockets and clients: BPF maps and programs, the
/// state file, the runtime's epoll and eventfds, logs (generous).
const FIXED_DESCRIPTORS: u64 = 64;

/// How long one doctor request keeps the probe tap open.
const LISTEN_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Creates, syncs and removes a file in `dir`: what a state write needs.
fn probe_writable(dir: &std::path::Path) -> Result<(), String> {
    let path = dir.join(format!(".xnlb-doctor-{}", std::process::id()));
    let result = std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(b"xnlb doctor\n").and_then(|_| f.sync_all()));
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| e.to_string())
}

fn nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r.rlim_cur
}

impl Shell {
    /// The facts `xnlb doctor` judges.
    pub fn diagnose(&self) -> AgentFacts {
        let status = self.node.status(now());
        let cfg = &self.cfg;
        let members = status
            .members
            .iter()
            .filter(|m| m.id != cfg.node_id)
            .map(|m| {
                let remote = cfg.members.iter().find(|c| c.id == m.id);
                MemberFacts {
                    id: m.id,
                    role: m.role.as_str().into(),
                    links: cfg
                        .listen
                        .iter()
                        .enumerate()
                        .filter_map(|(i, local)| {
                            let addr = remote?.addrs.get(i)?;
                            Some(LinkFacts {
                                local: local.to_string(),
                                remote: addr.to_string(),
                                heard_ms_ago: m
                                    .last_heard_link_ns
                                    .get(i)
                                    .copied()
                                    .flatten()
                                    .map(|ns| ns / 1_000_000),
                            })
                        })
                        .collect(),
                }
            })
            .collect();
        let serving: Vec<u8> = cfg
            .members
            .iter()
            .filter(|m| m.id != cfg.node_id && m.role != Role::Witness)
            .map(|m| m.id)
            .collect();
        let vips = cfg
            .vips
            .iter()
            .enumerate()
            .map(|(i, v)| VipFacts {
                address: v.address.to_string(),
                mac: mac_text(cluster_mac(v.address, v.mac_mode)),
                mac_mode: format!("{:?}", v.mac_mode).to_lowercase(),
                probes: serving
                    .iter()
                    .map(|&id| {
                        let ago = self.flood.as_ref().and_then(|f| f.ago_ms(id, i as u8));
                        (id, ago)
                    })
                    .collect::<BTreeMap<_, _>>(),
                routed: v.mode == crate::config::VipMode::Routed,
            })
            .collect();
        let forwarding = if crate::forwarding::routed(cfg) {
            serving
                .iter()
                .map(|&id| {
                    (
                        id,
                        self.member_routes.get(&id).map(crate::forwarding::describe),
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        AgentFacts {
            node_id: cfg.node_id,
            interface: cfg.interface.clone(),
            driver: cfg.interface.as_deref().and_then(interface_driver),
            xdp_requested: match cfg.xdp_mode {
                XdpMode::Auto => "auto",
                XdpMode::Native => "native",
                XdpMode::Generic => "generic",
            }
            .into(),
            xdp: self.xdp.clone(),
            nofile: nofile(),
            nofile_needed: 2 * MAX_CONNECTIONS as u64
                + cfg.listen.len() as u64
                + cfg.vips.len() as u64
                + FIXED_DESCRIPTORS,
            state_dir: cfg.state_dir.clone(),
            state_dir_error: probe_writable(&cfg.state_dir).err(),
            key_file: cfg.key_file.clone(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            dead_after_ms: cfg.dead_after_ms,
            probing: self.flood.as_ref().is_some_and(|f| f.running()),
            probe_listening_ms: self.flood.as_ref().map_or(0, |f| {
                // Every doctor run keeps the tap open a little longer.
                f.listen_for(LISTEN_WINDOW);
                f.listening_ms()
            }),
            members,
            vips,
            forwarding,
        }
    }
}
