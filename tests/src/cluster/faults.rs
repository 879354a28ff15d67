//! Faults a test injects into a running cluster, and their repair.

use std::time::{Duration, Instant};

use super::Cluster;

impl Cluster {
    /// SIGKILL node `id`'s agent (its XDP program and lease stay behind).
    pub fn kill(&mut self, id: u8) {
        self.signal(id, libc::SIGKILL);
        if let Some(mut c) = self.node_mut(id).agent.take() {
            let _ = c.wait();
        }
    }

    /// SIGSTOP node `id`'s agent: a frozen process.
    pub fn freeze(&mut self, id: u8) {
        self.signal(id, libc::SIGSTOP);
    }

    /// SIGCONT node `id`'s agent.
    pub fn thaw(&mut self, id: u8) {
        self.signal(id, libc::SIGCONT);
    }

    /// SIGTERM node `id`'s agent without waiting for it (see
    /// [`Cluster::terminate`], [`Cluster::wait_exit`]).
    pub fn sigterm(&mut self, id: u8) {
        self.signal(id, libc::SIGTERM);
    }

    /// SIGTERM node `id`'s agent and wait for it to leave (at most 10 s).
    pub fn terminate(&mut self, id: u8) -> Option<std::process::ExitStatus> {
        self.signal(id, libc::SIGTERM);
        self.wait_exit(id, Duration::from_secs(10))
    }

    /// Waits up to `timeout` for node `id`'s agent to exit on its own (then
    /// kills it) and returns its exit status.
    pub fn wait_exit(&mut self, id: u8, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.node_mut(id).agent.take()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Cuts node `id`'s heartbeat link (eth1) in both directions; client
    /// traffic still reaches it on eth0.
    pub fn cut_heartbeats(&self, id: u8) {
        self.ns(id).sh("ip link set eth1 down");
    }

    /// Restores what [`Cluster::cut_heartbeats`] cut.
    pub fn heal_heartbeats(&self, id: u8) {
        self.ns(id).sh("ip link set eth1 up");
    }

    /// Drops only node `id`'s outgoing heartbeats: it still hears the others
    /// (an asymmetric partition).
    pub fn drop_outgoing_heartbeats(&self, id: u8) {
        self.ns(id).sh("nft add table inet xnlbtest && \
             nft add chain inet xnlbtest out '{ type filter hook output priority 0; }' && \
             nft add rule inet xnlbtest out udp dport 7450 drop");
    }

    /// Undoes [`Cluster::drop_outgoing_heartbeats`].
    pub fn allow_outgoing_heartbeats(&self, id: u8) {
        self.ns(id).sh("nft delete table inet xnlbtest");
    }
}
