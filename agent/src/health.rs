//! Per-VIP health checks: while a VIP's service fails its check this node
//! drains (finishes its connections, takes no new ones), and it resumes when
//! the check passes again, like a load balancer taking a dead backend out.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::debug;

use crate::config::{Health, HealthProbe};

/// One probe result for VIP `vip`.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Index of the VIP in the config.
    pub vip: usize,
    /// Whether the probe passed.
    pub ok: bool,
}

/// Runs one probe.
pub async fn probe(h: &Health) -> bool {
    let timeout = Duration::from_millis(h.timeout_ms);
    match &h.probe {
        HealthProbe::Tcp(addr) => matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        ),
        HealthProbe::Command(cmd) => {
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .kill_on_drop(true)
                .status();
            matches!(tokio::time::timeout(timeout, child).await, Ok(Ok(st)) if st.success())
        }
    }
}

/// Probes `h` every interval and sends the outcomes (until the receiver goes).
pub async fn run(vip: usize, h: Health, out: mpsc::Sender<Outcome>) {
    let mut tick = tokio::time::interval(Duration::from_millis(h.interval_ms));
    loop {
        tick.tick().await;
        let ok = probe(&h).await;
        debug!(
            "health check of VIP #{vip}: {}",
            if ok { "ok" } else { "failed" }
        );
        if out.send(Outcome { vip, ok }).await.is_err() {
            return;
        }
    }
}

/// Consecutive-result bookkeeping (`fall` failures drain, `rise` successes
/// resume), per VIP.
#[derive(Debug, Default)]
pub struct Tracker {
    streaks: Vec<(u32, u32)>,
    failing: Vec<bool>,
}

/// What the node should do after an outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing changed.
    None,
    /// The VIP just became unhealthy: drain.
    Drain,
    /// Every VIP is healthy again: resume.
    Resume,
}

impl Tracker {
    /// A tracker for `n` VIPs, all presumed healthy.
    pub fn new(n: usize) -> Tracker {
        Tracker {
            streaks: vec![(0, 0); n],
            failing: vec![false; n],
        }
    }

    /// Records an outcome for a VIP with check `h`.
    pub fn record(&mut self, o: Outcome, h: &Health) -> Action {
        let (Some(streak), Some(failing)) = (
            self.streaks.get_mut(o.vip),
            self.failing.get(o.vip).copied(),
        ) else {
            return Action::None;
        };
        if o.ok {
            *streak = (streak.0 + 1, 0);
        } else {
            *streak = (0, streak.1 + 1);
        }
        if !failing && streak.1 >= h.fall {
            self.failing[o.vip] = true;
            return Action::Drain;
        }
        if failing && streak.0 >= h.rise {
            self.failing[o.vip] = false;
            if !self.failing.contains(&true) {
                return Action::Resume;
            }
        }
        Action::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> Health {
        Health {
            probe: HealthProbe::Command("true".into()),
            interval_ms: 10,
            timeout_ms: 10,
            fall: 3,
            rise: 2,
        }
    }

    #[test]
    fn fall_failures_drain_and_rise_successes_resume() {
        let mut t = Tracker::new(2);
        let o = |vip, ok| Outcome { vip, ok };
        assert_eq!(t.record(o(0, false), &h()), Action::None);
        assert_eq!(t.record(o(0, false), &h()), Action::None);
        assert_eq!(t.record(o(0, false), &h()), Action::Drain);
        assert_eq!(t.record(o(0, false), &h()), Action::None);
        for _ in 0..3 {
            t.record(o(1, false), &h());
        }
        assert_eq!(t.record(o(0, true), &h()), Action::None);
        assert_eq!(
            t.record(o(0, true), &h()),
            Action::None,
            "VIP 1 still fails"
        );
        t.record(o(1, true), &h());
        assert_eq!(t.record(o(1, true), &h()), Action::Resume);
    }

    #[tokio::test]
    async fn probes_report_tcp_and_command_results() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut hc = h();
        hc.timeout_ms = 500;
        hc.probe = HealthProbe::Tcp(addr);
        assert!(probe(&hc).await);
        drop(l);
        assert!(!probe(&hc).await);
        hc.probe = HealthProbe::Command("exit 3".into());
        assert!(!probe(&hc).await);
        hc.probe = HealthProbe::Command("true".into());
        assert!(probe(&hc).await);
    }
}
