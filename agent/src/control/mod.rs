//! The control socket: one JSON request per line from the CLI, one JSON
//! response per line back. Owner-only (mode 0600), so only root (or the
//! agent's user) can drain or stop the node.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

/// A command from `xnlb <subcommand>`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Full status.
    Status,
    /// Stop taking new flows, finish existing ones, then own nothing.
    Drain {
        /// Longest wait for connections, seconds (default: drain_timeout_s).
        timeout_s: Option<u64>,
    },
    /// Undo a drain (or a manual-failback hold).
    Resume,
    /// Leave the cluster gracefully and exit.
    Stop,
    /// Weight-exact redistribution.
    Rebalance,
    /// Reload the configuration file (as SIGHUP), answering whether it
    /// was applied and, if not, why.
    Reload,
    /// Which node owns a flow now.
    Owner {
        /// VIP.
        vip: String,
        /// `tcp`, `udp` or `icmp`.
        proto: String,
        /// Client `IP:PORT`.
        src: String,
        /// VIP port.
        dport: u16,
    },
    /// What `xnlb doctor` needs to know from the agent.
    Diagnose,
    /// Why a flow goes where it goes on this node (`xnlb explain`).
    Explain {
        /// `tcp`, `udp` or `icmp`.
        proto: String,
        /// Client `IP:PORT`.
        client: String,
        /// `VIP:PORT`, `VIP` or `PORT` (absent: the only VIP).
        vip: Option<String>,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Human-readable outcome or error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Structured result (status, owner).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Response {
    /// Success with a message.
    pub fn ok(message: impl Into<String>) -> Response {
        Response {
            ok: true,
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }

    /// Success with data.
    pub fn data(data: serde_json::Value) -> Response {
        Response {
            ok: true,
            message: String::new(),
            data,
        }
    }

    /// Failure.
    pub fn err(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }
}
