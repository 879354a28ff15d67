//! The agent side of the control socket: parse a line, hand the request to
//! the protocol thread, write its answer.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tracing::debug;

use super::{Request, Response};
use crate::admission::{accept_failed, Admission, Limits};

/// A request with the channel its answer goes back on.
pub type Command = (Request, oneshot::Sender<Response>);

/// Binds the socket (replacing a stale one), owner-only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Longest request line; a client that sends more without a newline is
/// answered with an error and disconnected.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// Serves connections for as long as the agent runs, with the default
/// [`Limits`].
pub async fn serve(listener: UnixListener, commands: mpsc::Sender<Command>) {
    serve_with(listener, commands, Limits::default()).await
}

/// Serves connections: at most `limits.max_connections` at once (more are
/// closed at once), each closed after `limits.idle_timeout` without a
/// request. A failed `accept` (e.g. out of descriptors) is logged and
/// retried: the control socket must outlive any client.
pub async fn serve_with(listener: UnixListener, commands: mpsc::Sender<Command>, limits: Limits) {
    let admission = Admission::new(limits.max_connections);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_failed("control socket", e).await;
                continue;
            }
        };
        let Some(slot) = admission.admit() else {
            debug!(
                "control socket: {} connections open, closing a new one",
                limits.max_connections
            );
            drop(stream);
            continue;
        };
        let commands = commands.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve_connection(stream, commands, limits.idle_timeout).await;
        });
    }
}

/// One client: a JSON request per line, a JSON response per line.
async fn serve_connection(
    stream: UnixStream,
    commands: mpsc::Sender<Command>,
    idle: std::time::Duration,
) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let got = timeout(
            idle,
            (&mut read)
                .take(MAX_REQUEST_BYTES)
                .read_until(b'\n', &mut line),
        )
        .await;
        let response = match got {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) if !line.ends_with(b"\n") && line.len() as u64 >= MAX_REQUEST_BYTES => {
                let r = Response::err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
                let _ = send(&mut write, &r, idle).await;
                return;
            }
            Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
                Err(e) => Response::err(format!("bad request: {e}")),
                Ok(req) => {
                    let (tx, rx) = oneshot::channel();
                    if commands.send((req, tx)).await.is_err() {
                        Response::err("the agent is shutting down")
                    } else {
                        rx.await
                            .unwrap_or_else(|_| Response::err("the agent is shutting down"))
                    }
                }
            },
        };
        if !send(&mut write, &response, idle).await {
            return;
        }
    }
}

/// Writes one response line; false if the client is gone or does not read.
async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
    idle: std::time::Duration,
) -> bool {
    let mut out = serde_json::to_string(response).unwrap_or_default();
    out.push('\n');
    matches!(
        timeout(idle, write.write_all(out.as_bytes())).await,
        Ok(Ok(()))
    )
}
