//! A real HTTP server and a real load generator through the cluster
//! (issue 9): nginx in every serving node's namespace on the VIP, wrk in
//! the client namespace, and the check, from nginx's access logs, that no
//! client connection was answered by two nodes.
//!
//! [`nginx`] starts and stops one nginx per node (its own config, pid file
//! and logs in a temporary directory, stopped by PID); [`wrk`] runs the two
//! load generators (keep-alive connections and new connections) and parses
//! their results; [`served`] reads the access logs and finds overlaps.

pub mod nginx;
pub mod served;
pub mod wrk;

pub use nginx::{LogFollower, Nginx};
pub use served::{ServedConn, ServedRequest};
pub use wrk::{Load, LoadReport, LoadSpec, WrkReport};

/// The port nginx listens on at the VIP (the in-process test servers hold
/// port 80).
pub const HTTP_PORT: u16 = 8080;

/// The path the keep-alive load generator requests (its connections are
/// told apart from the new connections' in the logs by it).
pub const KEEPALIVE_PATH: &str = "/keepalive";

/// The path the new-connection load generator requests.
pub const NEW_CONN_PATH: &str = "/new";
