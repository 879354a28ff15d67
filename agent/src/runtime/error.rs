//! Why the agent stopped or could not start, and the exit status each
//! reason maps to: 2 for a configuration or state file that restarting
//! will not fix (an operator must act), 1 for everything else (systemd
//! may restart the agent).

use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

use crate::config::ConfigError;
use crate::dataplane::DataplaneError;
use crate::host::HostError;
use crate::key::KeyError;
use crate::lock::LockError;
use crate::state_file::StateFileError;

/// Why [`run`](super::run) or [`run_with`](super::run_with) returned an
/// error. Each message is complete (it includes its cause).
#[derive(Debug, Error)]
pub enum RunError {
    /// The configuration file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cluster key cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The state file cannot be read, or its directory not written.
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    /// The state file exists but the protocol cannot use it (corrupt,
    /// another format, another cluster layout): starting over would forget
    /// this member's votes, so the operator must follow the recovery.
    #[error("{source}\n  in {file}. Starting over would forget this member's votes.\n  To recover: keep this agent stopped until `xnlb status` on another node shows member {node} dead, then move {file} away and start again (the node rejoins as a new member; see README, \"The state file\").")]
    UnusableState {
        /// The state file.
        file: PathBuf,
        /// This node's id.
        node: u8,
        /// What the protocol core found.
        source: xnlb_proto::ConfigError,
    },
    /// The protocol core refused the configuration.
    #[error(transparent)]
    Protocol(xnlb_proto::ConfigError),
    /// Another agent runs this node, or the lock file is unusable.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A heartbeat address cannot be bound.
    #[error("cluster.listen: binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// `control.socket` is empty.
    #[error("control.socket is empty")]
    NoControlSocket,
    /// The control socket cannot be bound.
    #[error("control socket {path}: {source}")]
    ControlSocket {
        /// The socket's path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A serving node has no interface (the configuration's validation
    /// prevents it).
    #[error("no interface")]
    NoInterface,
    /// The data plane cannot be loaded or attached.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The host cannot be set up for serving.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The agent's own machinery (a thread, a runtime, a socket
    /// registration) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// The node could no longer serve (see [`crate::liveness`]) and left.
    #[error("stopped serving: {0}")]
    Stopped(String),
    /// The protocol thread panicked.
    #[error("the protocol thread panicked")]
    Panicked,
}

impl RunError {
    /// The process exit status: 2 when restarting cannot help (the
    /// configuration, the key or the state file needs an operator), 1
    /// otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_)
            | RunError::Key(_)
            | RunError::StateFile(_)
            | RunError::UnusableState { .. }
            | RunError::Protocol(_) => 2,
            RunError::Lock(_)
            | RunError::Bind { .. }
            | RunError::NoControlSocket
            | RunError::ControlSocket { .. }
            | RunError::NoInterface
            | RunError::Dataplane(_)
            | RunError::Host(_)
            | RunError::Io { .. }
            | RunError::Stopped(_)
            | RunError::Panicked => 1,
        }
    }

    /// An [`RunError::Io`] for `what`.
    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> RunError {
        move |source| RunError::Io { what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_restarting_cannot_fix_exits_2() {
        let config = RunError::Config(ConfigError::Parse {
            path: "x.toml".into(),
            message: "bad".into(),
        });
        assert_eq!(config.exit_code(), 2);
        let key = RunError::Key(KeyError::Format { path: "k".into() });
        assert_eq!(key.exit_code(), 2);
        let held = RunError::Lock(LockError::Held {
            node: 1,
            path: "node1.lock".into(),
            pid: "7".into(),
        });
        assert_eq!(held.exit_code(), 1, "a second agent is refused with 1");
        assert_eq!(RunError::Stopped("lost eth0".into()).exit_code(), 1);
        assert_eq!(RunError::Panicked.exit_code(), 1);
    }
}
