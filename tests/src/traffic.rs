//! Client traffic for the benchmarks and the soak: streams of UDP probes with
//! unique ids, each from its own source port, sent on a schedule and answered
//! (or not) concurrently, so an outage is measured by the probes it swallowed
//! rather than by one blocking probe at a time.
//!
//! The streams run on their own threads inside a namespace ([`spawn_in`]),
//! so the caller keeps `&mut Cluster` free to inject faults meanwhile.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{spawn_in, Netns};

/// One UDP probe and what became of it, as every [`ProbeThread`] reports it.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The unique id it carried (the servers record it).
    pub id: u64,
    /// Its source port.
    pub port: u16,
    /// When it was sent.
    pub sent: Instant,
    /// When it was sent, since its stream or prober started.
    pub at: Duration,
    /// The node that answered; `None` if no answer came within the timeout.
    pub node: Option<u8>,
    /// How long the answer took (`None` with `node`).
    pub rtt: Option<Duration>,
}

impl Probe {
    /// A probe sent at `sent`, `at` into its run, not answered (yet).
    pub fn unanswered(id: u64, port: u16, sent: Instant, at: Duration) -> Probe {
        Probe {
            id,
            port,
            sent,
            at,
            node: None,
            rtt: None,
        }
    }
}

/// What a UDP probe stream sends.
#[derive(Clone, Debug)]
pub struct UdpStream {
    /// Source address (must be configured in the namespace).
    pub src: Ipv4Addr,
    /// Destination (the VIP and the servers' UDP port).
    pub dst: SocketAddr,
    /// One probe every `interval`.
    pub interval: Duration,
    /// An answer later than this counts as none.
    pub timeout: Duration,
    /// Source ports to cycle through (each probe takes the next free one):
    /// many ports means many flows, spread over all buckets.
    pub ports: std::ops::Range<u16>,
}

/// Sends probes until `stop` is set or `until` passes, then waits out the
/// ones still in flight. Ids come from `ids` (shared, so ids stay unique
/// across streams of one cluster). Runs on the calling thread, which must
/// already be in the client's namespace (see [`spawn_in`]).
pub fn run_udp_stream(
    spec: &UdpStream,
    ids: &AtomicU64,
    stop: &AtomicBool,
    until: Instant,
) -> Vec<Probe> {
    let started = Instant::now();
    let mut probes: Vec<Probe> = Vec::new();
    // (socket, index into probes)
    let mut pending: Vec<(UdpSocket, usize)> = Vec::new();
    let span = (spec.ports.end - spec.ports.start).max(1);
    let mut next_port = 0u16;
    let mut next_send = Instant::now();
    let mut sending = true;
    // Bounded: stops sending at `until` (or `stop`), and every pending probe
    // expires after `timeout`.
    loop {
        let now = Instant::now();
        if sending && (now >= until || stop.load(Ordering::Relaxed)) {
            sending = false;
        }
        if !sending && pending.is_empty() {
            break;
        }
        if sending && now >= next_send {
            // Take the next port that binds (one still in flight is busy).
            for _ in 0..span {
                let port = spec.ports.start + next_port;
                next_port = (next_port + 1) % span;
                let Ok(s) = UdpSocket::bind(SocketAddrV4::new(spec.src, port)) else {
                    continue;
                };
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                probes.push(Probe::unanswered(id, port, sent, sent - started));
                // Could not even send: an unanswered probe all the same.
                if s.set_nonblocking(true).is_ok() && s.send_to(&id.to_le_bytes(), spec.dst).is_ok()
                {
                    pending.push((s, probes.len() - 1));
                }
                break;
            }
            next_send += spec.interval;
            // Do not try to catch up after a stall: keep the cadence honest.
            if next_send < Instant::now() {
                next_send = Instant::now() + spec.interval;
            }
        }
        // Expire probes past their timeout.
        let now = Instant::now();
        pending.retain(|(_, i)| now.duration_since(probes[*i].sent) < spec.timeout);
        // Wait for an answer, the next send or the next expiry.
        let mut wake = now + Duration::from_millis(5);
        if sending {
            wake = wake.min(next_send);
        }
        if let Some(first) = pending
            .iter()
            .map(|(_, i)| probes[*i].sent + spec.timeout)
            .min()
        {
            wake = wake.min(first);
        }
        let ms = wake
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000) as i32;
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|(s, _)| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd for the sockets we own.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n > 0 {
            let mut done = Vec::new();
            for (k, fd) in fds.iter().enumerate() {
                if fd.revents & libc::POLLIN == 0 {
                    continue;
                }
                let (s, i) = &pending[k];
                let mut buf = [0u8; 16];
                if let Ok((len, _)) = s.recv_from(&mut buf) {
                    if len >= 1 {
                        let p = &mut probes[*i];
                        p.node = Some(buf[0]);
                        p.rtt = Some(p.sent.elapsed());
                        done.push(k);
                    }
                }
            }
            for k in done.into_iter().rev() {
                pending.swap_remove(k);
            }
        }
    }
    probes
}

/// Probes sent from a thread of their own in a namespace, until
/// [`ProbeThread::finish`] (or drop) tells it to stop: a [`UdpStream`]
/// ([`ProbeThread::udp_stream`]) or the cluster harness's one-at-a-time
/// prober ([`crate::cluster::Cluster::prober`]).
pub struct ProbeThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Probe>>>,
}

impl ProbeThread {
    /// Runs `probe` on a thread in `ns`; it must return soon after the flag
    /// it is given is set.
    pub fn spawn(
        ns: &Netns,
        probe: impl FnOnce(&AtomicBool) -> Vec<Probe> + Send + 'static,
    ) -> ProbeThread {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = spawn_in(ns, move || probe(&flag));
        ProbeThread {
            stop,
            thread: Some(thread),
        }
    }

    /// Starts `spec` in `ns`; it sends until [`ProbeThread::finish`] or
    /// `max` passes.
    pub fn udp_stream(ns: &Netns, spec: UdpStream, ids: Arc<AtomicU64>, max: Duration) -> Self {
        let until = Instant::now() + max;
        ProbeThread::spawn(ns, move |stop| run_udp_stream(&spec, &ids, stop, until))
    }

    /// Stops sending, waits for the probes in flight, returns them all.
    pub fn finish(mut self) -> Vec<Probe> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("probe thread panicked"))
            .unwrap_or_default()
    }
}

impl Drop for ProbeThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `q`-quantile (0..=1) of `v` by nearest rank; `None` if empty.
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

/// The median of `v` (0 if empty).
pub fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5).unwrap_or(0.0)
}

/// Spins on every CPU at normal priority until dropped: the soak runs the
/// cluster on a machine with no idle time, where a starved heartbeat would
/// show up as a spurious failover.
pub struct Burners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

impl Burners {
    /// One busy thread per CPU.
    pub fn start(n: usize) -> Burners {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let s = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !s.load(Ordering::Relaxed) {
                        for _ in 0..100_000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                        }
                    }
                    x
                })
            })
            .collect();
        Burners { stop, threads }
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
