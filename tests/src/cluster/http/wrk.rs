//! The load generators: two wrk processes in the client namespace against
//! nginx on the VIP, one holding keep-alive connections open for the whole
//! run, one opening a new connection for every request (`Connection:
//! close`), and their results.
//!
//! wrk counts socket errors (connect, read, write), responses later than
//! its `--timeout` (as `timeout`) and statuses >= 400. Its latency is
//! measured from writing a request to reading the response, so a stalled
//! keep-alive connection shows in the maximum, but a new connection's
//! connect time (a SYN retransmitted after a fault) does not: that shows
//! in the rate and in the servers' logs. A connection the server closes
//! silently is reopened without an error count, and a request never
//! answered is never counted at all: the servers' logs (one connection per
//! keep-alive client, each still answering at the end) cover both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use super::{HTTP_PORT, KEEPALIVE_PATH, NEW_CONN_PATH};
use crate::cluster::VIP;
use crate::netns::Netns;

/// How much load to run.
#[derive(Clone, Copy, Debug)]
pub struct LoadSpec {
    /// Keep-alive connections, open for the whole run.
    pub keepalive_conns: u32,
    /// Pause before each request on a keep-alive connection (ms), so the
    /// keep-alive load leaves the CPUs to the new connections.
    pub keepalive_delay_ms: u32,
    /// Concurrent new-connection clients (each opens, asks, closes, again).
    pub new_conns: u32,
    /// wrk threads for the new connections.
    pub new_threads: u32,
    /// The longest both may run, whole seconds (wrk's unit); the test
    /// ends them sooner with [`Load::stop`].
    pub max_duration_s: u32,
    /// wrk's `--timeout`: a response later than this counts as an error.
    /// Longer than any planned stall, so a stall shows as latency.
    pub timeout_s: u32,
}

/// One wrk run's result.
#[derive(Clone, Debug, Default)]
pub struct WrkReport {
    /// Connections wrk kept busy.
    pub connections: u32,
    /// Responses received.
    pub requests: u64,
    /// How long it ran.
    pub duration: Duration,
    /// Connect errors.
    pub connect: u64,
    /// Read errors (a reset, a malformed response).
    pub read: u64,
    /// Write errors.
    pub write: u64,
    /// Responses later than `--timeout`.
    pub timeout: u64,
    /// Responses with status >= 400.
    pub status: u64,
    /// Median request latency.
    pub latency_p50: Duration,
    /// Largest request latency.
    pub latency_max: Duration,
}

impl WrkReport {
    /// Connect, read, write and timeout errors.
    pub fn socket_errors(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }

    /// Responses per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// Parses the line the Lua `done` hook prints.
    fn parse(out: &str, connections: u32) -> Option<WrkReport> {
        let line = out.lines().find(|l| l.starts_with("xnlb-wrk "))?;
        let get = |k: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))?
                .parse()
                .ok()
        };
        Some(WrkReport {
            connections,
            requests: get("requests")?,
            duration: Duration::from_micros(get("duration_us")?),
            connect: get("connect")?,
            read: get("read")?,
            write: get("write")?,
            timeout: get("timeout")?,
            status: get("status")?,
            latency_p50: Duration::from_micros(get("latency_p50_us")?),
            latency_max: Duration::from_micros(get("latency_max_us")?),
        })
    }
}

impl std::fmt::Display for WrkReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests ({:.0}/s) on {} clients; errors: connect {}, read {}, write {}, timeout {}, non-2xx {}; latency p50 {:.1} ms, max {:.1} ms",
            self.requests,
            self.rate(),
            self.connections,
            self.connect,
            self.read,
            self.write,
            self.timeout,
            self.status,
            self.latency_p50.as_secs_f64() * 1e3,
            self.latency_max.as_secs_f64() * 1e3
        )
    }
}

/// The Lua hook that prints wrk's counters in one parsable line (and, for
/// the keep-alive run, paces its requests).
fn script(delay_ms: Option<u32>) -> String {
    let mut s = String::new();
    if let Some(d) = delay_ms {
        s += &format!("function delay()\n  return {d}\nend\n");
    }
    s += "function done(summary, latency, requests)\n  \
          local e = summary.errors\n  \
          io.write(string.format(\"xnlb-wrk requests=%d duration_us=%d connect=%d read=%d write=%d timeout=%d status=%d latency_p50_us=%d latency_max_us=%d\\n\",\n    \
          summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,\n    \
          latency:percentile(50), latency.max))\n\
          end\n";
    s
}

/// A wrk process the test started.
struct Running {
    child: Option<Child>,
    out: PathBuf,
    connections: u32,
}

impl Running {
    fn spawn(client: &Netns, dir: &Path, name: &str, args: &[String], connections: u32) -> Running {
        let out = dir.join(format!("wrk-{name}.out"));
        let stdout = std::fs::File::create(&out).expect("wrk output");
        let stderr = stdout.try_clone().expect("wrk output");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", client.name))
            .arg("--")
            .arg("wrk")
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start wrk (scripts/setup.sh installs it)");
        Running {
            child: Some(child),
            out,
            connections,
        }
    }

    /// Asks wrk to end now: SIGINT ends its run early, and it reports as
    /// at the end of its duration.
    fn interrupt(&self) {
        if let Some(c) = &self.child {
            // SAFETY: signalling a child process we started (nsenter
            // execs wrk, so the child's PID is wrk's).
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        }
    }

    fn finish(&mut self) -> WrkReport {
        let status = self.child.take().map(|mut c| c.wait().expect("wait wrk"));
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        WrkReport::parse(&out, self.connections)
            .unwrap_or_else(|| panic!("wrk ({status:?}) printed no result:\n{out}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Both load generators, running.
pub struct Load {
    keepalive: Running,
    new_conns: Running,
    /// When they were started (wall clock, as the servers' logs).
    pub started: SystemTime,
}

/// What a finished [`Load`] measured.
pub struct LoadReport {
    /// The keep-alive connections.
    pub keepalive: WrkReport,
    /// The new connections (one request each).
    pub new_conns: WrkReport,
    /// When the load started and ended (wall clock).
    pub started: SystemTime,
    /// When both generators had exited.
    pub ended: SystemTime,
}

impl Load {
    /// Starts both generators in the client namespace (writing their
    /// scripts and output to `dir`). The client gets a wide ephemeral port
    /// range and reuses its own TIME_WAIT ports, so thousands of new
    /// connections per second never run out of ports.
    pub fn start(client: &Netns, spec: &LoadSpec, dir: &Path) -> Load {
        client.sh(
            "sysctl -qw net.ipv4.ip_local_port_range='10000 65000' && sysctl -qw net.ipv4.tcp_tw_reuse=1",
        );
        let ka_script = dir.join("keepalive.lua");
        std::fs::write(&ka_script, script(Some(spec.keepalive_delay_ms))).expect("script");
        let new_script = dir.join("new.lua");
        std::fs::write(&new_script, script(None)).expect("script");
        let common = |threads: u32, conns: u32, script: &Path| -> Vec<String> {
            vec![
                format!("--threads={threads}"),
                format!("--connections={conns}"),
                format!("--duration={}s", spec.max_duration_s),
                format!("--timeout={}s", spec.timeout_s),
                format!("--script={}", script.display()),
            ]
        };
        let started = SystemTime::now();
        let mut ka = common(1, spec.keepalive_conns, &ka_script);
        ka.push(format!("http://{VIP}:{HTTP_PORT}{KEEPALIVE_PATH}"));
        let mut new = common(spec.new_threads, spec.new_conns, &new_script);
        new.extend([
            "--header=Connection: close".to_string(),
            format!("http://{VIP}:{HTTP_PORT}{NEW_CONN_PATH}"),
        ]);
        Load {
            keepalive: Running::spawn(client, dir, "keepalive", &ka, spec.keepalive_conns),
            new_conns: Running::spawn(client, dir, "new", &new, spec.new_conns),
            started,
        }
    }

    /// Ends both generators now and returns their results.
    pub fn stop(self) -> LoadReport {
        self.keepalive.interrupt();
        self.new_conns.interrupt();
        self.finish()
    }

    /// Waits for both generators to end and returns their results.
    pub fn finish(mut self) -> LoadReport {
        let keepalive = self.keepalive.finish();
        let new_conns = self.new_conns.finish();
        LoadReport {
            keepalive,
            new_conns,
            started: self.started,
            ended: SystemTime::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_done_hook_line_parses() {
        let out = "Running 3s test @ http://198.18.0.100:8080/new\n  52737 requests in 3.04s\n\
                   xnlb-wrk requests=52737 duration_us=3043715 connect=1 read=2 write=3 timeout=4 status=5 latency_p50_us=2500 latency_max_us=12806\n";
        let r = WrkReport::parse(out, 64).expect("parses");
        assert_eq!(r.requests, 52737);
        assert_eq!(r.duration, Duration::from_micros(3_043_715));
        assert_eq!(
            (r.connect, r.read, r.write, r.timeout, r.status),
            (1, 2, 3, 4, 5)
        );
        assert_eq!(r.socket_errors(), 10);
        assert_eq!(r.latency_max, Duration::from_micros(12_806));
        assert!((r.rate() - 17_326.5).abs() < 1.0);
        assert!(WrkReport::parse("Running 3s test\n", 64).is_none());
    }
}
