//! The shell around the protocol core: everything the protocol thread
//! owns, and how the core's output is carried out.
//!
//! [`Shell::drive`] is called after every input to the core. It applies
//! the core's events first (a failed install must reach the core before
//! any datagram claims it), then sends its datagrams, holding those that
//! depend on a state-file write until the writer reports it durable
//! ([`Outbox`]). Control requests and reloads are in `commands.rs`; the
//! loop that feeds the shell is in `event_loop.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use ahash::AHashMap;
use tokio::net::UdpSocket;
use tracing::{debug, error, info, warn};
use xnlb_common::{slot_state, Table, MAX_BUCKETS};
use xnlb_proto::{Action, Node, Report, Routes, Transmit};

use super::failovers::Failovers;
use super::now;
use super::persistence::{state_file, Outbox};
use crate::announce::{Announcer, Membership, TunRoutes};
use crate::config::Config;
use crate::dataplane::Dataplane;
use crate::host::Host;
use crate::plan::Plan;
use crate::prefilter::SourceFilter;
use crate::state_file::Writer;
use crate::status::StatusView;

/// Every member's heartbeat addresses by id, link by link: built once per
/// configuration (at start and on reload), read for every datagram sent.
pub(super) struct Peers(AHashMap<u8, Vec<SocketAddr>>);

impl Peers {
    /// The table of `cfg`'s members.
    pub fn new(cfg: &Config) -> Peers {
        Peers(
            cfg.members
                .iter()
                .map(|m| (m.id, m.addrs.clone()))
                .collect(),
        )
    }

    /// Member `id`'s address on `link`.
    fn get(&self, id: u8, link: usize) -> Option<SocketAddr> {
        self.0.get(&id)?.get(link).copied()
    }
}

/// Everything the protocol thread owns.
pub(super) struct Shell {
    pub cfg: Config,
    pub plan: Plan,
    pub node: Node,
    pub dp: Option<Dataplane>,
    pub host: Host,
    /// How XDP is attached, for status (`None`: no data plane).
    pub xdp: Option<String>,
    /// The cluster key in use (a reload may not change it).
    pub key: Vec<u8>,
    /// The state file's writer thread.
    pub writer: Writer,
    /// Datagrams waiting for a write.
    pub outbox: Outbox,
    /// Heartbeat sockets, one per link.
    pub sockets: Vec<Arc<UdpSocket>>,
    /// Where datagrams go.
    pub peers: Peers,
    pub failovers: Failovers,
    /// Slot states last installed (for the handoff flow count).
    pub installed: Option<Box<Table>>,
    /// The core left the cluster (or we gave up waiting): the loop ends.
    pub stopped: bool,
    /// Drops heartbeat-port datagrams from non-members (and counts them).
    pub source_filter: SourceFilter,
    /// Cluster-MAC probes received per member (`None`: not probing).
    pub flood: Option<crate::flood_probe::Seen>,
    /// When the agent started (for `xnlb doctor`).
    pub started: std::time::Instant,
    /// Why the node stopped serving on its own (see [`crate::liveness`]):
    /// the agent exits non-zero with it.
    pub fatal: Option<String>,
    /// Tells the service manager about reloads.
    pub notify: fn(super::ServiceState),
    /// Routed mode's BGP announcement (none without routed VIPs).
    pub announcer: Option<Announcer<TunRoutes>>,
    /// Routed mode: how each member is reached, as last written to the
    /// data plane.
    pub member_routes: std::collections::BTreeMap<u8, xnlb_common::MemberRoute>,
    /// Routed mode: the tunnel address last written to the data plane.
    pub tunnel_local: Option<std::net::Ipv4Addr>,
}

impl Shell {
    /// Carries out the core's actions, logs its reports, then sends its
    /// datagrams. Actions come first (a failed install must be reported
    /// before anything leaves; the core yields no datagram before); a
    /// datagram that depends on a write not yet durable is held until the
    /// writer reports it.
    pub fn drive(&mut self) {
        while let Some(action) = self.node.poll_action() {
            self.apply(action);
        }
        while let Some(report) = self.node.poll_report() {
            self.log(report);
        }
        // Every input ends here, the core's timer included (at least once
        // per heartbeat interval): a lease that ran out is withdrawn
        // within one interval.
        if let Some(a) = &mut self.announcer {
            a.membership.drained = self.node.drained();
            a.update(now().0);
        }
        while let Some(t) = self.node.poll_transmit() {
            if let Some(t) = self.outbox.pass(t) {
                self.send(&t);
            }
        }
    }

    /// What decides routed mode's announcement, to be changed (the next
    /// [`Shell::drive`] acts on it).
    pub fn membership(&mut self) -> Option<&mut Membership> {
        self.announcer.as_mut().map(|a| &mut a.membership)
    }

    /// The node is leaving: withdraw its announcement now, before the
    /// handoff that follows.
    pub fn leaving(&mut self) {
        if let Some(m) = self.membership() {
            m.leaving = true;
        }
        if let Some(a) = &mut self.announcer {
            a.update(now().0);
        }
    }

    fn send(&self, t: &Transmit) {
        let (Some(sock), Some(addr)) = (self.sockets.get(t.link), self.peers.get(t.to, t.link))
        else {
            return;
        };
        if let Err(e) = sock.try_send_to(&t.bytes, addr) {
            debug!("datagram to member {} on link {}: {e}", t.to, t.link);
        }
    }

    /// The writer's report on write `seq`: release what waited for it, or
    /// drop it and let the core fence the node.
    pub fn written(&mut self, seq: u64, result: std::io::Result<()>) {
        let t = now();
        let path = state_file(&self.cfg);
        match result {
            Ok(()) => {
                if self.outbox.failing {
                    info!("state file {} written again: rejoining", path.display());
                    self.outbox.failing = false;
                }
                if let Some(m) = self.membership() {
                    m.storage_ok = true;
                }
                let released: Vec<Transmit> = self.outbox.durable(seq).collect();
                for h in &released {
                    self.send(h);
                }
                self.node.persisted(t, seq, true);
            }
            Err(e) => {
                if !self.outbox.failing {
                    error!(
                        "writing the state file {}: {e}; this node is fenced and silent until a write succeeds",
                        path.display()
                    );
                    self.outbox.failing = true;
                }
                self.outbox.failed(seq);
                if let Some(m) = self.membership() {
                    m.storage_ok = false;
                }
                self.node.persisted(t, seq, false);
            }
        }
        self.drive();
    }

    /// What the core says must be done, in order.
    fn apply(&mut self, action: Action) {
        match action {
            Action::Install {
                epoch,
                states,
                singles,
                routes,
            } => self.install(epoch, &states, &singles, &routes),
            Action::Lease { until, hold } => {
                if let Some(dp) = &mut self.dp {
                    if let Some(hold) = hold {
                        if let Err(e) = dp.set_hold(hold.0) {
                            error!("extending held delivery: {e}");
                        }
                    }
                    if let Err(e) = dp.set_lease(until.0) {
                        error!("extending the lease: {e}");
                    }
                }
                if let Some(m) = self.membership() {
                    m.lease_until = until.0;
                }
            }
            Action::Persist { seq, state } => {
                if !self.writer.write(seq, state) {
                    error!("the state file writer is gone; fencing");
                    self.node.persisted(now(), seq, false);
                }
            }
            Action::Stopped => {
                info!("left the cluster");
                self.stopped = true;
            }
        }
    }

    /// What the core reports: the log, and failover statistics.
    fn log(&mut self, report: Report) {
        let t = now();
        match report {
            Report::MemberState { id, state, why } => {
                info!("member {id} {}: {why}", state.as_str());
                self.failovers.member(id, state, t, self.cfg.dead_after_ms);
            }
            Report::Quorum { has, why } => {
                self.failovers.quorum(has);
                if let Some(m) = self.membership() {
                    m.quorum = has;
                }
                if has {
                    info!("quorum gained: {why}");
                } else {
                    warn!("quorum lost, serving nothing: {why}");
                }
            }
            Report::Epoch { from, to, why } => {
                info!("epoch {from} -> {to}: {why}");
                self.failovers.epoch(t);
            }
            Report::ConfigMismatch { member, what } => {
                warn!("member {member} has a different configuration, refusing it: {what}");
            }
            Report::HandoffDone { epoch, timed_out } => {
                info!(
                    "handoff of epoch {epoch} done{}",
                    if timed_out {
                        " (drain_timeout passed; remaining connections cut)"
                    } else {
                        ""
                    }
                );
            }
            Report::Divergence { member, epoch } => {
                warn!(
                    "member {member} holds another map than ours at epoch {epoch}: not vouching for it; repairing from the map a quorum holds"
                );
            }
        }
    }

    /// Installs epoch `epoch`'s slot states in the data plane; a failure is
    /// reported to the core before any datagram leaves.
    fn install(&mut self, epoch: u64, states: &[u8], singles: &[u8], routes: &Routes) {
        let mut table = self.plan.table.clone();
        table.epoch = epoch;
        let n = states.len().min(MAX_BUCKETS as usize);
        table.state[..n].copy_from_slice(&states[..n]);
        for (i, s) in singles.iter().enumerate() {
            if let Some(x) = table.state.get_mut(MAX_BUCKETS as usize + i) {
                *x = *s;
            }
        }
        crate::forwarding::fill_routes(&mut table, self.cfg.node_id, states.len(), routes);
        let owned = states
            .iter()
            .filter(|&&s| s == slot_state::OWNED || s == slot_state::ACQUIRING)
            .count();
        if let Some(dp) = &mut self.dp {
            if let Err(e) = dp.install(&table) {
                error!("installing epoch {epoch} in the data plane: {e}; fenced and silent until an install succeeds");
                // Before any datagram leaves: none may claim it.
                self.node.install_failed(now());
                if let Some(m) = self.membership() {
                    m.installed = false;
                }
                return;
            }
        }
        debug!("epoch {epoch} installed in the data plane: {owned} buckets taking new flows");
        self.installed = Some(table);
        if let Some(m) = self.membership() {
            m.installed = true;
        }
    }

    /// Routed mode: learns how each other member is reached from the data
    /// interface (its MAC there, or a tunnel through a gateway) and this
    /// node's tunnel address, and writes what changed to the data plane
    /// (forwarding to a member it cannot reach drops).
    pub fn learn_member_routes(&mut self) {
        let (Some(dp), Some(interface)) = (&mut self.dp, &self.cfg.interface) else {
            return;
        };
        if !crate::forwarding::routed(&self.cfg) {
            return;
        }
        let learnt = (|| -> Result<_, crate::host::HostError> {
            let index = crate::host::interface_index(interface)?;
            let neighbours = crate::host::neighbours_on(interface)?;
            let routes = crate::forwarding::member_routes(&self.cfg, index, &neighbours, |dst| {
                crate::host::route_to(dst).ok().flatten()
            });
            let local =
                crate::forwarding::tunnel_local(&self.cfg, &crate::host::addresses_on(interface)?);
            Ok((routes, local))
        })();
        let (routes, local) = match learnt {
            Ok(l) => l,
            Err(e) => {
                warn!("routed mode: {e}");
                return;
            }
        };
        if local != self.tunnel_local {
            match dp.set_tunnel_local(local) {
                Ok(()) => {
                    info!("routed mode: members on other subnets tunnel to {local:?}");
                    self.tunnel_local = local;
                }
                Err(e) => error!("routed mode: setting the tunnel address: {e}"),
            }
        }
        for m in self.cfg.members.iter().filter(|m| m.id != self.cfg.node_id) {
            let (old, new) = (self.member_routes.get(&m.id), routes.get(&m.id));
            if old == new {
                continue;
            }
            if let Err(e) = dp.set_member_route(m.id, new.copied().unwrap_or_default()) {
                error!("routed mode: writing how member {} is reached: {e}", m.id);
                continue;
            }
            match new {
                Some(r) => info!(
                    "routed mode: member {} is {} on {interface}",
                    m.id,
                    crate::forwarding::describe(r)
                ),
                None => warn!(
                    "routed mode: member {} is not reachable from {interface} (no resolved address on its segment, no route through it); packets this node forwards to it drop",
                    m.id
                ),
            }
            match new {
                Some(r) => self.member_routes.insert(m.id, *r),
                None => self.member_routes.remove(&m.id),
            };
        }
    }

    /// What `xnlb status` shows now.
    pub fn status(&self) -> StatusView {
        let t = now();
        let counters = self.dp.as_ref().and_then(|d| d.counters().ok());
        let mut view = StatusView::from_core(
            &self.node.status(t),
            t,
            counters.as_ref(),
            self.xdp.clone(),
            self.failovers.view(t),
        );
        view.protocol_drops.insert(
            crate::prefilter::UNKNOWN_SOURCE.into(),
            self.source_filter.dropped(),
        );
        view
    }

    /// Runs the liveness check (see [`crate::liveness`]). If the node can
    /// no longer serve, the VIPs leave `lo` at once (so the stack cannot
    /// answer for buckets others are about to own) and the node leaves the
    /// cluster; the agent then exits non-zero.
    pub fn check_liveness(&mut self) -> bool {
        if self.fatal.is_some() {
            return false;
        }
        let report = crate::liveness::check(self.dp.as_mut(), &mut self.host);
        for what in &report.repaired {
            warn!("{what}");
        }
        let Some(why) = report.lost else {
            return false;
        };
        error!("this node can no longer serve: {why}; removing the VIPs, leaving the cluster and exiting");
        if let Some(m) = self.membership() {
            m.attached = false;
        }
        self.leaving();
        self.host.remove_vips();
        self.node.stop(now());
        self.fatal = Some(why);
        true
    }

    /// Reports the connections this node's kernel still holds in its
    /// releasing slots (the socket table, not a tracking table), so the
    /// core ends a handoff or drain once the last one closed, however it
    /// closed (FIN, RST, timeout).
    pub fn report_flows(&mut self) {
        let Some(table) = self.installed.as_ref() else {
            return;
        };
        if !table.state.contains(&slot_state::RELEASING) {
            return;
        }
        let vips: Vec<std::net::IpAddr> = self.cfg.vips.iter().map(|v| v.address).collect();
        match crate::sockets::held_connections(&vips) {
            Ok(conns) => {
                let held = conns
                    .iter()
                    .filter_map(|c| crate::sockets::slot_of(table, c))
                    .filter(|&s| table.state.get(s) == Some(&slot_state::RELEASING))
                    .count();
                self.node.report_tracked_flows(now(), held as u64);
            }
            Err(e) => warn!("{e}"),
        }
    }

    /// Undoes the host setup, fences and detaches the data plane (the
    /// control socket is removed by the thread that bound it).
    pub fn teardown(&mut self) {
        self.leaving();
        // Closing the TUN device also deletes whatever route is left.
        self.announcer = None;
        self.host.teardown();
        if let (Some(mut dp), Some(interface)) = (self.dp.take(), self.cfg.interface.clone()) {
            if let Err(e) = dp.set_lease(0) {
                warn!("fencing on the way out: {e}");
            }
            if let Err(e) = dp.detach(&interface) {
                warn!("detaching XDP from {interface}: {e}");
            }
            dp.remove_pins();
        }
    }
}
