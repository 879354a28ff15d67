//! This node's verdict for a flow, given its slot's state.
//!
//! The four states implement break-before-make handoff with connection
//! preservation (DESIGN S1, S6). Every node sees every packet, so the old
//! and the new owner of a slot decide on the same packet independently,
//! and the kernel's own socket table says which of them holds a connection:
//!
//! | packet              | OWNED  | RELEASING        | ACQUIRING        | NOT_OWNED |
//! |---------------------|--------|------------------|------------------|-----------|
//! | TCP SYN (new)       | accept | drop             | accept           | drop      |
//! | TCP, socket here    | accept | accept           | accept           | drop      |
//! | TCP, no socket here | accept | drop             | drop             | drop      |
//! | UDP, ICMP, other    | accept | drop             | accept           | drop      |
//!
//! "Socket here" is `bpf_skc_lookup_tcp` in this node's network namespace:
//! a socket in a state that carries the connection (a request socket from
//! the handshake, established, or closing; not a listener, not TIME_WAIT).
//! With the old owner RELEASING and the new one ACQUIRING, a new flow is
//! accepted only by the new owner and an established one only by the node
//! whose kernel holds it. The kernel validates sequence numbers and forgets
//! a connection that ended (FIN, RST, timeout), so a spoofed packet cannot
//! end a connection's preservation, no table evicts long-lived connections
//! under churn, and a handoff ends when the old owner holds no socket.
//! OWNED and NOT_OWNED, the steady state, never look anything up. UDP has
//! no connection to preserve, so it moves at once.
//!
//! Past the lease ([`decide_holding`]), in any slot but NOT_OWNED, only
//! "TCP, socket here" is accepted, until the held-delivery deadline; the
//! cluster keeps this node a previous owner of those slots for longer, so
//! no other node accepts those connections (docs/SAFETY.md, S6).

use aya_ebpf::bindings::{bpf_sock_tuple, BPF_F_CURRENT_NETNS};
use aya_ebpf::helpers::{bpf_sk_release, bpf_skc_lookup_tcp};
use xnlb_common::{family, holding_verdict, slot_verdict, PacketKind, SlotVerdict};

use crate::l4::Flow;
use crate::packet::Frame;

/// TCP states (`include/net/tcp_states.h`) whose socket carries a
/// connection this node must keep serving: ESTABLISHED 1, SYN_RECV 3,
/// FIN_WAIT1 4, FIN_WAIT2 5, CLOSE_WAIT 8, LAST_ACK 9, CLOSING 11,
/// NEW_SYN_RECV 12 (a request socket: the handshake's last ACK). Not
/// LISTEN (10): every node listens. Not TIME_WAIT (6) or CLOSE (7): the
/// connection is over, and its 4-tuple may be reused at the new owner.
const HELD_STATES: u32 =
    (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11) | (1 << 12);

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop,
    Pass,
    /// Accepted because this node's kernel holds the connection (in a slot
    /// being handed over).
    PassHeld,
}

/// Whether this node's kernel holds a socket for `flow` (client to VIP) in
/// a state that carries the connection.
#[inline(always)]
fn held_here(f: &Frame, flow: &Flow, fam: u8) -> bool {
    // SAFETY: an all-zero tuple is a valid value of this plain C union.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let sport = (flow.ports & 0xffff) as u16;
    let dport = (flow.ports >> 16) as u16;
    // (Writing a union field is safe; only reading one is not.)
    let size = if fam == family::V4 {
        tuple.__bindgen_anon_1.ipv4.saddr = flow.client[0];
        tuple.__bindgen_anon_1.ipv4.daddr = flow.vip[0];
        tuple.__bindgen_anon_1.ipv4.sport = sport;
        tuple.__bindgen_anon_1.ipv4.dport = dport;
        12u32
    } else {
        tuple.__bindgen_anon_1.ipv6.saddr = flow.client;
        tuple.__bindgen_anon_1.ipv6.daddr = flow.vip;
        tuple.__bindgen_anon_1.ipv6.sport = sport;
        tuple.__bindgen_anon_1.ipv6.dport = dport;
        36u32
    };
    // SAFETY: the helper takes the program context, a tuple of `size`
    // bytes on our stack, the current namespace and no flags; a non-null
    // result is a referenced socket we release before returning.
    unsafe {
        let sk = bpf_skc_lookup_tcp(f.ctx, &mut tuple, size, BPF_F_CURRENT_NETNS as u64, 0);
        if sk.is_null() {
            return false;
        }
        let state = (*sk).state;
        bpf_sk_release(sk as *mut core::ffi::c_void);
        state < 32 && HELD_STATES & (1 << state) != 0
    }
}

/// The verdict past the lease but within held delivery
/// ([`xnlb_common::holding_verdict`]): a connection this node's kernel
/// holds is still delivered (every other node drops it: the cluster keeps
/// this node a previous owner of the slot for longer than this window, so
/// the slot's owner looks its own sockets up); nothing new is accepted.
#[inline(always)]
pub fn decide_holding(f: &Frame, flow: &Flow, fam: u8) -> Decision {
    match holding_verdict(PacketKind::of(flow.proto, flow.tcp_flags)) {
        SlotVerdict::AcceptIfHeld if held_here(f, flow, fam) => Decision::PassHeld,
        _ => Decision::Drop,
    }
}

/// The verdict for `flow` in a slot this node holds in `state`: the shared
/// truth table ([`xnlb_common::verdict`]), with the socket lookup only for
/// the cells that need it.
#[inline(always)]
pub fn decide(f: &Frame, state: u8, flow: &Flow, fam: u8) -> Decision {
    match slot_verdict(state, PacketKind::of(flow.proto, flow.tcp_flags)) {
        SlotVerdict::Accept => Decision::Pass,
        SlotVerdict::AcceptIfHeld if held_here(f, flow, fam) => Decision::PassHeld,
        _ => Decision::Drop,
    }
}
