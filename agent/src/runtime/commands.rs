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
use crate::explain::{explain, parse_flow, parse_proto, render};
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
        let lease_valid = match self.dp.as_mut() {
            Some(dp) => dp
                .lease_deadline()
                .is_ok_and(|d| crate::dataplane::boottime_ns() < d),
            None => false,
        };
        let table = self.installed.as_deref().unwrap_or(&self.plan.table);
        let spec = match parse_flow(table, proto, client, vip) {
            Ok(s) => s,
            Err(e) => return Response::err(e),
        };
        let Some(mut e) = explain(table, &spec, lease_valid) else {
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
            Request::Diagnose => match serde_json::to_value(self.diagnose()) {
                Ok(v) => Response::data(v),
                Err(e) => Response::err(e.to_string()),
            },
            Request::Explain { proto, client, vip } => {
                self.explain(&proto, &client, vip.as_deref())
            }
        }
    }
    /// Reloads the configuration file; anything that cannot change on one
    /// node alone is refused, naming the keys, and the running
    /// configuration kept.
    pub fn reload(&mut self) {
        let cfg = match Config::load(&self.cfg.path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload rejected, keeping the running configuration: {e}");
                return;
            }
        };
        if cfg.node_id != self.cfg.node_id
            || cfg.interface != self.cfg.interface
            || cfg.listen != self.cfg.listen
        {
            error!("reload rejected, running configuration kept: node.id, node.interface and cluster.listen need a restart");
            return;
        }
        let key = match crate::key::load(&cfg.key_file) {
            Ok(k) => k,
            Err(e) => {
                error!("reload rejected, running configuration kept: {e}");
                return;
            }
        };
        // Settings every member must share cannot change on one node: its
        // peers would refuse its datagrams (and, before leases followed the
        // peers' promises, it kept serving on a lease nobody vouched for).
        let mut shared = cluster_wide_changes(&self.cfg, &cfg);
        if key != self.key {
            shared.push("cluster.key_file (the key itself)");
        }
        if !shared.is_empty() {
            error!(
                "reload rejected, running configuration kept: {} must be the same on every node and cannot change by reload; change it on every node and restart them (README, \"Changing cluster-wide settings\")",
                shared.join(", ")
            );
            return;
        }
        let new_plan = plan(&cfg);
        if let Err(e) = self
            .node
            .reconfigure(now(), proto_config(&cfg, &new_plan, key))
        {
            error!("reload rejected by the protocol: {e}");
            return;
        }
        if cfg.vips != self.cfg.vips && cfg.role != Role::Witness {
            self.host.teardown();
            match Host::setup(&cfg) {
                Ok(h) => self.host = h,
                Err(e) => error!("reload: host setup for the new VIPs failed: {e}"),
            }
        }
        self.peers = Peers::new(&cfg);
        self.source_filter.update(&cfg);
        info!("configuration reloaded from {}", cfg.path.display());
        self.plan = new_plan;
        self.cfg = cfg;
    }
}
