//! Sans-IO cluster protocol of xnlb: membership, failure detection, quorum,
//! leases, epochs and bucket assignment.
//!
//! Modelled on `quinn-proto`: [`Node`] holds all protocol logic and does no
//! IO and reads no clock. The agent's runtime feeds it datagrams and time
//! ([`Node::handle_datagram`], [`Node::handle_timeout`]) and drains what it
//! produces ([`Node::poll_action`], [`Node::poll_report`], then
//! [`Node::poll_transmit`], and [`Node::poll_timeout`]). The simulator (feature `sim`) drives many nodes
//! through the same API in virtual time and checks DESIGN 3's invariants.
//!
//! Module map, one concern each: [`time`], [`config`], [`wire`] (format),
//! [`auth`] (HMAC), [`membership`] (peers, replay window), [`quorum`] (quorum
//! math and the lease proof), [`assign`] (replicated state and assignment),
//! [`epoch`] (Paxos per epoch), [`node`] (the state machine), [`status`].
#![warn(missing_docs)]
#![warn(unreachable_pub)]

pub mod assign;
pub mod auth;
pub mod config;
pub mod epoch;
pub mod membership;
pub mod node;
pub mod quorum;
pub mod status;
pub mod time;
pub mod wire;

#[cfg(feature = "sim")]
pub mod sim;

pub use config::{Config, ConfigError, Failback, MemberConfig, Role};
pub use node::{Action, Blocked, MemberState, Node, Report, Routes, Transmit, PERSIST_VERSION};
pub use status::{MemberStatus, NodeState, QuorumStatus, Status};
pub use time::Time;
pub use wire::DropReason;
