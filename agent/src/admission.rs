//! What the agent's local endpoints (control socket, metrics) admit.
//!
//! Both run on the main thread next to signal handling, and every
//! connection costs a descriptor and a task. Without limits a local client
//! that opens connections and never speaks holds them forever, until the
//! agent runs out of descriptors; the first `accept` error (EMFILE) used to
//! end the accept loop for good, leaving the node unmanageable (no `stop`,
//! no `drain`) while it kept serving. So: a cap on concurrent connections
//! (over it, a new connection is closed at once), an idle timeout on every
//! read and write, and accept loops that log, pause and carry on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections one endpoint serves at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Longest wait for a client's next request (or for it to take an answer).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. EMFILE): the listener stays
/// readable, so retrying at once would spin.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The limits one endpoint applies.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: MAX_CONNECTIONS,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Counts an endpoint's open connections.
#[derive(Clone, Debug)]
pub struct Admission {
    open: Arc<Semaphore>,
}

impl Admission {
    /// At most `max` connections at once.
    pub fn new(max: usize) -> Admission {
        Admission {
            open: Arc::new(Semaphore::new(max)),
        }
    }

    /// A slot for one connection (held until dropped), or `None` when the
    /// endpoint is full and the connection must be closed.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.open.clone().try_acquire_owned().ok()
    }
}

/// Logs a failed `accept` and waits before the next one.
pub async fn accept_failed(endpoint: &str, e: std::io::Error) {
    tracing::warn!(
        "{endpoint}: accept failed ({e}); retrying in {} ms",
        ACCEPT_RETRY.as_millis()
    );
    tokio::time::sleep(ACCEPT_RETRY).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_stops_at_the_cap_and_frees_slots_on_drop() {
        let a = Admission::new(2);
        let one = a.admit().expect("first");
        let _two = a.admit().expect("second");
        assert!(a.admit().is_none(), "a third is refused");
        drop(one);
        assert!(a.admit().is_some(), "a slot is free again");
    }
}
