//! What survives a restart, and the bookkeeping of writing it.
//!
//! The node asks the shell to write one [`Persisted`] record (checksummed)
//! whenever something a restart must remember changes: a Paxos promise or
//! acceptance, a proposal round, a committed state, a promise horizon. The
//! shell reports each write's outcome ([`Storage::written`]); a failed write
//! fences the node until a later one succeeds (docs/SAFETY.md, "The state
//! file").
//!
//! The promise horizon lives here too: the largest `dead_after` under which
//! this member may have vouching promises outstanding. Only its durable part
//! is advertised, and it is lowered only once the promises made under a
//! larger one have run out ([`crate::quorum`], "Restarts").

use crate::assign::ClusterState;
use crate::config::{Config, ConfigError};
use crate::epoch;
use crate::time::Time;
use bincode::{Decode, Encode};

use super::catchup::state_fits;
use super::Node;

/// Version of the persisted record. Version 2 added `max_round` (a restarted
/// proposer never reuses a ballot) and `max_horizon` (a restarted acceptor
/// keeps every promise it advertised). Version 3: a slot's previous owners
/// are a set.
pub const PERSIST_VERSION: u32 = 3;

/// Length of the checksum that ends a persisted state.
const CHECKSUM_LEN: usize = 8;

/// What survives a restart.
#[derive(Clone, Debug, Encode, Decode)]
struct Persisted {
    version: u32,
    incarnation: u64,
    state: Vec<u8>,
    acceptor: epoch::Acceptor,
    max_round: u64,
    max_horizon: u64,
}

/// The parts of a persisted state a restarted node resumes from.
#[derive(Default)]
pub(crate) struct Restored {
    /// The incarnation that wrote it (0: none).
    pub(crate) incarnation: u64,
    /// Paxos promises and acceptances for the next epoch.
    pub(crate) acceptor: epoch::Acceptor,
    /// The highest proposal round used.
    pub(crate) max_round: u64,
    /// The largest promise horizon advertised.
    pub(crate) max_horizon: u64,
}

impl Restored {
    /// Decodes the bytes of a [`crate::Action::Persist`], refusing (with the
    /// reason, for the operator) bytes that are corrupt, of another version
    /// or of another cluster layout.
    pub(crate) fn decode(
        persisted: &[u8],
        config: &Config,
    ) -> Result<(ClusterState, Restored), ConfigError> {
        let bad = |w: String| ConfigError::BadPersistedState(w);
        let version = decode_version(persisted)
            .ok_or_else(|| bad("too short or not an xnlb state file".into()))?;
        if version != PERSIST_VERSION {
            return Err(bad(format!(
                "written by state format version {version}; this xnlb reads version {PERSIST_VERSION}"
            )));
        }
        let body = checked_body(persisted)
            .ok_or_else(|| bad("corrupt: its checksum does not match its contents".into()))?;
        let cfg = bincode::config::standard().with_limit::<{ 1 << 20 }>();
        let (p, used): (Persisted, usize) =
            bincode::decode_from_slice(body, cfg).map_err(|e| bad(format!("corrupt: {e}")))?;
        if used != body.len() {
            return Err(bad(format!(
                "corrupt: {} trailing bytes",
                body.len() - used
            )));
        }
        let state = ClusterState::from_bytes(&p.state)
            .ok_or_else(|| bad("corrupt: the cluster state does not decode".into()))?;
        if let Err(why) = state_fits(&state, config) {
            return Err(bad(format!("it belongs to another cluster layout ({why})")));
        }
        let restored = Restored {
            incarnation: p.incarnation,
            acceptor: p.acceptor,
            max_round: p.max_round,
            max_horizon: p.max_horizon,
        };
        Ok((state, restored))
    }
}

/// Write bookkeeping and the promise horizon.
pub(crate) struct Storage {
    /// Number of the latest write asked for.
    pub(crate) persist_seq: u64,
    /// Highest write the shell reported durable.
    durable_seq: u64,
    /// The last write failed: fenced, silent, no vote until one succeeds.
    pub(crate) failed: bool,
    /// Largest promise horizon (`dead_after`) this member ever used.
    pub(crate) max_horizon: u64,
    /// The part of `max_horizon` known durable (only that much is
    /// advertised).
    pub(crate) durable_horizon: u64,
    /// The write that records `max_horizon`.
    horizon_seq: u64,
}

/// What a new `dead_after` does to the promise horizon.
pub(crate) enum HorizonChange {
    /// Raised: persist it before advertising it.
    Raised,
    /// Smaller: lower the horizon once the promises already given under
    /// the larger one run out, at this time ([`super::Timer::HorizonLower`]).
    LowerAt(Time),
    /// Equal.
    Kept,
}

impl Storage {
    /// Bookkeeping at start: what a previous incarnation advertised
    /// (`restored_horizon`) is durable already.
    pub(crate) fn new(restored_horizon: u64, dead_after: u64) -> Storage {
        Storage {
            persist_seq: 0,
            durable_seq: 0,
            failed: false,
            max_horizon: restored_horizon.max(dead_after),
            durable_horizon: restored_horizon,
            horizon_seq: 0,
        }
    }

    /// The write just asked for is the one that records `max_horizon`.
    pub(crate) fn horizon_written_by_last(&mut self) {
        self.horizon_seq = self.persist_seq;
    }

    /// Records the shell's report on write `seq`; true if it fences the node
    /// (a failed write not superseded by a durable later one).
    pub(crate) fn written(&mut self, seq: u64, ok: bool) -> bool {
        if ok {
            if seq > self.durable_seq {
                self.durable_seq = seq;
            }
            if self.durable_seq >= self.horizon_seq {
                self.durable_horizon = self.max_horizon;
            }
            if self.durable_seq >= self.persist_seq {
                self.failed = false;
            }
            false
        } else if seq >= self.durable_seq {
            self.failed = true;
            true
        } else {
            false
        }
    }

    /// A reload changed `dead_after`: a larger one raises the horizon at
    /// once; a smaller one lowers it only once the promises already given
    /// have run out.
    pub(crate) fn adopt_dead_after(&mut self, now: Time, dead_after: u64) -> HorizonChange {
        if dead_after > self.max_horizon {
            self.max_horizon = dead_after;
            HorizonChange::Raised
        } else if dead_after < self.max_horizon {
            HorizonChange::LowerAt(now + self.max_horizon)
        } else {
            HorizonChange::Kept
        }
    }

    /// Lowers the horizon to `dead_after`: the promises made under the
    /// larger one have run out.
    pub(crate) fn lower_horizon(&mut self, dead_after: u64) {
        self.max_horizon = dead_after;
        self.durable_horizon = self.durable_horizon.min(self.max_horizon);
    }
}

impl Node {
    /// Asks the shell to write what a restart must remember; datagrams
    /// queued from now on wait for this write (see `send_on`).
    pub(super) fn persist(&mut self) {
        let p = Persisted {
            version: PERSIST_VERSION,
            incarnation: self.incarnation,
            state: self.state.to_bytes(),
            acceptor: self.acceptor.paxos.clone(),
            max_round: self.proposer.max_round,
            max_horizon: self.storage.max_horizon,
        };
        if let Ok(mut state) = bincode::encode_to_vec(&p, bincode::config::standard()) {
            state.extend_from_slice(&checksum(&state));
            self.storage.persist_seq += 1;
            self.outbox.queue_persist(self.storage.persist_seq, state);
        }
    }
}

/// First bytes of SHA-256: a torn or bit-flipped state file is refused
/// rather than restored with silently different promises.
fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    crate::auth::short_digest(body)
}

/// The persisted bytes without their checksum, if it matches.
fn checked_body(bytes: &[u8]) -> Option<&[u8]> {
    let split = bytes.len().checked_sub(CHECKSUM_LEN)?;
    let (body, sum) = bytes.split_at(split);
    (checksum(body) == sum).then_some(body)
}

/// Reads the version field of a persisted state without decoding the rest,
/// so another version is named rather than reported as corruption.
fn decode_version(bytes: &[u8]) -> Option<u32> {
    let cfg = bincode::config::standard().with_limit::<64>();
    bincode::decode_from_slice::<u32, _>(bytes, cfg)
        .ok()
        .map(|(v, _)| v)
}
