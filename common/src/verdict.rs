//! The truth table of slot state against packet kind: what this node does
//! with a VIP packet in a slot it holds in a given state. Shared by the XDP
//! program (per packet) and `xnlb explain`, so the explanation is the
//! kernel's own rule. Why each cell is what it is: `ebpf/src/verdict.rs`.
//!
//! | packet              | OWNED  | RELEASING        | ACQUIRING        | NOT_OWNED |
//! |---------------------|--------|------------------|------------------|-----------|
//! | TCP SYN (new)       | accept | drop             | accept           | drop      |
//! | TCP, not a SYN      | accept | if socket here   | if socket here   | drop      |
//! | UDP, ICMP, other    | accept | drop             | accept           | drop      |

use crate::layout::{ipproto, slot_state};

/// TCP flag bits the table reads.
pub mod tcp_flag {
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// What kind of packet the table is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// A TCP SYN without ACK: a new connection.
    TcpSyn,
    /// Any other TCP segment: part of a connection some kernel holds.
    TcpOther,
    /// UDP, ICMP, anything else: no connection to preserve.
    Connectionless,
}

impl PacketKind {
    /// The kind of a packet of IP protocol `proto` with TCP flags `flags`
    /// (ignored for other protocols).
    #[inline(always)]
    pub fn of(proto: u8, flags: u8) -> PacketKind {
        if proto != ipproto::TCP {
            PacketKind::Connectionless
        } else if flags & (tcp_flag::SYN | tcp_flag::ACK) == tcp_flag::SYN {
            PacketKind::TcpSyn
        } else {
            PacketKind::TcpOther
        }
    }
}

/// A cell of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotVerdict {
    /// Dropped: another node serves it.
    Drop,
    /// Accepted.
    Accept,
    /// Accepted only if this node's kernel holds a socket for the flow.
    AcceptIfHeld,
}

/// The cell for a packet of `kind` in a slot held in `state`.
#[inline(always)]
pub fn slot_verdict(state: u8, kind: PacketKind) -> SlotVerdict {
    match (state, kind) {
        (slot_state::OWNED, _) => SlotVerdict::Accept,
        (slot_state::RELEASING, PacketKind::TcpOther) => SlotVerdict::AcceptIfHeld,
        (slot_state::ACQUIRING, PacketKind::TcpOther) => SlotVerdict::AcceptIfHeld,
        (slot_state::ACQUIRING, _) => SlotVerdict::Accept,
        _ => SlotVerdict::Drop,
    }
}

/// Where a node stands against its lease, for a packet it would otherwise
/// accept (docs/SAFETY.md, S3 and S6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Lease valid: serve as the slot state says.
    Serving,
    /// Past the lease, before the held-delivery deadline: accept nothing
    /// new, deliver only connections this kernel holds ([`holding_verdict`]).
    Holding,
    /// Past both: drop.
    Fenced,
}

/// The [`Standing`] at `now` given the lease deadline and the held-delivery
/// deadline (all CLOCK_BOOTTIME ns). `hold` is asked for only past the
/// lease: the program reads that word for a fenced node only.
#[inline(always)]
pub fn standing(now: u64, lease: u64, hold: impl FnOnce() -> u64) -> Standing {
    if now < lease {
        Standing::Serving
    } else if now < hold() {
        Standing::Holding
    } else {
        Standing::Fenced
    }
}

/// The verdict of a node past its lease but within held delivery, in any
/// slot it does not mark `NOT_OWNED`: only a connection its kernel holds
/// (docs/SAFETY.md, S6); nothing new.
#[inline(always)]
pub fn holding_verdict(kind: PacketKind) -> SlotVerdict {
    match kind {
        PacketKind::TcpOther => SlotVerdict::AcceptIfHeld,
        _ => SlotVerdict::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_reads_the_hold_only_past_the_lease() {
        let unread = || -> u64 { panic!("hold read while the lease is valid") };
        assert_eq!(standing(5, 10, unread), Standing::Serving);
        assert_eq!(standing(10, 10, || 20), Standing::Holding);
        assert_eq!(standing(20, 10, || 20), Standing::Fenced);
        assert_eq!(standing(5, 0, || 0), Standing::Fenced);
    }

    #[test]
    fn the_table_reads_as_documented() {
        use PacketKind::*;
        use SlotVerdict::*;
        let rows = [
            (TcpSyn, [Accept, Drop, Accept, Drop]),
            (TcpOther, [Accept, AcceptIfHeld, AcceptIfHeld, Drop]),
            (Connectionless, [Accept, Drop, Accept, Drop]),
        ];
        let states = [
            slot_state::OWNED,
            slot_state::RELEASING,
            slot_state::ACQUIRING,
            slot_state::NOT_OWNED,
        ];
        for (kind, cells) in rows {
            for (state, want) in states.iter().zip(cells) {
                assert_eq!(
                    slot_verdict(*state, kind),
                    want,
                    "{kind:?} in state {state}"
                );
            }
        }
        assert_eq!(PacketKind::of(ipproto::TCP, tcp_flag::SYN), TcpSyn);
        assert_eq!(
            PacketKind::of(ipproto::TCP, tcp_flag::SYN | tcp_flag::ACK),
            TcpOther
        );
        assert_eq!(PacketKind::of(ipproto::UDP, tcp_flag::SYN), Connectionless);
    }
}
