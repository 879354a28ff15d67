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
