//! nginx on every serving node: one master and one worker per node
//! namespace, listening on the VIP at [`HTTP_PORT`], with its own config,
//! pid file, error log and access log in a temporary directory (the system
//! nginx service is never used). Each is stopped by the PID the test
//! started, also when the test panics.
//!
//! The access log records, per request, what [`super::served`] needs to
//! tell which node answered which client connection and when: the node id,
//! the client address and port, nginx's connection serial, the request's
//! number on its connection, the request's end time and the connection's
//! age at that moment, the path and the status.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::served::{parse_line, ServedRequest};
use super::HTTP_PORT;
use crate::cluster::{wait_until, Cluster, VIP};
use crate::netns::fresh_dir;

/// The nginx servers of a cluster's serving nodes.
pub struct Nginx {
    dir: PathBuf,
    servers: Vec<(u8, Child)>,
}

/// The config of node `id`'s nginx, every file under `dir`.
fn config_text(id: u8, dir: &Path) -> String {
    let f = |what: &str| dir.join(format!("n{id}.{what}")).display().to_string();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nworker_rlimit_nofile 10000;\n\
         pid {pid};\nerror_log {err} warn;\n\
         events {{ worker_connections 4096; multi_accept on; }}\n\
         http {{\n\
         \x20 log_format xnlb '{id} $remote_addr $remote_port $connection $connection_requests $msec $connection_time $uri $status';\n\
         \x20 access_log {log} xnlb;\n\
         \x20 client_body_temp_path {body}; proxy_temp_path {proxy}; fastcgi_temp_path {fcgi};\n\
         \x20 uwsgi_temp_path {uwsgi}; scgi_temp_path {scgi};\n\
         \x20 keepalive_timeout 300s;\n\
         \x20 keepalive_requests 1000000000;\n\
         \x20 server {{\n\
         \x20   listen {VIP}:{HTTP_PORT} backlog=4096;\n\
         \x20   location / {{ return 200 \"node {id}\\n\"; }}\n\
         \x20 }}\n\
         }}\n",
        pid = f("pid"),
        err = f("error.log"),
        log = f("access.log"),
        body = f("body"),
        proxy = f("proxy"),
        fcgi = f("fastcgi"),
        uwsgi = f("uwsgi"),
        scgi = f("scgi"),
    )
}

impl Nginx {
    /// Starts nginx in every serving node's namespace and waits until each
    /// listens. (The nodes allow binding the VIP before the agent puts it
    /// on `lo`.)
    pub fn start(c: &Cluster) -> Nginx {
        let dir = fresh_dir(Path::new("/tmp"), "xnlb-nginx-");
        let mut nginx = Nginx {
            dir,
            servers: Vec::new(),
        };
        let ids: Vec<u8> = c
            .spec()
            .nodes
            .iter()
            .filter(|n| n.role != "witness")
            .map(|n| n.id)
            .collect();
        for &id in &ids {
            let conf = nginx.dir.join(format!("n{id}.conf"));
            std::fs::write(&conf, config_text(id, &nginx.dir)).expect("nginx config");
            let out = std::fs::File::create(nginx.dir.join(format!("n{id}.stderr")))
                .expect("nginx stderr");
            // nsenter execs nginx: the child's PID is nginx's master.
            let child = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", c.ns(id).name))
                .arg("--")
                .arg("nginx")
                .arg("-p")
                .arg(&nginx.dir)
                .arg("-e")
                .arg(nginx.dir.join(format!("n{id}.error.log")))
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(out)
                .spawn()
                .expect("start nginx (scripts/setup.sh installs it)");
            nginx.servers.push((id, child));
        }
        for &id in &ids {
            let listens = wait_until(Duration::from_secs(5), || {
                !c.ns(id)
                    .sh(&format!("ss -Hltn 'sport = :{HTTP_PORT}'"))
                    .trim()
                    .is_empty()
            });
            assert!(
                listens,
                "node {id}'s nginx does not listen on {VIP}:{HTTP_PORT}: {}{}",
                std::fs::read_to_string(nginx.dir.join(format!("n{id}.stderr")))
                    .unwrap_or_default(),
                std::fs::read_to_string(nginx.dir.join(format!("n{id}.error.log")))
                    .unwrap_or_default()
            );
        }
        nginx
    }

    /// Where the configs and logs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every request every node's nginx has logged so far (the access log
    /// is written unbuffered, at the end of each request).
    pub fn requests(&self) -> Vec<ServedRequest> {
        let mut out = Vec::new();
        for (id, _) in &self.servers {
            let path = self.dir.join(format!("n{id}.access.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.extend(text.lines().map(|l| {
                parse_line(l).unwrap_or_else(|| panic!("{}: unparsable line {l:?}", path.display()))
            }));
        }
        out
    }

    /// Follows the access logs from their current end: each
    /// [`LogFollower::poll`] returns the requests logged since the last.
    pub fn follow(&self) -> LogFollower {
        let mut f = LogFollower {
            logs: self
                .servers
                .iter()
                .map(|(id, _)| (self.dir.join(format!("n{id}.access.log")), 0, Vec::new()))
                .collect(),
        };
        f.poll();
        f
    }

    /// Stops every nginx by the PID this process started: SIGTERM to the
    /// master (it stops its worker), then SIGKILL to what is left after
    /// 3 s.
    fn stop(&mut self) {
        for (_, child) in &mut self.servers {
            let pid = child.id() as i32;
            // SAFETY: signalling a child process we started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        for (_, mut child) in self.servers.drain(..) {
            let gone = wait_until(Duration::from_secs(3), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !gone {
                let pid = child.id();
                let workers = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .unwrap_or_default();
                for w in workers
                    .split_whitespace()
                    .filter_map(|w| w.parse::<i32>().ok())
                {
                    // SAFETY: a worker of the nginx master we started.
                    unsafe { libc::kill(w, libc::SIGKILL) };
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Reads what the access logs gained since the last call (they are only
/// appended to, one line per request).
pub struct LogFollower {
    /// Per log: its path, how far it was read, an incomplete last line.
    logs: Vec<(PathBuf, u64, Vec<u8>)>,
}

impl LogFollower {
    /// The requests logged since the previous call.
    pub fn poll(&mut self) -> Vec<ServedRequest> {
        use std::io::{Read, Seek, SeekFrom};
        let mut out = Vec::new();
        for (path, offset, partial) in &mut self.logs {
            let Ok(mut f) = std::fs::File::open(&*path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut fresh = Vec::new();
            let Ok(n) = f.read_to_end(&mut fresh) else {
                continue;
            };
            *offset += n as u64;
            partial.extend_from_slice(&fresh);
            let Some(end) = partial.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let complete: Vec<u8> = partial.drain(..=end).collect();
            out.extend(
                String::from_utf8_lossy(&complete)
                    .lines()
                    .filter_map(parse_line),
            );
        }
        out
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("nginx configs and logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
