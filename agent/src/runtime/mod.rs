//! The agent's IO shell around the protocol core.
//!
//! One dedicated thread (optionally SCHED_FIFO, as corosync does) owns the
//! protocol [`Node`](xnlb_proto::Node), the heartbeat sockets, its timer and
//! the data plane, so heartbeats keep their timing when the host's CPUs
//! are saturated. The calling thread serves the control socket and the
//! metrics endpoint, forwards operator signals to the protocol thread
//! through a channel, and returns when the protocol thread reports its end.
//!
//! Shape:
//! - this file: the entry points, [`run`] (the `xnlb agent` command) and
//!   [`run_with`] (the same with the caller's [`Dependencies`] and signal
//!   channel, for tests), and the two threads' wiring;
//! - `startup.rs`: what is checked before the host is touched, then the
//!   data plane, then the host;
//! - `shell.rs`: the [`Shell`](shell::Shell) that applies the core's events
//!   and sends or holds its datagrams; `commands.rs`: control requests and
//!   reloads;
//! - `event_loop.rs`: the protocol thread's `select!` loop;
//! - `persistence.rs`: the state file, the restored node and the datagrams
//!   that wait for a durable write; `failovers.rs`: MTTR and availability;
//! - `error.rs`: [`RunError`] and its exit status.

mod commands;
mod diagnose;
mod error;
mod event_loop;
mod failovers;
mod persistence;
mod shell;
mod startup;

use std::path::Path;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use xnlb_proto::Time;

pub use error::RunError;

use crate::config::Config;
use crate::control::server::{self, Command};
use crate::control::Request;
use crate::dataplane::{boottime_ns, Dataplane};
use crate::host::{Host, HostError};
use crate::plan::Plan;
use crate::prefilter::SourceFilter;
use crate::state_file::Writer;
use crate::status::StatusView;
use failovers::Failovers;
use persistence::{state_file, Outbox};
use shell::{Peers, Shell};
use startup::{ShellParts, Started};

/// What the operator asks of a running agent, besides control requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM / SIGINT: leave the cluster gracefully and exit.
    Terminate,
    /// SIGHUP: reload the configuration file.
    Reload,
}

/// Where the agent is in its life, for the service manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    /// Serving: the control socket answers.
    Ready,
    /// A reload (SIGHUP or `xnlb reload`) has begun.
    Reloading,
    /// The reload ended, applied (`Ok`, what was reloaded) or refused
    /// (`Err`, why): serving again either way, with the running
    /// configuration.
    Reloaded(Result<String, String>),
    /// Leaving: the protocol thread has ended.
    Stopping,
}

/// Sets up a serving node's data plane: the data plane and how it is
/// attached (for status), or `None` to run without one.
pub type SetupDataplane = fn(&Config, &Plan) -> Result<Option<(Dataplane, String)>, RunError>;

/// What [`run_with`] takes from its environment instead of reaching for it,
/// so that a test can run an agent in-process without root.
/// [`Dependencies::system`] is what `xnlb agent` uses.
#[derive(Clone, Copy)]
pub struct Dependencies {
    /// Loads, adopts and attaches the data plane of a node that serves
    /// (never called for a witness); `Ok(None)` runs without one.
    pub dataplane: SetupDataplane,
    /// Sets the host up for serving (VIPs on `lo`, sysctls, cluster MACs).
    pub host: fn(&Config) -> Result<Host, HostError>,
    /// Tells the service manager (systemd `Type=notify`).
    pub notify: fn(ServiceState),
}

impl Dependencies {
    /// The real thing: the embedded XDP program, the host's network setup,
    /// `sd_notify`.
    pub fn system() -> Dependencies {
        Dependencies {
            dataplane: startup::setup_dataplane,
            host: Host::setup,
            notify: sd_notify_state,
        }
    }
}

/// Tells systemd (`NOTIFY_SOCKET`; nothing without it) what `state` means
/// for a `Type=notify` unit: `READY=1`, `RELOADING=1` with the
/// `MONOTONIC_USEC=` newer systemd requires, then `READY=1` again with a
/// `STATUS=` line saying whether the reload was applied, or why not (what
/// `systemctl status xnlb` shows), and `STOPPING=1`.
fn sd_notify_state(state: ServiceState) {
    use sd_notify::NotifyState;
    let states = match &state {
        ServiceState::Ready => vec![NotifyState::Ready],
        ServiceState::Reloading => {
            let mut v = vec![NotifyState::Reloading];
            v.extend(NotifyState::monotonic_usec_now().ok());
            v
        }
        ServiceState::Reloaded(Ok(line) | Err(line)) => {
            vec![NotifyState::Status(line), NotifyState::Ready]
        }
        ServiceState::Stopping => vec![NotifyState::Stopping],
    };
    let _ = sd_notify::notify(false, &states);
}

/// Now on the clock the core and the data plane share.
pub(super) fn now() -> Time {
    Time(boottime_ns())
}

/// Runs the agent (`xnlb agent`) until it leaves the cluster: loads the
/// configuration, takes SIGTERM, SIGINT and SIGHUP, and runs
/// [`run_with`] with the [system](Dependencies::system) dependencies.
pub fn run(cfg_path: &Path) -> Result<(), RunError> {
    let cfg = Config::load(cfg_path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::io("starting the main thread's runtime"))?;
    rt.block_on(async move {
        let signals = unix_signals()?;
        run_with(cfg, Dependencies::system(), signals).await
    })
}

/// SIGTERM and SIGINT as [`Signal::Terminate`], SIGHUP as
/// [`Signal::Reload`], on a channel.
fn unix_signals() -> Result<mpsc::Receiver<Signal>, RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind| signal(kind).map_err(RunError::io("installing a signal handler"));
    let mut term = install(SignalKind::terminate())?;
    let mut int = install(SignalKind::interrupt())?;
    let mut hup = install(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                _ = term.recv() => Signal::Terminate,
                _ = int.recv() => Signal::Terminate,
                _ = hup.recv() => Signal::Reload,
            };
            if tx.send(sig).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Runs an agent for `cfg` until it leaves the cluster, in the spirit of
/// mini-redis's `run(listener, shutdown)`: the pieces that need root or
/// the process's environment come from `deps`, and operator signals from
/// `signals` ([`Signal::Terminate`] leaves gracefully; a closed channel
/// counts as one). Returns once the protocol thread has ended and the host
/// is undone; runs the control socket and the metrics endpoint on the
/// caller's runtime meanwhile.
pub async fn run_with(
    cfg: Config,
    deps: Dependencies,
    mut signals: mpsc::Receiver<Signal>,
) -> Result<(), RunError> {
    let Started {
        lock: _lock,
        control,
        parts,
    } = startup::start(cfg, &deps)?;
    let metrics = parts.cfg.metrics;
    // The path this agent bound, removed when it ends: never the path a
    // later configuration names (a reload cannot change it, and another
    // agent's socket must survive this one's exit).
    let bound_socket = parts.cfg.socket.clone();
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>(64);
    let (sig_tx, sig_rx) = mpsc::channel::<Signal>(8);
    let (done_tx, mut done) = oneshot::channel();
    let proto_thread = std::thread::Builder::new()
        .name("xnlb-proto".into())
        .spawn(move || {
            // The receiver is gone only if run_with was dropped.
            let _ = done_tx.send(protocol_thread(parts, deps.notify, cmd_rx, sig_rx));
        })
        .map_err(RunError::io("starting the protocol thread"))?;

    let mut tasks = vec![tokio::spawn(server::serve(control, cmd_tx.clone()))];
    if let Some(addr) = metrics {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                info!("metrics on http://{addr}/metrics");
                tasks.push(tokio::spawn(crate::metrics::serve(l, cmd_tx.clone())));
            }
            Err(e) => warn!("control.metrics {addr}: {e}; metrics disabled"),
        }
    }
    (deps.notify)(ServiceState::Ready);
    let mut signals_open = true;
    let ended = loop {
        tokio::select! {
            ended = &mut done => break ended,
            sig = signals.recv(), if signals_open => {
                let sig = sig.unwrap_or_else(|| {
                    signals_open = false;
                    Signal::Terminate
                });
                // A closed channel means the thread is ending: its report
                // follows.
                let _ = sig_tx.send(sig).await;
            }
        }
    };
    (deps.notify)(ServiceState::Stopping);
    for t in tasks {
        t.abort();
    }
    let _ = std::fs::remove_file(&bound_socket);
    match (ended, proto_thread.join()) {
        (Ok(result), Ok(())) => result,
        _ => Err(RunError::Panicked),
    }
}

/// The protocol thread: its own runtime, the [`Shell`], the event loop,
/// then the teardown. Its result is the agent's.
fn protocol_thread(
    parts: ShellParts,
    notify: fn(ServiceState),
    commands: mpsc::Receiver<Command>,
    signals: mpsc::Receiver<Signal>,
) -> Result<(), RunError> {
    event_loop::raise_priority(parts.cfg.heartbeat_priority);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RunError::io("starting the protocol thread's runtime"))?;
    rt.block_on(async move {
        let sockets = parts
            .heartbeat
            .into_iter()
            .map(|s| UdpSocket::from_std(s).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(RunError::io("registering the heartbeat sockets"))?;
        let (written_tx, written_rx) = mpsc::unbounded_channel();
        let writer = Writer::spawn(state_file(&parts.cfg), written_tx)
            .map_err(RunError::io("starting the state file writer"))?;
        let (dp, xdp) = parts.dataplane.unzip();
        let flood = match (&dp, &parts.cfg.interface) {
            (Some(_), Some(interface)) => {
                Some(crate::flood_probe::start(crate::flood_probe::Plan {
                    cluster: parts.plan.table.seed,
                    member: parts.cfg.node_id,
                    interface: interface.clone(),
                    vips: parts
                        .cfg
                        .vips
                        .iter()
                        // Routed VIPs reach the nodes by their own
                        // addresses: no cluster MAC to probe.
                        .filter(|v| v.mode == crate::config::VipMode::Flood)
                        .map(|v| (v.address, crate::host::cluster_mac(v.address, v.mac_mode)))
                        .collect(),
                }))
            }
            _ => None,
        };
        let mut announcer = crate::announce::for_config(&parts.cfg).map_err(RunError::io(
            "creating the routed-mode announcement device (xnlb-routed)",
        ))?;
        if let Some(a) = &mut announcer {
            a.membership.attached = dp.is_some();
        }
        let sh = Shell {
            flood,
            started: std::time::Instant::now(),
            peers: Peers::new(&parts.cfg),
            source_filter: SourceFilter::new(&parts.cfg),
            failovers: Failovers::new(now()),
            cfg: parts.cfg,
            plan: parts.plan,
            node: parts.node,
            dp,
            host: parts.host,
            xdp,
            key: parts.key,
            writer,
            outbox: Outbox::default(),
            sockets,
            installed: None,
            stopped: false,
            fatal: None,
            notify,
            announcer,
            member_routes: Default::default(),
            tunnel_local: None,
        };
        let mut sh = event_loop::protocol_loop(sh, commands, signals, written_rx).await;
        sh.teardown();
        match sh.fatal {
            Some(why) => Err(RunError::Stopped(why)),
            None => Ok(()),
        }
    })
}

/// Requests status through the channel (for the metrics endpoint).
pub async fn status_via(commands: &mpsc::Sender<Command>) -> Option<StatusView> {
    let (tx, rx) = oneshot::channel();
    commands.send((Request::Status, tx)).await.ok()?;
    let resp = rx.await.ok()?;
    serde_json::from_value(resp.data).ok()
}

#[cfg(test)]
mod tests;
