//! The control commands (`status`, `drain`, `resume`, `stop`, `rebalance`,
//! `owner`): where the socket is, the request, and failures sorted by
//! exit status so that a script can tell "no agent" from "the agent said
//! no".

use std::path::PathBuf;
use std::time::Duration;

use xnlb::config::{Config, DEFAULT_SOCKET};
use xnlb::control::client::{request, ClientError};
use xnlb::control::{Request, Response};

use super::{exit, Failure};

/// The socket: `--socket`, else the one `--config` names, else the default.
pub fn socket_of(socket: &Option<PathBuf>, config: &Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(s) = socket {
        return Ok(s.clone());
    }
    if let Some(c) = config {
        return Config::load(c)
            .map(|c| c.socket)
            .map_err(|e| Failure::new(exit::INVALID, e.to_string()));
    }
    Ok(PathBuf::from(DEFAULT_SOCKET))
}

/// Sends `req` to the agent on `socket`; an answer that is not ok is a
/// failure with the agent's message.
pub fn control(socket: &std::path::Path, req: Request) -> Result<Response, Failure> {
    let resp = request(socket, &req, Duration::from_secs(10)).map_err(|e| {
        let code = match e {
            ClientError::NotRunning { .. } => exit::NO_AGENT,
            _ => exit::FAILED,
        };
        Failure::new(code, e.to_string())
    })?;
    if !resp.ok {
        return Err(Failure::new(exit::FAILED, resp.message));
    }
    Ok(resp)
}

/// After `drain`: follows the handoff until this node owns nothing, one
/// progress line per change (buckets still owned, state), so an operator
/// or a script knows when the node can be taken down. Gives up after
/// `limit` (the drain's own timeout plus a margin) with a failure.
pub fn wait_drained(socket: &std::path::Path, limit: Duration) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let r = control(socket, Request::Status)?;
        let s: xnlb::status::StatusView = serde_json::from_value(r.data)
            .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
        let line = format!(
            "{}: {} buckets owned, epoch {}{}",
            s.state,
            s.buckets.owned,
            s.epoch,
            if s.converged { ", converged" } else { "" }
        );
        if line != last {
            println!("{:>6.1} s  {line}", started.elapsed().as_secs_f64());
            last = line;
        }
        if s.state == "drained" && s.buckets.owned == 0 && s.converged {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "still {} after {:?} ({} buckets owned): connections may still be open",
                    s.state, limit, s.buckets.owned
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
