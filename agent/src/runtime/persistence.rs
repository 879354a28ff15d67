//! Glue between the protocol core and its state file (see
//! [`crate::state_file`]): which file, the incarnation, the node restored
//! from it at start, and the datagrams that must wait until a write is
//! durable.
//!
//! The core numbers its writes and stamps each datagram with the write it
//! depends on (`after_persist`); [`Outbox`] holds such a datagram until the
//! writer reports that write, and drops it if the write failed (the core
//! then fences the node and falls silent).

use std::collections::VecDeque;
use std::path::PathBuf;

use tracing::info;
use xnlb_proto::{Node, Transmit};

use super::{now, RunError};
use crate::config::Config;
use crate::state_file;

/// Node `cfg.node_id`'s state file.
pub(super) fn state_file(cfg: &Config) -> PathBuf {
    cfg.state_dir.join(format!("node{}.state", cfg.node_id))
}

/// Incarnation: wall-clock nanoseconds, larger at every start.
fn incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// The protocol node: restored from the state file if there is one, new
/// otherwise; then checks that the state directory takes a durable write.
///
/// A state file that exists but cannot be used stops the start: starting
/// over would forget this member's votes and promises, which could let two
/// values be chosen for one epoch. The error says how to recover.
pub(super) fn restore_node(cfg: &Config, pcfg: xnlb_proto::Config) -> Result<Node, RunError> {
    let inc = incarnation();
    let path = state_file(cfg);
    let node = match state_file::load(&path)? {
        Some(bytes) => {
            let n = Node::restore(pcfg, now(), inc, &bytes).map_err(|source| {
                RunError::UnusableState {
                    file: path.clone(),
                    node: cfg.node_id,
                    source,
                }
            })?;
            info!("restored protocol state from {}", path.display());
            n
        }
        None => Node::new(pcfg, now(), inc).map_err(RunError::Protocol)?,
    };
    state_file::check_writable(&path)?;
    Ok(node)
}

/// Datagrams waiting for a write to be durable, in the order the core
/// made them.
#[derive(Default)]
pub(super) struct Outbox {
    /// Highest write the writer reported durable.
    durable: u64,
    held: VecDeque<Transmit>,
    /// The last write failed (logged once per failing streak).
    pub failing: bool,
}

impl Outbox {
    /// `t` if it may leave now; otherwise it is held.
    pub fn pass(&mut self, t: Transmit) -> Option<Transmit> {
        if t.after_persist > self.durable {
            self.held.push_back(t);
            None
        } else {
            Some(t)
        }
    }

    /// Write `seq` is durable: the datagrams it releases.
    pub fn durable(&mut self, seq: u64) -> impl Iterator<Item = Transmit> + '_ {
        self.durable = self.durable.max(seq);
        let n = self
            .held
            .iter()
            .take_while(|h| h.after_persist <= self.durable)
            .count();
        self.held.drain(..n)
    }

    /// Write `seq` failed: what waited for it never leaves.
    pub fn failed(&mut self, seq: u64) {
        self.held.retain(|h| h.after_persist > seq);
    }
}
