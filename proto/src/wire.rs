//! The datagram format: header, messages, encoding and authentication.
//!
//! ```text
//! +-------+---------+---------------------------------+-----------+
//! | "XN"  | version | bincode(Header, Body), fixed-int | HMAC (32) |
//! +-------+---------+---------------------------------+-----------+
//! ```
//! The MAC covers everything before it. Every datagram is at most
//! [`MAX_DATAGRAM`] bytes: the bucket map never travels whole in one message;
//! epochs carry only the *operations* every node applies deterministically to
//! the previous state, and a node that fell behind fetches a snapshot in
//! chunks ([`Body::SnapshotChunk`]).

use crate::auth::{Authenticator, MAC_LEN};
use crate::config::Role;
use bincode::{Decode, Encode};

/// Leading bytes of every datagram; cheap rejection of stray traffic.
pub const MAGIC: [u8; 2] = *b"XN";
/// Wire version; a node drops datagrams of any other version. Version 2
/// added the voucher's promise horizon and the installed flag to heartbeats
/// and the requester's digest to sync requests. Version 3: a slot's
/// previous owners are a set (snapshots carry every holder).
pub const VERSION: u8 = 3;

/// Largest datagram the protocol sends (fits a 1500-byte MTU with headroom
/// for IPv6, UDP and tunnels).
pub const MAX_DATAGRAM: usize = 1400;
/// Snapshot payload per chunk, leaving room for header and MAC.
pub const SNAPSHOT_CHUNK: usize = 1200;

fn codec() -> impl bincode::config::Config {
    // Fixed-width integers keep sizes predictable; the limit stops a forged
    // length prefix from allocating more than one datagram's worth.
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_limit::<MAX_DATAGRAM>()
}

/// Fields every datagram starts with.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Header {
    /// Sending member id.
    pub from: u8,
    /// Destination member id: a datagram for one member is useless to others.
    pub to: u8,
    /// Sender's incarnation, new (larger) on every start.
    pub incarnation: u64,
    /// Sender's sequence number, per incarnation, over all its datagrams.
    pub seq: u64,
    /// Config fingerprint of the sender (see [`crate::Config::fingerprint`]).
    pub fingerprint: [u8; 32],
}

/// What a member wants the cluster to do with it (operator commands travel
/// as wishes in heartbeats; the coordinator turns them into epochs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Wish {
    /// Serve a share of the buckets.
    Active,
    /// Hand everything off and stay a drained member.
    Drained,
    /// Hand everything off and leave the cluster.
    Leave,
}

/// A small summary of the config so a fingerprint mismatch can be named.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ConfigSummary {
    /// Configured bucket count.
    pub buckets: u32,
    /// Number of single slots.
    pub singles: u16,
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u32,
    /// Dead-after, ms.
    pub dead_after_ms: u32,
    /// Member (id, role) list digest (first 8 bytes of SHA-256).
    pub members_digest: u64,
    /// Role the sender believes it has.
    pub own_role: Role,
}

/// The periodic liveness, lease and state message (one per peer per link).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Heartbeat {
    /// Sender's clock when sending; the receiver echoes it back.
    pub sent_at: u64,
    /// The latest `sent_at` the sender received from the destination and
    /// vouches for (0 = none): the destination's lease evidence.
    pub echo: u64,
    /// Destination incarnation the echo belongs to.
    pub echo_incarnation: u64,
    /// How long after receiving `echo` the sender promises not to accept an
    /// epoch that fences the destination (ns): the destination sizes its
    /// lease from this, never from its own timers (see [`crate::quorum`]).
    pub echo_horizon: u64,
    /// Epoch and digest of the state the sender has installed.
    pub epoch: u64,
    /// Digest of that state.
    pub digest: u64,
    /// Whether the sender's data plane holds that state. False after a
    /// failed install: nobody may pass a barrier on the sender's word then.
    pub installed: bool,
    /// What the sender wants.
    pub wish: Wish,
    /// Sender's own configured weight.
    pub weight: u32,
    /// Epoch in which the sender's releasing slots finished handing off.
    pub handoff_done: u64,
    /// Sender's count of operator `rebalance` requests.
    pub rebalance_requests: u32,
    /// Whether the sender sees a quorum (only such a node may coordinate).
    pub quorum: bool,
    /// The sender holds an accepted value or a fencing floor for the next
    /// epoch: the coordinator must decide it, even as a no-op.
    pub undecided: bool,
    /// For naming a fingerprint mismatch.
    pub summary: ConfigSummary,
}

/// One operation of an epoch; applied in order to the previous state.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Op {
    /// Member failed: it no longer participates; its slots move at once.
    Fence {
        /// Member id.
        id: u8,
    },
    /// Member joins (or rejoins).
    Admit {
        /// Member id.
        id: u8,
        /// Its incarnation (for status).
        incarnation: u64,
        /// Its weight.
        weight: u32,
        /// Join drained (manual failback) instead of active.
        drained: bool,
    },
    /// Member drains: its slots hand off.
    Drain {
        /// Member id.
        id: u8,
    },
    /// Member takes a share again.
    Resume {
        /// Member id.
        id: u8,
    },
    /// Member leaves gracefully: hands off, then is gone.
    Leave {
        /// Member id.
        id: u8,
    },
    /// Member's releasing slots have no more tracked flows (or timed out).
    HandoffDone {
        /// Member id.
        id: u8,
    },
    /// Member changed its weight.
    SetWeight {
        /// Member id.
        id: u8,
        /// New weight.
        weight: u32,
    },
    /// Operator asked for a canonical, weight-exact layout.
    Rebalance {
        /// Member id the request came from.
        id: u8,
        /// That member's request counter.
        request: u32,
    },
}

/// A Paxos ballot: round in the high bits, proposer id in the low 8, so that
/// ballots of different proposers never tie.
pub type Ballot = u64;

/// All message kinds.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Body {
    /// Liveness, lease echo and state report.
    Heartbeat(Heartbeat),
    /// Paxos phase 1a for `epoch`.
    Prepare {
        /// Epoch being decided.
        epoch: u64,
        /// Proposer's ballot.
        ballot: Ballot,
    },
    /// Paxos phase 1b.
    Promise {
        /// Epoch being decided.
        epoch: u64,
        /// Ballot promised.
        ballot: Ballot,
        /// Highest-ballot value accepted so far for this epoch.
        accepted: Option<(Ballot, Vec<Op>)>,
    },
    /// Paxos phase 2a.
    Accept {
        /// Epoch being decided.
        epoch: u64,
        /// Proposer's ballot.
        ballot: Ballot,
        /// The value.
        ops: Vec<Op>,
    },
    /// Paxos phase 2b.
    Accepted {
        /// Epoch being decided.
        epoch: u64,
        /// Ballot accepted.
        ballot: Ballot,
    },
    /// Refusal: the acceptor promised a higher ballot or has moved on.
    Reject {
        /// Epoch the proposer asked about.
        epoch: u64,
        /// Highest ballot the acceptor promised.
        promised: Ballot,
        /// Acceptor's committed epoch.
        committed: u64,
    },
    /// The value chosen for `epoch`.
    Commit {
        /// The epoch.
        epoch: u64,
        /// Its operations.
        ops: Vec<Op>,
        /// Digest of the resulting state (a check against divergence).
        digest: u64,
    },
    /// "I have `have`; send me what follows."
    SyncRequest {
        /// Requester's committed epoch.
        have: u64,
        /// Digest of the requester's state: at an equal epoch, a different
        /// digest asks for a snapshot (divergence repair).
        digest: u64,
    },
    /// Part of a serialized state.
    SnapshotChunk {
        /// Epoch of the state.
        epoch: u64,
        /// Its digest.
        digest: u64,
        /// Chunk number.
        index: u16,
        /// Number of chunks.
        count: u16,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// One decoded, authenticated datagram.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The body.
    pub body: Body,
}

/// Why a datagram was dropped; each has a status counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Too short to hold magic, version and MAC.
    Truncated,
    /// Wrong magic bytes: not ours.
    BadMagic,
    /// Another wire version.
    BadVersion,
    /// MAC does not verify: forged, corrupted or another cluster's key.
    BadMac,
    /// MAC verified but the content does not decode (a bug or version skew).
    Malformed,
    /// Longer than [`MAX_DATAGRAM`].
    Oversized,
    /// Sender id is not a configured member (or is us).
    UnknownSender,
    /// Addressed to another member.
    WrongDestination,
    /// Already seen (same incarnation and sequence number).
    Replay,
    /// From an older incarnation of the sender.
    StaleIncarnation,
    /// Sender's config fingerprint differs from ours.
    FingerprintMismatch,
}

impl DropReason {
    /// All reasons, for status output.
    pub const ALL: [DropReason; 11] = [
        DropReason::Truncated,
        DropReason::BadMagic,
        DropReason::BadVersion,
        DropReason::BadMac,
        DropReason::Malformed,
        DropReason::Oversized,
        DropReason::UnknownSender,
        DropReason::WrongDestination,
        DropReason::Replay,
        DropReason::StaleIncarnation,
        DropReason::FingerprintMismatch,
    ];

    /// Counter name in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadMagic => "bad_magic",
            DropReason::BadVersion => "bad_version",
            DropReason::BadMac => "bad_mac",
            DropReason::Malformed => "malformed",
            DropReason::Oversized => "oversized",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::WrongDestination => "wrong_destination",
            DropReason::Replay => "replay",
            DropReason::StaleIncarnation => "stale_incarnation",
            DropReason::FingerprintMismatch => "fingerprint_mismatch",
        }
    }
}

/// Encodes and signs a message. Returns `None` only if it would exceed
/// [`MAX_DATAGRAM`] (a bug: callers size their messages).
pub fn encode(auth: &Authenticator, msg: &Message) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    let body = bincode::encode_to_vec(msg, codec()).ok()?;
    out.extend_from_slice(&body);
    let tag = auth.sign(&out);
    out.extend_from_slice(&tag);
    if out.len() > MAX_DATAGRAM {
        return None;
    }
    Some(out)
}

/// Checks framing and MAC, then decodes. Never panics on any input.
pub fn decode(auth: &Authenticator, bytes: &[u8]) -> Result<Message, DropReason> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(DropReason::Oversized);
    }
    if bytes.len() < MAGIC.len() + 1 + MAC_LEN {
        return Err(DropReason::Truncated);
    }
    if bytes[..2] != MAGIC {
        return Err(DropReason::BadMagic);
    }
    if bytes[2] != VERSION {
        return Err(DropReason::BadVersion);
    }
    let (signed, tag) = bytes.split_at(bytes.len() - MAC_LEN);
    if !auth.verify(signed, tag) {
        return Err(DropReason::BadMac);
    }
    match bincode::decode_from_slice::<Message, _>(&signed[3..], codec()) {
        Ok((msg, used)) if used == signed.len() - 3 => Ok(msg),
        _ => Err(DropReason::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(b"0123456789abcdef0123456789abcdef")
    }

    fn header() -> Header {
        Header {
            from: 1,
            to: 2,
            incarnation: u64::MAX,
            seq: u64::MAX,
            fingerprint: [0xab; 32],
        }
    }

    fn heartbeat() -> Message {
        Message {
            header: header(),
            body: Body::Heartbeat(Heartbeat {
                sent_at: u64::MAX,
                echo: u64::MAX,
                echo_incarnation: u64::MAX,
                echo_horizon: u64::MAX,
                epoch: u64::MAX,
                digest: u64::MAX,
                installed: true,
                wish: Wish::Active,
                weight: 10_000,
                handoff_done: u64::MAX,
                rebalance_requests: u32::MAX,
                quorum: true,
                undecided: true,
                summary: ConfigSummary {
                    buckets: 16384,
                    singles: 256,
                    heartbeat_ms: 50,
                    dead_after_ms: 250,
                    members_digest: 7,
                    own_role: Role::Active,
                },
            }),
        }
    }

    #[test]
    fn roundtrip_preserves_every_field() {
        let a = auth();
        let m = heartbeat();
        let bytes = encode(&a, &m).expect("fits");
        assert_eq!(decode(&a, &bytes), Ok(m));
    }

    #[test]
    fn forged_mac_and_other_key_are_refused() {
        let a = auth();
        let mut bytes = encode(&a, &heartbeat()).expect("fits");
        let other = Authenticator::new(b"another cluster's key, 32 bytes!");
        assert_eq!(decode(&other, &bytes), Err(DropReason::BadMac));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(decode(&a, &bytes), Err(DropReason::BadMac));
    }

    #[test]
    fn bad_version_and_truncation_are_named() {
        let a = auth();
        let mut bytes = encode(&a, &heartbeat()).expect("fits");
        assert_eq!(decode(&a, &bytes[..10]), Err(DropReason::Truncated));
        bytes[2] = 99;
        assert_eq!(decode(&a, &bytes), Err(DropReason::BadVersion));
    }

    #[test]
    fn largest_messages_fit_one_datagram_at_64_nodes_16384_buckets() {
        let a = auth();
        // The largest epoch value: every one of 64 members changes at once.
        let ops: Vec<Op> = (1..=64u8)
            .map(|id| Op::Admit {
                id,
                incarnation: u64::MAX,
                weight: 10_000,
                drained: true,
            })
            .collect();
        for body in [
            Body::Accept {
                epoch: u64::MAX,
                ballot: u64::MAX,
                ops: ops.clone(),
            },
            Body::Commit {
                epoch: u64::MAX,
                ops: ops.clone(),
                digest: u64::MAX,
            },
            Body::Promise {
                epoch: u64::MAX,
                ballot: 1,
                accepted: Some((u64::MAX, ops)),
            },
            Body::SnapshotChunk {
                epoch: u64::MAX,
                digest: u64::MAX,
                index: u16::MAX,
                count: u16::MAX,
                data: vec![0xff; SNAPSHOT_CHUNK],
            },
        ] {
            let m = Message {
                header: header(),
                body,
            };
            let bytes = encode(&a, &m).expect("must fit MAX_DATAGRAM");
            assert!(bytes.len() <= MAX_DATAGRAM, "{} bytes", bytes.len());
        }
        let hb = encode(&a, &heartbeat()).expect("fits");
        assert!(hb.len() < 200, "heartbeat is {} bytes", hb.len());
    }
}
