//! The agent's IO shell around the protocol core.
//!
//! One dedicated thread (optionally SCHED_FIFO, as corosync does) owns the
//! protocol [`Node`], the heartbeat sockets, its timer and the data plane, so
//! heartbeats keep their timing when the host's CPUs are saturated. The main
//! thread serves the control socket, the metrics endpoint and signals, and
//! talks to the protocol thread through a channel.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};
use xnlb_common::{ipproto, slot_state, Table, MAX_BUCKETS};
use xnlb_proto::{Action, MemberState, Node, Report, Time, Transmit};

use crate::config::{Config, Role, XdpMode};
use crate::control::server::{self, Command};
use crate::control::{Request, Response};
use crate::dataplane::{boottime_ns, embedded_object, Dataplane};
use crate::flow::{classify, is_disabled, FlowSpec};
use crate::host::{self, Host};
use crate::plan::{cluster_wide_changes, plan, proto_config, Plan};
use crate::state_file::{self, Writer, Written};
use crate::status::{AvailabilityView, StatusView};

/// Why the agent stopped or could not start, and its exit status.
#[derive(Debug)]
pub struct Exit {
    /// 0 on a graceful stop, 2 on a configuration error, 1 otherwise.
    pub code: i32,
}

/// What the main thread tells the protocol thread besides control requests.
#[derive(Debug)]
enum Signal {
    /// SIGTERM / SIGINT: leave gracefully.
    Terminate,
    /// SIGHUP: reload the configuration.
    Reload,
}

fn now() -> Time {
    Time(boottime_ns())
}

/// Incarnation: wall-clock nanoseconds, larger at every start.
fn incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

fn state_file(cfg: &Config) -> PathBuf {
    cfg.state_dir.join(format!("node{}.state", cfg.node_id))
}

/// Failover bookkeeping for MTTR and availability.
struct Failovers {
    started: Time,
    /// Members currently dead in our view (a Dead event repeats as the
    /// cluster fences them; count each failure once).
    dead: std::collections::BTreeSet<u8>,
    /// Whether we are in a quorum: a node cut off sees everyone die, which
    /// is its own failure, not theirs.
    quorum: bool,
    /// Members declared dead whose buckets are not yet re-served: (id,
    /// time their silence began).
    pending: Vec<(u8, Time)>,
    samples_ms: Vec<f64>,
}

impl Failovers {
    fn view(&self, now: Time) -> AvailabilityView {
        let uptime_s = now.0.saturating_sub(self.started.0) as f64 / 1e9;
        let n = self.samples_ms.len();
        let mttr = (n > 0).then(|| self.samples_ms.iter().sum::<f64>() / n as f64);
        let mtbf = (n > 0).then(|| uptime_s / n as f64);
        let availability = match (mtbf, mttr) {
            (Some(b), Some(r)) => b / (b + r / 1000.0),
            _ => 1.0,
        };
        AvailabilityView {
            failovers: n as u64,
            last_mttr_ms: self.samples_ms.last().copied(),
            mttr_ms: mttr,
            mtbf_s: mtbf,
            availability,
            uptime_s,
            repairs_ms: self
                .samples_ms
                .iter()
                .rev()
                .take(100)
                .rev()
                .copied()
                .collect(),
        }
    }
}

/// Everything the protocol thread owns.
struct Shell {
    cfg: Config,
    plan: Plan,
    node: Node,
    dp: Option<Dataplane>,
    host: Host,
    xdp: Option<String>,
    /// The cluster key in use (a reload may not change it).
    key: Vec<u8>,
    /// The state file's writer thread.
    writer: Writer,
    /// Highest write the writer reported durable.
    durable: u64,
    /// Datagrams waiting for a write (in the order the core made them).
    held: VecDeque<Transmit>,
    /// The last write failed (logged once per failing streak).
    write_failing: bool,
    sockets: Vec<Arc<UdpSocket>>,
    /// Heartbeat addresses by member id (looked up for every datagram sent).
    peers: ahash::AHashMap<u8, Vec<SocketAddr>>,
    failovers: Failovers,
    /// Slot states last installed (for the handoff flow count).
    installed: Option<Box<Table>>,
    stopped: bool,
    /// Drops heartbeat-port datagrams from non-members (and counts them).
    source_filter: crate::prefilter::SourceFilter,
    /// Why the node stopped serving on its own (see [`crate::liveness`]):
    /// the agent exits non-zero with it.
    fatal: Option<String>,
}

/// Loads everything that can fail before touching the host: the config,
/// the key, the plan, the state file and the protocol node.
///
/// A state file that exists but cannot be used stops the start: starting
/// over would forget this member's votes and promises, which could let two
/// values be chosen for one epoch. The error says how to recover.
fn prepare(cfg: &Config) -> Result<(Plan, Node, Vec<u8>)> {
    let key = crate::key::load(&cfg.key_file)?;
    let plan = plan(cfg);
    let pcfg = proto_config(cfg, &plan, key.clone());
    let inc = incarnation();
    let path = state_file(cfg);
    let node = match state_file::load(&path)? {
        Some(bytes) => {
            let n = Node::restore(pcfg, now(), inc, &bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{e}\n  in {file}. Starting over would forget this member's votes.\n  To recover: keep this agent stopped until `xnlb status` on another node shows member {id} dead, then move {file} away and start again (the node rejoins as a new member; see README, \"The state file\").",
                    file = path.display(),
                    id = cfg.node_id
                )
            })?;
            info!("restored protocol state from {}", path.display());
            n
        }
        None => Node::new(pcfg, now(), inc)?,
    };
    state_file::check_writable(&path)?;
    Ok((plan, node, key))
}

fn same_vips(a: &Table, b: &Table) -> bool {
    a.seed == b.seed && a.buckets == b.buckets && a.nvips == b.nvips && a.vips == b.vips
}

/// Loads or adopts the data plane, makes sure the live table knows this
/// config's VIPs (owning nothing until the protocol says so), and attaches.
fn setup_dataplane(cfg: &Config, plan: &Plan) -> Result<(Dataplane, String)> {
    let obj = embedded_object().ok_or(crate::dataplane::DataplaneError::NotEmbedded)?;
    let interface = cfg.interface.as_deref().context("no interface")?;
    let mut dp = Dataplane::load(obj, &cfg.pin_dir)?;
    dp.set_if_mac(host::interface_mac(interface)?)?;
    let live = dp.current_table()?;
    if !same_vips(&live, &plan.table) {
        // Fresh maps, or another VIP set: fail closed until the protocol
        // installs this config's map.
        dp.install(&plan.table)?;
    } else {
        info!(
            "adopting the live table of epoch {} left by the previous agent",
            live.epoch
        );
    }
    let mode = match cfg.xdp_mode {
        XdpMode::Native => aya::programs::XdpMode::Driver,
        XdpMode::Generic => aya::programs::XdpMode::Skb,
        XdpMode::Auto if host::is_veth(interface) => aya::programs::XdpMode::Skb,
        XdpMode::Auto => aya::programs::XdpMode::Driver,
    };
    let how = match dp.attach(interface, mode) {
        Ok(how) => how,
        Err(e) if cfg.xdp_mode == XdpMode::Auto && mode == aya::programs::XdpMode::Driver => {
            warn!("native XDP on {interface} failed ({e}); falling back to generic");
            dp.attach(interface, aya::programs::XdpMode::Skb)?
        }
        Err(e) => return Err(e.into()),
    };
    let how = format!("{how} on {interface}");
    info!("XDP program attached: {how}");
    Ok((dp, how))
}

impl Shell {
    /// Carries out the core's actions, logs its reports, then sends its
    /// datagrams. Actions come first (a failed install must be reported
    /// before anything leaves; the core yields no datagram before); a
    /// datagram that depends on a write not yet durable is held until the
    /// writer reports it.
    fn drive(&mut self) {
        while let Some(action) = self.node.poll_action() {
            self.apply(action);
        }
        while let Some(report) = self.node.poll_report() {
            self.log(report);
        }
        while let Some(t) = self.node.poll_transmit() {
            if t.after_persist > self.durable {
                self.held.push_back(t);
            } else {
                self.send(&t);
            }
        }
    }

    fn send(&self, t: &Transmit) {
        let Some(member) = self.cfg.members.iter().find(|m| m.id == t.to) else {
            return;
        };
        let (Some(sock), Some(addr)) = (self.sockets.get(t.link), member.addrs.get(t.link)) else {
            return;
        };
        if let Err(e) = sock.try_send_to(&t.bytes, *addr) {
            debug!("datagram to member {} on link {}: {e}", t.to, t.link);
        }
    }

    /// The writer's report on write `seq`: release what waited for it, or
    /// drop it and let the core fence the node.
    fn written(&mut self, seq: u64, result: std::io::Result<()>) {
        let t = now();
        let path = state_file(&self.cfg);
        match result {
            Ok(()) => {
                self.durable = self.durable.max(seq);
                if self.write_failing {
                    info!("state file {} written again: rejoining", path.display());
                    self.write_failing = false;
                }
                while self
                    .held
                    .front()
                    .is_some_and(|h| h.after_persist <= self.durable)
                {
                    if let Some(h) = self.held.pop_front() {
                        self.send(&h);
                    }
                }
                self.node.persisted(t, seq, true);
            }
            Err(e) => {
                if !self.write_failing {
                    error!(
                        "writing the state file {}: {e}; this node is fenced and silent until a write succeeds",
                        path.display()
                    );
                    self.write_failing = true;
                }
                self.held.retain(|h| h.after_persist > seq);
                self.node.persisted(t, seq, false);
            }
        }
        self.drive();
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Install {
                epoch,
                states,
                singles,
            } => {
                let mut table = self.plan.table.clone();
                table.epoch = epoch;
                let n = states.len().min(MAX_BUCKETS as usize);
                table.state[..n].copy_from_slice(&states[..n]);
                for (i, s) in singles.iter().enumerate() {
                    if let Some(x) = table.state.get_mut(MAX_BUCKETS as usize + i) {
                        *x = *s;
                    }
                }
                let owned = states
                    .iter()
                    .filter(|&&s| s == slot_state::OWNED || s == slot_state::ACQUIRING)
                    .count();
                if let Some(dp) = &mut self.dp {
                    if let Err(e) = dp.install(&table) {
                        error!("installing epoch {epoch} in the data plane: {e}; fenced and silent until an install succeeds");
                        // Before any datagram leaves: none may claim it.
                        self.node.install_failed(now());
                        return;
                    }
                }
                debug!(
                    "epoch {epoch} installed in the data plane: {owned} buckets taking new flows"
                );
                self.installed = Some(table);
            }
            Action::Lease { until } => {
                if let Some(dp) = &mut self.dp {
                    if let Err(e) = dp.set_lease(until.0) {
                        error!("extending the lease: {e}");
                    }
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

    fn log(&mut self, report: Report) {
        let t = now();
        match report {
            Report::MemberState { id, state, why } => {
                info!("member {id} {}: {why}", state.as_str());
                let f = &mut self.failovers;
                if state == MemberState::Dead {
                    if f.dead.insert(id) && f.quorum {
                        let silent_since =
                            Time(t.0.saturating_sub(self.cfg.dead_after_ms * 1_000_000));
                        f.pending.push((id, silent_since));
                    }
                } else if state == MemberState::Alive {
                    f.dead.remove(&id);
                }
            }
            Report::Quorum { has, why } => {
                self.failovers.quorum = has;
                if has {
                    info!("quorum gained: {why}");
                } else {
                    warn!("quorum lost, serving nothing: {why}");
                }
            }
            Report::Epoch { from, to, why } => {
                info!("epoch {from} -> {to}: {why}");
                for (id, since) in self.failovers.pending.drain(..) {
                    let ms = t.0.saturating_sub(since.0) as f64 / 1e6;
                    info!("failover of member {id} repaired in {ms:.0} ms (silence to new epoch)");
                    self.failovers.samples_ms.push(ms);
                }
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

    fn status(&self) -> StatusView {
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
    fn check_liveness(&mut self) -> bool {
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
        self.host.remove_vips();
        self.node.stop(now());
        self.fatal = Some(why);
        true
    }

    fn owner(&self, vip: &str, proto: &str, src: &str, dport: u16) -> Response {
        let Ok(vip) = vip.parse() else {
            return Response::err(format!("--vip {vip:?} is not an IP address"));
        };
        let Ok(src) = src.parse::<SocketAddr>() else {
            return Response::err(format!("--src {src:?} is not IP:PORT"));
        };
        let proto_num = match proto {
            "tcp" => ipproto::TCP,
            "udp" => ipproto::UDP,
            "icmp" if src.is_ipv4() => ipproto::ICMP,
            "icmp" => ipproto::ICMPV6,
            other => return Response::err(format!("--proto {other:?}: expected tcp, udp or icmp")),
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

    fn command(&mut self, req: Request) -> Response {
        let t = now();
        match req {
            Request::Status => match serde_json::to_value(self.status()) {
                Ok(v) => Response::data(v),
                Err(e) => Response::err(e.to_string()),
            },
            Request::Drain { timeout_s } => {
                if timeout_s.is_some_and(|s| s > crate::config::MAX_DRAIN_TIMEOUT_S) {
                    return Response::err(format!(
                        "drain timeout {}s is more than {} (one day)",
                        timeout_s.unwrap_or_default(),
                        crate::config::MAX_DRAIN_TIMEOUT_S
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
        }
    }

    fn reload(&mut self) {
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
        self.peers = peer_addrs(&cfg);
        info!("configuration reloaded from {}", cfg.path.display());
        self.plan = new_plan;
        self.cfg = cfg;
    }

    /// Reports connections still open in releasing slots, so the core can
    /// end handoffs when they are gone.
    fn report_flows(&mut self) {
        let releasing = self
            .installed
            .as_ref()
            .map(|t| t.state.contains(&slot_state::RELEASING))
            .unwrap_or(false);
        if !releasing {
            return;
        }
        if let Some(dp) = &mut self.dp {
            match dp.releasing_flows() {
                Ok(n) => self.node.report_tracked_flows(now(), n),
                Err(e) => warn!("counting tracked connections: {e}"),
            }
        }
    }

    fn teardown(&mut self) {
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
        let _ = std::fs::remove_file(&self.cfg.socket);
    }
}

fn peer_addrs(cfg: &Config) -> ahash::AHashMap<u8, Vec<SocketAddr>> {
    cfg.members
        .iter()
        .map(|m| (m.id, m.addrs.clone()))
        .collect()
}

fn raise_priority(prio: u8) {
    if prio == 0 {
        return;
    }
    let param = libc::sched_param {
        sched_priority: prio as i32,
    };
    // SAFETY: plain syscall on the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        info!("protocol thread runs SCHED_FIFO priority {prio}");
    } else {
        warn!(
            "SCHED_FIFO priority {prio}: {} (needs CAP_SYS_NICE)",
            std::io::Error::last_os_error()
        );
    }
}

/// The protocol thread's loop.
async fn protocol_loop(
    mut sh: Shell,
    mut commands: mpsc::Receiver<Command>,
    mut signals: mpsc::Receiver<Signal>,
    mut written: mpsc::UnboundedReceiver<Written>,
) -> Shell {
    let (dgram_tx, mut dgrams) = mpsc::channel::<(usize, Vec<u8>)>(1024);
    for (link, sock) in sh.sockets.iter().enumerate() {
        let sock = sock.clone();
        let tx = dgram_tx.clone();
        let members_only = sh.source_filter.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                match sock.recv_from(&mut buf).await {
                    Ok((_, from)) if !members_only.admits(from) => {}
                    Ok((n, _)) => {
                        if tx.send((link, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        debug!("receive on link {link}: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    let (health_tx, mut health_rx) = mpsc::channel::<crate::health::Outcome>(64);
    let spawn_checks = |cfg: &Config| -> Vec<tokio::task::JoinHandle<()>> {
        cfg.vips
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.health
                    .clone()
                    .map(|h| tokio::spawn(crate::health::run(i, h, health_tx.clone())))
            })
            .collect()
    };
    let mut checks = spawn_checks(&sh.cfg);
    let mut tracker = crate::health::Tracker::new(sh.cfg.vips.len());
    let mut flows = tokio::time::interval(Duration::from_millis(500));
    let mut liveness = tokio::time::interval(crate::liveness::PERIOD);
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    sh.node.handle_timeout(now());
    sh.drive();
    loop {
        let wake = sh
            .node
            .poll_timeout()
            .map(|t| {
                tokio::time::Instant::now()
                    + Duration::from_nanos(t.0.saturating_sub(boottime_ns()))
            })
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
        let give_up = stop_deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some((link, bytes)) = dgrams.recv() => {
                sh.node.handle_datagram(now(), link, &bytes);
                // Whatever else is queued, before the next select: a burst
                // costs one wake-up, and nothing waits behind other arms.
                for _ in 0..64 {
                    let Ok((link, bytes)) = dgrams.try_recv() else { break };
                    sh.node.handle_datagram(now(), link, &bytes);
                }
            }
            Some((seq, result)) = written.recv() => sh.written(seq, result),
            _ = tokio::time::sleep_until(wake) => {
                // Datagrams already here count before any silence timer.
                while let Ok((link, bytes)) = dgrams.try_recv() {
                    sh.node.handle_datagram(now(), link, &bytes);
                }
                let mut buf = [0u8; 2048];
                for (link, sock) in sh.sockets.clone().iter().enumerate() {
                    crate::prefilter::drain_ready(sock, &sh.source_filter.clone(), &mut buf, |b| {
                        sh.node.handle_datagram(now(), link, b)
                    });
                }
                sh.node.handle_timeout(now())
            }
            Some((req, reply)) = commands.recv() => {
                let stop = req == Request::Stop;
                let _ = reply.send(sh.command(req));
                if stop && stop_deadline.is_none() {
                    stop_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                }
            }
            Some(sig) = signals.recv() => match sig {
                Signal::Terminate => {
                    info!("leaving the cluster gracefully");
                    sh.node.stop(now());
                    stop_deadline.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(5));
                }
                Signal::Reload => {
                    sh.reload();
                    for c in checks.drain(..) {
                        c.abort();
                    }
                    checks = spawn_checks(&sh.cfg);
                    // The tracker (and the core's health drain) carry over:
                    // the VIP list cannot change by reload. With no check
                    // left, nothing can end a health drain but this.
                    if sh.cfg.vips.iter().all(|v| v.health.is_none()) {
                        sh.node.set_health_drain(now(), false);
                    }
                }
            },
            Some(outcome) = health_rx.recv() => {
                let vip = sh.cfg.vips.get(outcome.vip).map(|v| (v.address, v.health.clone()));
                if let Some((addr, Some(h))) = vip {
                    match tracker.record(outcome, &h) {
                        // The core keeps the health reason apart from an
                        // operator drain or a failback hold: recovering ends
                        // only its own drain, and a reload keeps it.
                        crate::health::Action::Drain => {
                            warn!("health check of VIP {addr} failed {} times in a row: draining this node", h.fall);
                            sh.node.set_health_drain(now(), true);
                        }
                        crate::health::Action::Resume => {
                            info!("health checks pass again ({} in a row): ending the health drain", h.rise);
                            sh.node.set_health_drain(now(), false);
                        }
                        _ => {}
                    }
                }
            }
            _ = liveness.tick() => {
                if sh.check_liveness() {
                    stop_deadline.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(5));
                }
            }
            _ = flows.tick() => {
                sh.report_flows();
                if let Some(dp) = &mut sh.dp {
                    dp.flush_logs();
                }
            }
            _ = tokio::time::sleep_until(give_up) => {
                warn!("the cluster did not confirm our leave in time; leaving anyway");
                sh.stopped = true;
            }
        }
        sh.drive();
        if sh.stopped {
            return sh;
        }
    }
}

fn bind_sockets(cfg: &Config) -> Result<Vec<std::net::UdpSocket>> {
    cfg.listen
        .iter()
        .map(|a| {
            let s = std::net::UdpSocket::bind(a)
                .with_context(|| format!("cluster.listen: binding {a}"))?;
            s.set_nonblocking(true)?;
            crate::prefilter::widen_receive_buffer(&s);
            Ok(s)
        })
        .collect()
}

/// Runs the agent until it leaves the cluster. Config errors return
/// [`Exit`] code 2 before anything on the host is touched.
pub fn run(cfg_path: &Path) -> Result<(), (i32, anyhow::Error)> {
    let cfg = Config::load(cfg_path).map_err(|e| (2, e.into()))?;
    // Held until the agent exits: one agent per node (see `lock.rs`). Taken
    // before the state file is read, so a second agent touches nothing.
    let _lock =
        crate::lock::NodeLock::acquire(&cfg.state_dir, cfg.node_id).map_err(|e| (1, e.into()))?;
    let (plan, node, key) = prepare(&cfg).map_err(|e| (2, e))?;
    let std_sockets = bind_sockets(&cfg).map_err(|e| (1, e))?;
    let control = server_socket(&cfg).map_err(|e| (1, e))?;
    info!(
        "xnlb agent: node {} ({:?}) of cluster {:?}, {} members, {} VIPs, {} buckets",
        cfg.node_id,
        cfg.role,
        cfg.cluster_name,
        cfg.members.len(),
        cfg.vips.len(),
        cfg.buckets
    );

    // Touch the host: data plane first (so VIP traffic is filtered before
    // the VIP is on lo), then the host side.
    let (dp, xdp) = if cfg.role == Role::Witness {
        (None, None)
    } else {
        let (dp, how) = setup_dataplane(&cfg, &plan).map_err(|e| (1, e))?;
        (Some(dp), Some(how))
    };
    let host = match Host::setup(&cfg) {
        Ok(h) => h,
        Err(e) => return Err((1, e.into())),
    };

    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(64);
    let (sig_tx, sig_rx) = mpsc::channel::<Signal>(8);
    let prio = cfg.heartbeat_priority;
    let metrics_addr = cfg.metrics;
    let source_filter = crate::prefilter::SourceFilter::new(&cfg);
    let started = now();
    let proto_thread = std::thread::Builder::new()
        .name("xnlb-proto".into())
        .spawn(move || {
            raise_priority(prio);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let sockets = std_sockets
                    .into_iter()
                    .map(|s| UdpSocket::from_std(s).map(Arc::new))
                    .collect::<std::io::Result<Vec<_>>>()?;
                let (written_tx, written_rx) = mpsc::unbounded_channel();
                let writer = Writer::spawn(state_file(&cfg), written_tx)?;
                let sh = Shell {
                    key,
                    writer,
                    durable: 0,
                    held: VecDeque::new(),
                    write_failing: false,
                    peers: peer_addrs(&cfg),
                    cfg,
                    plan,
                    node,
                    dp,
                    host,
                    xdp,
                    sockets,
                    failovers: Failovers {
                        started,
                        dead: Default::default(),
                        quorum: false,
                        pending: Vec::new(),
                        samples_ms: Vec::new(),
                    },
                    installed: None,
                    stopped: false,
                    source_filter,
                    fatal: None,
                };
                let mut sh = protocol_loop(sh, cmd_rx, sig_rx, written_rx).await;
                sh.teardown();
                match sh.fatal {
                    Some(why) => Err(std::io::Error::other(format!("stopped serving: {why}"))),
                    None => Ok::<(), std::io::Error>(()),
                }
            })
        })
        .map_err(|e| (1, e.into()))?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (1, e.into()))?;
    rt.block_on(async move {
        let listener = server::bind(&control).map_err(|e| {
            (
                1,
                anyhow::anyhow!("control socket {}: {e}", control.display()),
            )
        })?;
        tokio::spawn(server::serve(listener, cmd_tx.clone()));
        if let Some(addr) = metrics_addr {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    info!("metrics on http://{addr}/metrics");
                    tokio::spawn(crate::metrics::serve(l, cmd_tx.clone()));
                }
                Err(e) => warn!("control.metrics {addr}: {e}; metrics disabled"),
            }
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| (1, e.into()))?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| (1, e.into()))?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| (1, e.into()))?;
        loop {
            let sig = tokio::select! {
                _ = term.recv() => Signal::Terminate,
                _ = int.recv() => Signal::Terminate,
                _ = hup.recv() => Signal::Reload,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if proto_thread.is_finished() { break; }
                    continue;
                }
            };
            if sig_tx.send(sig).await.is_err() {
                break;
            }
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        match proto_thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err((1, e.into())),
            Err(_) => Err((1, anyhow::anyhow!("the protocol thread panicked"))),
        }
    })
}

fn server_socket(cfg: &Config) -> Result<PathBuf> {
    if cfg.socket.as_os_str().is_empty() {
        bail!("control.socket is empty");
    }
    Ok(cfg.socket.clone())
}

/// Requests status through the channel (for the metrics endpoint).
pub async fn status_via(commands: &mpsc::Sender<Command>) -> Option<StatusView> {
    let (tx, rx) = oneshot::channel();
    commands.send((Request::Status, tx)).await.ok()?;
    let resp = rx.await.ok()?;
    serde_json::from_value(resp.data).ok()
}
