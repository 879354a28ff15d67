//! What the operator asks of the protocol thread: control-socket requests
//! (status, drain, resume, stop, rebalance, owner) and configuration
//! reloads (SIGHUP), which change only what one node may change alone.

use std::net::SocketAddr;

use tracing::{error, info};
use xnlb_common::MAX_BUCKETS;

use super::now;
use super::shell::{Peers, Shell};
use crate::config::{Config, Role, MAX_DRAIN_TIMEOUT_S};
use crate::control::{Request, Response};
use crate::explain::{explain, parse_flow, parse_proto, render, Lease};
use crate::flow::{classify, is_disabled, FlowSpec};
use crate::host::Host;
use crate::plan::{cluster_wide_changes, plan, proto_config};

impl Shell {
    /// `xnlb owner`: the slot a flow hashes to and who serves it now.
    fn owner(&self, vip: &str, proto: &str, src: &str, dport: u16) -> Response {
        let Ok(vip) = vip.parse() else {
            return Response::err(format!("--vip {vip:?} is not an IP address"));
        };
        let Ok(src) = src.parse::<SocketAddr>() else {
            return Response::err(format!("--src {src:?} is not IP:PORT"));
        };
        let proto_num = match parse_proto(proto, src.is_ipv4()) {
            Ok(p) => p,
            Err(e) => return Response::err(format!("--proto: {e}")),
        };
        let spec = FlowSpec {
            vip,
            client: src.ip(),
            proto: proto_num,
            client_port: src.port(),
            vip_port: dport,
        };
        let Some(c) = classify(&self.plan.table, &spec) else {
            return Response::err(format!("{vip} is not a VIP of this cluster"));
        };
        let kind = if c.slot >= MAX_BUCKETS as usize {
            "single slot"
        } else {
            "bucket"
        };
        let index = if c.slot >= MAX_BUCKETS as usize {
            c.slot - MAX_BUCKETS as usize
        } else {
            c.slot
        };
        let owner = if is_disabled(&c) {
            None
        } else {
            self.node.owner_of(c.slot)
        };
        let message = match (is_disabled(&c), owner) {
            (true, _) => "disabled (dropped by every node)".to_string(),
            (false, Some(id)) => id.to_string(),
            (false, None) => "none (no node serves it now)".to_string(),
        };
        Response {
            ok: true,
            message,
            data: serde_json::json!({
                "owner": owner,
                "disabled": is_disabled(&c),
                "kind": kind,
                "index": index,
                "hash": format!("{:016x}", c.hash),
                "epoch": self.node.status(now()).epoch,
            }),
        }
    }

    /// `xnlb explain`: the installed table (what the XDP program runs now)
    /// and the lease it enforces, explained for one flow.
    fn explain(&mut self, proto: &str, client: &str, vip: Option<&str>) -> Response {
        let lease = match self.dp.as_mut() {
            Some(dp) => Lease::at(
                crate::dataplane::boottime_ns(),
                dp.lease_deadline().unwrap_or(0),
                dp.hold_deadline().unwrap_or(0),
            ),
            None => Lease::Expired,
        };
        let table = self.installed.as_deref().unwrap_or(&self.plan.table);
        let spec = match parse_flow(table, proto, client, vip) {
            Ok(s) => s,
            Err(e) => return Response::err(e),
        };
        let Some(mut e) = explain(table, &spec, lease) else {
            return Response::err(format!("{} is not a VIP of this cluster", spec.vip));
        };
        let c = classify(table, &spec);
        e.owner = c
            .filter(|c| !is_disabled(c))
            .and_then(|c| self.node.owner_of(c.slot));
        let mut r = match serde_json::to_value(&e) {
            Ok(v) => Response::data(v),
            Err(err) => return Response::err(err.to_string()),
        };
        r.message = render(&e, self.cfg.node_id);
        if self.dp.is_none() {
            r.message += "note     this node runs no XDP program (witness): it drops nothing and serves nothing\n";
        }
        r
    }

    /// Carries out one control request.
    pub fn command(&mut self, req: Request) -> Response {
        let t = now();
        match req {
            Request::Status => match serde_json::to_value(self.status()) {
                Ok(v) => Response::data(v),
                Err(e) => Response::err(e.to_string()),
            },
            Request::Drain { timeout_s } => {
                if timeout_s.is_some_and(|s| s > MAX_DRAIN_TIMEOUT_S) {
                    return Response::err(format!(
                        "drain timeout {}s is more than {} (one day)",
                        timeout_s.unwrap_or_default(),
                        MAX_DRAIN_TIMEOUT_S
                    ));
                }
                self.node.drain(t, timeout_s.map(|s| s * 1_000_000_000));
                Response::ok("draining: no new flows; existing connections finish, then this node owns nothing")
            }
            Request::Resume => {
                self.node.resume(t);
                Response::ok("resumed")
            }
            Request::Stop => {
                self.leaving();
                self.node.stop(t);
                Response::ok("leaving the cluster")
            }
            Request::Rebalance => {
                self.node.rebalance(t);
                Response::ok("rebalance requested")
            }
            Request::Owner {
                vip,
                proto,
                src,
                dport,
            } => self.owner(&vip, &proto, &src, dport),
            // The event loop carries reloads out itself (they restart its
            // health checks): a reload never reaches this.
            Request::Reload => Response::err("reload: not handled here"),
            Request::Diagnose => match serde_json::to_value(self.diagnose()) {
                Ok(v) => Response::data(v),
                Err(e) => Response::err(e.to_string()),
            },
            Request::Explain { proto, client, vip } => {
                self.explain(&proto, &client, vip.as_deref())
            }
        }
    }
    /// Reloads the configuration file (SIGHUP or `xnlb reload`): what the
    /// running agent now uses, or why the file was refused. Anything that
    /// cannot change on one node alone, or is read only at start, is
    /// refused naming the keys, and the running configuration kept.
    pub fn reload(&mut self) -> Result<String, String> {
        let refused = |why: String| {
            let why = format!("reload rejected, running configuration kept: {why}");
            error!("{why}");
            why
        };
        let cfg = Config::load(&self.cfg.path).map_err(|e| refused(e.to_string()))?;
        let restart = restart_only_changes(&self.cfg, &cfg);
        if !restart.is_empty() {
            return Err(refused(format!(
                "{} {} read only at start: restart needed (`systemctl restart xnlb`)",
                restart.join(", "),
                if restart.len() == 1 { "is" } else { "are" }
            )));
        }
        let key = crate::key::load(&cfg.key_file).map_err(|e| refused(e.to_string()))?;
        // Settings every member must share cannot change on one node: its
        // peers would refuse its datagrams (and, before leases followed the
        // peers' promises, it kept serving on a lease nobody vouched for).
        let mut shared = cluster_wide_changes(&self.cfg, &cfg);
        if key != self.key {
            shared.push("cluster.key_file (the key itself)");
        }
        if !shared.is_empty() {
            return Err(refused(format!(
                "{} must be the same on every node and cannot change by reload; change it on every node and restart them (docs/DEPLOY.md, \"Changing the configuration\")",
                shared.join(", ")
            )));
        }
        let new_plan = plan(&cfg);
        self.node
            .reconfigure(now(), proto_config(&cfg, &new_plan, key))
            .map_err(|e| refused(format!("the protocol refused it: {e}")))?;
        let mut outcome = format!("configuration reloaded from {}", cfg.path.display());
        if cfg.vips != self.cfg.vips && cfg.role != Role::Witness {
            self.host.teardown();
            match Host::setup(&cfg) {
                Ok(h) => self.host = h,
                Err(e) => {
                    error!("reload: host setup for the new VIPs failed: {e}");
                    outcome += &format!(" (but the host setup for the new VIPs failed: {e})");
                }
            }
        }
        self.peers = Peers::new(&cfg);
        self.source_filter.update(&cfg);
        info!("{outcome}");
        self.plan = new_plan;
        self.cfg = cfg;
        Ok(outcome)
    }
}

/// The keys the agent reads only at start (the identity it binds and locks
/// under, the XDP attach, where its state and pins live, the protocol
/// thread's priority, the control socket and metrics endpoint), in the
/// spelling of docs/CONFIG.md, whose Reload column a test checks against
/// this list.
pub const RESTART_ONLY_KEYS: [&str; 9] = [
    "node.id",
    "node.interface",
    "cluster.listen",
    "node.xdp_mode",
    "node.state_dir",
    "node.pin_dir",
    "node.heartbeat_priority",
    "control.socket",
    "control.metrics",
];

/// The [`RESTART_ONLY_KEYS`] that differ between `old` and `new`: a reload
/// that changes one is refused rather than half applied.
pub(super) fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let changed = [
        old.node_id != new.node_id,
        old.interface != new.interface,
        old.listen != new.listen,
        old.xdp_mode != new.xdp_mode,
        old.state_dir != new.state_dir,
        old.pin_dir != new.pin_dir,
        old.heartbeat_priority != new.heartbeat_priority,
        old.socket != new.socket,
        old.metrics != new.metrics,
    ];
    RESTART_ONLY_KEYS
        .into_iter()
        .zip(changed)
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::RESTART_ONLY_KEYS;

    /// The Reload column of docs/CONFIG.md says `restart` exactly for the
    /// keys a reload refuses as read only at start (or `refused` for the
    /// node's identity, which a restart alone does not change either).
    #[test]
    fn the_config_reference_names_the_keys_a_reload_refuses_as_start_only() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CONFIG.md");
        let doc = std::fs::read_to_string(path).expect("docs/CONFIG.md");
        let rows: Vec<(String, String)> = doc
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let reload = cells.get(cells.len().checked_sub(2)?)?;
                Some((cells[1].trim_matches('`').to_string(), reload.to_string()))
            })
            .collect();
        for (key, reload) in &rows {
            if reload == "restart" {
                assert!(RESTART_ONLY_KEYS.contains(&key.as_str()), "{key}: {reload}");
            }
        }
        for key in RESTART_ONLY_KEYS {
            let row = rows.iter().find(|(k, _)| k == key);
            assert!(
                row.is_some_and(|(_, r)| r == "restart" || r == "refused"),
                "{key}: {row:?}"
            );
        }
    }
}
