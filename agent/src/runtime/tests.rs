//! [`run_with`] in-process, without root: a witness (no data plane, no host
//! setup) on loopback addresses answers `status` over its control socket
//! and leaves when the signal channel says so.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;
use crate::control::client::{request, ClientError};
use crate::control::Response;

/// A fresh directory for this test's files.
fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("xnlb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A UDP port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port");
    s.local_addr().expect("local address").port()
}

/// Asks the agent behind `socket`, off the runtime (the client blocks).
async fn ask(socket: &Path, req: Request) -> Result<Response, ClientError> {
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || request(&socket, &req, Duration::from_secs(2)))
        .await
        .expect("client thread")
}

/// Node 3 of a 3-member cluster, a witness on 127.0.0.1:`port` (its peers
/// never answer), its state in `dir`; `node_extra` is added to `[node]`.
fn witness_config(dir: &Path, key: &Path, port: u16, socket: &Path, node_extra: &str) -> String {
    format!(
        r#"
[node]
id = 3
role = "witness"
state_dir = "{dir}"
{node_extra}
[cluster]
name = "inproc"
key_file = "{key}"
listen = ["127.0.0.1:{port}"]
[[cluster.member]]
id = 1
addrs = ["127.0.0.2:{port}"]
[[cluster.member]]
id = 2
addrs = ["127.0.0.3:{port}"]
[[cluster.member]]
id = 3
addrs = ["127.0.0.1:{port}"]
role = "witness"
[control]
socket = "{socket}"
metrics = ""
"#,
        dir = dir.display(),
        key = key.display(),
        socket = socket.display(),
    )
}

/// Waits until the agent behind `socket` answers `status`.
async fn wait_status(socket: &Path) -> StatusView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ask(socket, Request::Status).await {
            Ok(r) if r.ok => break serde_json::from_value(r.data).expect("status JSON"),
            other if tokio::time::Instant::now() > deadline => {
                panic!("no status from the agent within 10 s; last answer: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// What the agent told the service manager, in order (one agent at a time
/// uses this recorder: the test below).
static NOTIFIED: std::sync::Mutex<Vec<ServiceState>> = std::sync::Mutex::new(Vec::new());

fn record(state: ServiceState) {
    NOTIFIED.lock().expect("recorder").push(state);
}

fn notified() -> Vec<ServiceState> {
    std::mem::take(&mut *NOTIFIED.lock().expect("recorder"))
}

/// A witness agent running in-process for `witness_config` in a fresh
/// directory.
struct InProcess {
    dir: std::path::PathBuf,
    key: std::path::PathBuf,
    port: u16,
    socket: std::path::PathBuf,
    path: std::path::PathBuf,
    signals: mpsc::Sender<Signal>,
    agent: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl InProcess {
    /// Starts it (does not wait for it to answer), telling `notify` what
    /// it would tell systemd.
    fn start(tag: &str, notify: fn(ServiceState)) -> InProcess {
        let dir = temp_dir(tag);
        let key = dir.join("cluster.key");
        std::fs::write(&key, crate::key::generate()).expect("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let socket = dir.join("xnlb.sock");
        let port = free_port();
        let path = dir.join("xnlb.toml");
        std::fs::write(&path, witness_config(&dir, &key, port, &socket, "")).expect("config");
        let cfg = Config::load(&path).expect("valid config");
        let (signals, rx) = mpsc::channel(4);
        let deps = Dependencies {
            notify,
            ..Dependencies::system()
        };
        let agent = tokio::spawn(run_with(cfg, deps, rx));
        InProcess {
            dir,
            key,
            port,
            socket,
            path,
            signals,
            agent,
        }
    }

    /// Rewrites its file: control socket `socket`, `node_extra` in `[node]`.
    fn rewrite(&self, socket: &Path, node_extra: &str) {
        let text = witness_config(&self.dir, &self.key, self.port, socket, node_extra);
        std::fs::write(&self.path, text).expect("config");
    }

    /// Sends Terminate and waits for a graceful end.
    async fn terminate(self) -> std::path::PathBuf {
        self.signals
            .send(Signal::Terminate)
            .await
            .expect("agent listening");
        let ended = tokio::time::timeout(Duration::from_secs(10), self.agent)
            .await
            .expect("the agent leaves within 10 s of Terminate")
            .expect("run_with did not panic");
        assert!(ended.is_ok(), "graceful leave, got {ended:?}");
        self.dir
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_is_announced_and_one_changing_start_only_keys_is_refused_naming_them() {
    let a = InProcess::start("reload", record);
    let socket = a.socket.clone();
    let moved = a.dir.join("moved.sock");
    wait_status(&socket).await;
    assert_eq!(notified(), vec![ServiceState::Ready]);

    // Keys read only at start: refused, named, nothing applied.
    a.rewrite(&moved, "heartbeat_priority = 5");
    let r = ask(&socket, Request::Reload).await.expect("answer");
    assert!(!r.ok, "{r:?}");
    for needle in [
        "node.heartbeat_priority",
        "control.socket",
        "restart needed",
    ] {
        assert!(
            r.message.contains(needle),
            "{needle:?} not in {:?}",
            r.message
        );
    }
    assert_eq!(
        notified(),
        vec![
            ServiceState::Reloading,
            ServiceState::Reloaded(Err(r.message.clone()))
        ]
    );

    // A change one node may make alone is applied and announced.
    a.rewrite(&socket, "failback = \"manual\"");
    let r = ask(&socket, Request::Reload).await.expect("answer");
    assert!(r.ok && r.message.contains("reloaded"), "{r:?}");
    assert_eq!(
        notified(),
        vec![
            ServiceState::Reloading,
            ServiceState::Reloaded(Ok(r.message.clone()))
        ]
    );

    // On the way out the agent removes the socket it bound, and nothing
    // at a path a later file names (another agent's socket, say).
    std::fs::write(&moved, "not ours").expect("decoy");
    a.rewrite(&moved, "");
    let _ = ask(&socket, Request::Reload).await.expect("answer");
    let dir = a.terminate().await;
    assert!(!socket.exists(), "the bound control socket is removed");
    assert!(moved.exists(), "a path the agent never bound is left alone");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_runs_in_process_answers_status_and_leaves_on_terminate() {
    let a = InProcess::start("witness", |_| {});
    let socket = a.socket.clone();
    let status = wait_status(&socket).await;
    assert_eq!(
        (
            status.node_id,
            status.cluster.as_str(),
            status.role.as_str(),
            status.buckets.owned,
            status.xdp.as_deref(),
        ),
        (3, "inproc", "witness", 0, None),
        "a witness with no data plane, owning nothing: {status:?}"
    );
    let dir = a.terminate().await;
    assert!(
        !socket.exists(),
        "the control socket is removed on the way out"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
