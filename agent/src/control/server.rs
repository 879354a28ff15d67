//! The agent side of the control socket: parse a line, hand the request to
//! the protocol thread, write its answer.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use super::{Request, Response};

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

/// Serves connections until the listener fails or the protocol thread is gone.
pub async fn serve(listener: UnixListener, commands: mpsc::Sender<Command>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let commands = commands.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let response = match serde_json::from_str::<Request>(&line) {
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
                };
                let mut out = serde_json::to_string(&response).unwrap_or_default();
                out.push('\n');
                if write.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}
