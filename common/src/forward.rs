//! Routed mode's forwarding rule: where a node sends a VIP packet it does
//! not accept itself. Shared by the XDP program and `xnlb explain`.
//!
//! Behind ECMP routers each packet reaches one node, the router's choice.
//! That node judges it exactly as in flood mode (the verdict table in
//! [`crate::verdict`]); what it does not accept it forwards, so the packet
//! meets the node that flood mode's verdicts would have let accept it:
//!
//! - to the slot's owner, unless that is this node;
//! - this node is the owner but did not accept it (a connection's packet
//!   in a slot still handed over, its kernel holding no socket for it): to
//!   the previous owner still holding the slot's connections;
//! - this node is past its lease and its table names itself the owner
//!   (its buckets have moved on without it): to a live member of its last
//!   table, which forwards it to the owner it knows;
//! - the target is the node the packet came from
//!   ([`instead_of_straight_back`]; the program asks, as it alone sees where
//!   a frame came from): the owner whose first holder brought it (straight
//!   from the router) sends it on to the second holder; a holder whose next
//!   holder sent it, to the owner.
//!
//! The previous holders of a slot (at most two are listed: a bucket handed
//! on again while its first handoff is still open) are visited in order
//! after the owner: router → any node → owner → first holder → second
//! holder, each passing the packet on only if its kernel does not hold
//! the connection. The owner always comes first: a first holder that got a
//! connection's packet straight from the router (not yet forwarded) sends
//! it to the owner, which may hold it (a connection it took during the
//! handoff), not on to the second holder; only what comes forwarded (from
//! the owner's tour) goes on to the second holder.
//!
//! The frame carries how many times it was forwarded (`shim`, or the
//! tunnel's outer identification) and is dropped past [`MAX_HOPS`], and
//! never sent straight back to the node it came from, so a disagreement
//! between nodes' epochs drops a packet, never loops it.
//! Each node accepts only what its own verdict accepts, so the nodes that
//! see a packet are a subset of flood mode's and at most one of them
//! accepts it (S1 is flood mode's).

use crate::layout::NO_MEMBER;
use crate::verdict::PacketKind;

/// How many times a packet may be forwarded in all. The longest tours that
/// can end in a node holding the connection take four: the router's
/// choice, the owner, the first and the second holder; a node past its
/// lease, its fallback, the owner, a holder; or (through the tunnel, where
/// no frame shows where it came from) the first holder, the owner, the
/// first holder again, the second.
pub const MAX_HOPS: u8 = 4;

/// The member to forward a packet of `kind` to, given this node's id
/// `me`, the slot's `owner` and lingering `holders` (in tour order,
/// [`NO_MEMBER`] for none), the table's `fallback`, and how many times the
/// packet was forwarded already (`hop`: 0 from the router); `None`: drop.
/// `serving` says whether the lease is valid; it is asked only when this
/// node owns the slot (the program then reads the clock; a packet for
/// another node's slot does not).
#[inline(always)]
pub fn forward_target(
    me: u8,
    owner: u8,
    holders: [u8; 2],
    fallback: u8,
    hop: u8,
    kind: PacketKind,
    serving: impl FnOnce() -> bool,
) -> Option<u8> {
    let conn = kind == PacketKind::TcpOther;
    let [h0, h1] = holders;
    let target = if owner == NO_MEMBER {
        NO_MEMBER
    } else if owner == me {
        // Ours, not accepted. Past the lease our table is stale (the slot
        // has moved on without us): a live member knows better. Else a
        // connection's packet tours the holders.
        if !serving() {
            fallback
        } else if conn && listed(h0, me) {
            h0
        } else if conn && listed(h1, me) {
            h1
        } else {
            NO_MEMBER
        }
    } else if conn && me == h0 && listed(h1, me) && hop > 0 {
        // The first holder does not hold what came forwarded (normally
        // the owner's tour; also a node past its lease through its
        // fallback, or one whose table is behind): the next one. Straight
        // from the router it goes to the owner first, below.
        h1
    } else {
        owner
    };
    if target == NO_MEMBER || target == me {
        None
    } else {
        Some(target)
    }
}

/// Where to send a packet instead when [`forward_target`]'s `target` is
/// the node the packet came from (never straight back): the owner whose
/// first holder brought it sends it on to the second holder; anyone else,
/// to the owner; `None`: drop (nowhere left, or two nodes whose epochs
/// disagree would bounce it to the bound).
#[inline(always)]
pub fn instead_of_straight_back(me: u8, owner: u8, holders: [u8; 2], target: u8) -> Option<u8> {
    let [h0, h1] = holders;
    if owner == me && target == h0 && listed(h1, me) {
        Some(h1)
    } else if owner != target && owner != me {
        Some(owner)
    } else {
        None
    }
}

/// Whether holder `h` names a member other than `me`.
#[inline(always)]
fn listed(h: u8, me: u8) -> bool {
    h != NO_MEMBER && h != me
}

#[cfg(test)]
mod tests {
    use super::*;
    use PacketKind::*;

    const NONE: u8 = NO_MEMBER;

    #[test]
    fn packets_go_to_the_owner_then_through_the_holders() {
        // A packet forwarded once already (the tour's step).
        let t = |me, owner, h: [u8; 2], kind, serving: bool| {
            forward_target(me, owner, h, 9, 1, kind, || serving)
        };
        // Not ours: the owner, whatever the kind or the holders.
        for kind in [TcpSyn, TcpOther, Connectionless] {
            assert_eq!(t(1, 2, [3, NONE], kind, true), Some(2));
            assert_eq!(t(1, 2, [NONE, NONE], kind, false), Some(2));
        }
        // Ours but not accepted: a connection's packet to the first
        // holder, which passes it to the second, which returns it to the
        // owner (dropped there as coming straight back, or at the bound).
        assert_eq!(t(1, 1, [3, 4], TcpOther, true), Some(3));
        assert_eq!(t(3, 1, [3, 4], TcpOther, true), Some(4));
        assert_eq!(t(4, 1, [3, 4], TcpOther, true), Some(1));
        assert_eq!(t(3, 1, [3, NONE], TcpOther, true), Some(1));
        assert_eq!(t(3, 1, [3, 4], TcpSyn, true), Some(1));
        assert_eq!(t(1, 1, [NONE, NONE], TcpOther, true), None);
        assert_eq!(t(1, 1, [3, 4], TcpSyn, true), None);
        // Past the lease, our own stale slot: the fallback, for anything.
        assert_eq!(t(1, 1, [NONE, NONE], TcpSyn, false), Some(9));
        assert_eq!(t(1, 1, [1, NONE], TcpOther, false), Some(9));
        assert_eq!(t(1, 1, [3, NONE], TcpOther, false), Some(9));
        // Nobody owns it, or nobody to go to.
        assert_eq!(t(1, NONE, [3, 4], TcpOther, false), None);
        assert_eq!(forward_target(1, 1, [1, 1], 1, 1, TcpOther, || false), None);
        assert_eq!(
            forward_target(1, 1, [NONE, NONE], NONE, 1, TcpSyn, || false),
            None
        );
    }

    #[test]
    fn a_holder_sends_a_connection_from_the_router_to_the_owner_first() {
        // Member 3 first holder, 4 second, 1 owner: straight from the
        // router (hop 0) the owner may hold it; from the owner's tour, the
        // second holder.
        let at = |me, hop| forward_target(me, 1, [3, 4], 9, hop, TcpOther, || true);
        assert_eq!(at(3, 0), Some(1));
        assert_eq!(at(3, 1), Some(4));
        assert_eq!(at(3, 2), Some(4));
        // The second holder and the owner do not look at the hop.
        assert_eq!(at(4, 0), Some(1));
        assert_eq!(at(1, 0), Some(3));
    }

    #[test]
    fn a_packet_never_goes_straight_back() {
        // The owner (1) whose first holder (3) brought it: the second (4).
        assert_eq!(instead_of_straight_back(1, 1, [3, 4], 3), Some(4));
        // ... with no second holder: nowhere.
        assert_eq!(instead_of_straight_back(1, 1, [3, NONE], 3), None);
        // A holder whose next holder sent it: the owner.
        assert_eq!(instead_of_straight_back(3, 1, [3, 4], 4), Some(1));
        // The target is the owner itself, or this node owns it: nowhere.
        assert_eq!(instead_of_straight_back(3, 1, [3, 4], 1), None);
        assert_eq!(instead_of_straight_back(1, 1, [3, 4], 4), None);
    }
}
