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
//!   table, which forwards it to the owner it knows.
//!
//! A packet is forwarded at most twice (`ethertype::FORWARDED`, then
//! `FORWARDED_AGAIN`): router → any node → owner → previous holder, or
//! router → previous holder → owner. Each node accepts only what its own
//! verdict accepts, so the nodes that see a packet are a subset of flood
//! mode's and at most one of them accepts it (S1 is flood mode's); a
//! disagreement between two nodes' epochs drops a packet, never loops it.

use crate::layout::NO_MEMBER;
use crate::verdict::PacketKind;

/// How many times a packet may be forwarded in all.
pub const MAX_HOPS: u8 = 2;

/// The member to forward a packet of `kind` to, given this node's id
/// `me`, the slot's `owner` and lingering `holder`, and the table's
/// `fallback`; `None`: drop. `serving` says whether the lease is valid;
/// it is asked only when this node owns the slot (the program then reads
/// the clock; a packet for another node's slot does not).
#[inline(always)]
pub fn forward_target(
    me: u8,
    owner: u8,
    holder: u8,
    fallback: u8,
    kind: PacketKind,
    serving: impl FnOnce() -> bool,
) -> Option<u8> {
    let target = if owner == NO_MEMBER {
        NO_MEMBER
    } else if owner != me {
        owner
    } else if kind == PacketKind::TcpOther && holder != me {
        holder
    } else if !serving() {
        fallback
    } else {
        NO_MEMBER
    };
    if target == NO_MEMBER || target == me {
        None
    } else {
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PacketKind::*;

    #[test]
    fn packets_go_to_the_owner_then_to_the_holder() {
        // Not ours: the owner, whatever the kind or the holder.
        for kind in [TcpSyn, TcpOther, Connectionless] {
            assert_eq!(forward_target(1, 2, 3, 3, kind, || true), Some(2));
            assert_eq!(forward_target(1, 2, 1, 3, kind, || false), Some(2));
        }
        // Ours but not accepted: a connection's packet to the holder.
        assert_eq!(forward_target(1, 1, 3, 2, TcpOther, || true), Some(3));
        assert_eq!(forward_target(1, 1, NO_MEMBER, 2, TcpOther, || true), None);
        assert_eq!(forward_target(1, 1, 3, 2, TcpSyn, || true), None);
        // Past the lease, our own stale slot: the fallback.
        assert_eq!(
            forward_target(1, 1, NO_MEMBER, 2, TcpSyn, || false),
            Some(2)
        );
        assert_eq!(forward_target(1, 1, 1, 2, TcpOther, || false), Some(2));
        // Nobody owns it, or nobody to go to.
        assert_eq!(forward_target(1, NO_MEMBER, 3, 2, TcpOther, || false), None);
        assert_eq!(forward_target(1, 1, 1, 1, TcpOther, || false), None);
        assert_eq!(forward_target(1, 1, 1, NO_MEMBER, TcpSyn, || false), None);
    }
}
