//! This node's verdict for a flow, given its slot's state.
//!
//! The four states implement break-before-make handoff with connection
//! preservation (DESIGN S1, S6). Every node sees every packet, so the old
//! and the new owner of a slot decide on the same packet independently:
//!
//! | packet            | OWNED   | RELEASING       | ACQUIRING       | NOT_OWNED |
//! |-------------------|---------|-----------------|-----------------|-----------|
//! | TCP SYN (new)     | accept, track | drop, forget | accept, track | drop |
//! | TCP, tracked      | accept  | accept          | accept          | drop      |
//! | TCP, not tracked  | accept  | drop            | drop            | drop      |
//! | UDP, ICMP, other  | accept  | drop            | accept          | drop      |
//!
//! With the old owner RELEASING and the new one ACQUIRING, a new flow is
//! accepted only by the new owner and an established one only by the node
//! that tracks it. UDP has no connection to preserve, so it moves at once.

use xnlb_common::{flow_flag, ipproto, slot_state, FlowKey, FlowValue};

use crate::clock::now;
use crate::l4::Flow;
use crate::XNLB_FLOWS;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop,
    Pass,
    /// Accepted only because this node tracks the connection.
    PassTracked,
}

#[inline(always)]
fn key(flow: &Flow) -> FlowKey {
    FlowKey {
        client: flow.client,
        vip: flow.vip,
        client_port: (flow.ports & 0xffff) as u16,
        vip_port: (flow.ports >> 16) as u16,
        proto: flow.proto,
        _pad: 0,
        _pad2: 0,
    }
}

#[inline(always)]
fn track(flow: &Flow, slot: u32) {
    let v = FlowValue {
        last_seen_ns: now(),
        slot,
        flags: 0,
    };
    // A full LRU evicts the oldest entry; failing to track only means the
    // connection is not preserved across a handoff.
    let _ = XNLB_FLOWS.insert(&key(flow), &v, 0);
}

/// Accept a tracked connection's packet, refreshing its entry.
#[inline(always)]
fn tracked(flow: &Flow) -> bool {
    match XNLB_FLOWS.get_ptr_mut(&key(flow)) {
        Some(v) => {
            // SAFETY: pointer into the map value, valid for this run.
            unsafe {
                (*v).last_seen_ns = now();
                if flow.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
                    (*v).flags |= flow_flag::CLOSING;
                }
            }
            true
        }
        None => false,
    }
}

/// The verdict for `flow` in a slot this node holds in `state`.
#[inline(always)]
pub fn decide(state: u8, flow: &Flow, slot: u32) -> Decision {
    let tcp = flow.proto == ipproto::TCP;
    let syn = tcp && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    match state {
        slot_state::OWNED => {
            if syn {
                track(flow, slot);
            } else if tcp && flow.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
                // Once per connection, not per packet: a connection that
                // ended must not hold up a later handoff of this bucket.
                tracked(flow);
            }
            Decision::Pass
        }
        slot_state::RELEASING => {
            if !tcp {
                Decision::Drop
            } else if syn {
                // The client reused the 4-tuple: the old connection is gone,
                // and the new one belongs to the acquiring node.
                let _ = XNLB_FLOWS.remove(&key(flow));
                Decision::Drop
            } else if tracked(flow) {
                Decision::PassTracked
            } else {
                Decision::Drop
            }
        }
        slot_state::ACQUIRING => {
            if !tcp {
                Decision::Pass
            } else if syn {
                track(flow, slot);
                Decision::Pass
            } else if tracked(flow) {
                Decision::PassTracked
            } else {
                Decision::Drop
            }
        }
        _ => Decision::Drop,
    }
}
