//! The protocol thread's event loop: one `select!` over received
//! datagrams, the core's timer, state-file write reports, control
//! requests, operator signals, health-check outcomes, the liveness check
//! and the flow count, each handed to the [`Shell`]; the loop ends when the
//! node has left the cluster.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::shell::Shell;
use super::{now, ServiceState, Signal};
use crate::config::Config;
use crate::control::server::Command;
use crate::control::{Request, Response};
use crate::dataplane::boottime_ns;
use crate::health::{Action, Outcome, Tracker};
use crate::state_file::Written;

/// Runs the protocol thread at SCHED_FIFO priority `prio` (0: leave it).
pub(super) fn raise_priority(prio: u8) {
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

/// How long a leaving node waits for the cluster to confirm its leave.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One task per heartbeat socket: datagrams from members, tagged with
/// their link, onto one channel (strangers are dropped and counted here).
fn spawn_receivers(sh: &Shell) -> mpsc::Receiver<(usize, Vec<u8>)> {
    let (dgram_tx, dgrams) = mpsc::channel::<(usize, Vec<u8>)>(1024);
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
    dgrams
}

/// Feeds a health-check outcome to `tracker`; a verdict drains or resumes
/// the node. The core keeps the health reason apart from an operator drain
/// or a failback hold: recovering ends only its own drain, and a reload
/// keeps it.
fn on_health(sh: &mut Shell, tracker: &mut Tracker, outcome: Outcome) {
    let vip = sh
        .cfg
        .vips
        .get(outcome.vip)
        .map(|v| (v.address, v.health.clone()));
    let Some((addr, Some(h))) = vip else {
        return;
    };
    match tracker.record(outcome, &h) {
        Action::Drain => {
            warn!(
                "health check of VIP {addr} failed {} times in a row: draining this node",
                h.fall
            );
            sh.node.set_health_drain(now(), true);
        }
        Action::Resume => {
            info!(
                "health checks pass again ({} in a row): ending the health drain",
                h.rise
            );
            sh.node.set_health_drain(now(), false);
        }
        _ => {}
    }
}

/// A reload (SIGHUP or `xnlb reload`), announced to the service manager
/// before and after; an applied one restarts the health checks from the
/// new configuration. Returns what [`Shell::reload`] says.
fn reload(
    sh: &mut Shell,
    checks: &mut Vec<JoinHandle<()>>,
    spawn_checks: &impl Fn(&Config) -> Vec<JoinHandle<()>>,
) -> Result<String, String> {
    (sh.notify)(ServiceState::Reloading);
    let outcome = sh.reload();
    if outcome.is_ok() {
        for c in checks.drain(..) {
            c.abort();
        }
        *checks = spawn_checks(&sh.cfg);
        // The tracker (and the core's health drain) carry over: the VIP
        // list cannot change by reload. With no check left, nothing can
        // end a health drain but this.
        if sh.cfg.vips.iter().all(|v| v.health.is_none()) {
            sh.node.set_health_drain(now(), false);
        }
    }
    (sh.notify)(ServiceState::Reloaded(outcome.clone()));
    outcome
}

/// The protocol thread's loop: returns the shell once the node has left.
pub(super) async fn protocol_loop(
    mut sh: Shell,
    mut commands: mpsc::Receiver<Command>,
    mut signals: mpsc::Receiver<Signal>,
    mut written: mpsc::UnboundedReceiver<Written>,
) -> Shell {
    let mut dgrams = spawn_receivers(&sh);
    let (health_tx, mut health_rx) = mpsc::channel::<Outcome>(64);
    let spawn_checks = |cfg: &Config| -> Vec<JoinHandle<()>> {
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
    let mut tracker = Tracker::new(sh.cfg.vips.len());
    // How often the socket table is read while a handoff is open: a drain
    // ends within this (plus one epoch) of its last connection closing.
    let mut flows = tokio::time::interval(Duration::from_millis(250));
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
                let answer = if req == Request::Reload {
                    match reload(&mut sh, &mut checks, &spawn_checks) {
                        Ok(done) => Response::ok(done),
                        Err(why) => Response::err(why),
                    }
                } else {
                    sh.command(req)
                };
                let _ = reply.send(answer);
                if stop && stop_deadline.is_none() {
                    stop_deadline = Some(tokio::time::Instant::now() + LEAVE_TIMEOUT);
                }
            }
            Some(sig) = signals.recv() => match sig {
                Signal::Terminate => {
                    info!("leaving the cluster gracefully");
                    sh.leaving();
                    sh.node.stop(now());
                    stop_deadline.get_or_insert(tokio::time::Instant::now() + LEAVE_TIMEOUT);
                }
                Signal::Reload => {
                    let _ = reload(&mut sh, &mut checks, &spawn_checks);
                }
            },
            Some(outcome) = health_rx.recv() => on_health(&mut sh, &mut tracker, outcome),
            _ = liveness.tick() => {
                if sh.check_liveness() {
                    stop_deadline.get_or_insert(tokio::time::Instant::now() + LEAVE_TIMEOUT);
                }
            }
            _ = flows.tick() => {
                sh.report_flows();
                sh.learn_member_routes();
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
