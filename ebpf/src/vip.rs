//! A packet addressed to a VIP: which VIP it is for, and this node's
//! verdict on it. [`VipPacket`] carries what L3 learnt; its
//! [`VipPacket::verdict`] parses L4, picks the rule, hashes the flow and
//! reads this node's slot state, following the truth table in
//! [`crate::verdict`].

use xnlb_common::{
    counter, ctrl, family, flow_hash, frag, match_rule, mode, slot_state, FlowWords, FragKey,
    Table, Vip, MAX_SLOTS, MAX_VIPS,
};

use crate::clock::{lease_valid, now, standing, Standing};
use crate::drop_log::{why, Stats};
use crate::l3::MAX_L4_OFF;
use crate::packet::Frame;
use crate::verdict::{self, Decision};
use crate::{l4, XDP_DROP, XDP_PASS, XNLB_CTRL, XNLB_FRAGS};

/// Index of the VIP with IPv4 address word `addr`.
#[inline(always)]
pub fn find_vip4(t: &Table, addr: u32) -> Option<usize> {
    let n = t.nvips as usize;
    for i in 0..MAX_VIPS {
        if i >= n {
            break;
        }
        let v = &t.vips[i];
        if v.family == family::V4 && v.addr[0] == addr {
            return Some(v.index as usize);
        }
    }
    None
}

/// Index of the VIP with IPv6 address words `addr`.
#[inline(always)]
pub fn find_vip6(t: &Table, addr: &[u32; 4]) -> Option<usize> {
    let n = t.nvips as usize;
    for i in 0..MAX_VIPS {
        if i >= n {
            break;
        }
        let v = &t.vips[i];
        if v.family == family::V6
            && v.addr[0] == addr[0]
            && v.addr[1] == addr[1]
            && v.addr[2] == addr[2]
            && v.addr[3] == addr[3]
        {
            return Some(v.index as usize);
        }
    }
    None
}

/// IP fragment facts of the outer packet.
#[derive(Clone, Copy)]
pub struct Fragment {
    /// Part of a fragmented datagram (MF set or offset non-zero).
    pub fragmented: bool,
    /// Offset non-zero: carries no L4 header.
    pub later: bool,
    /// IP identification (IPv4: 16 bits; IPv6: 32 bits).
    pub id: u32,
}

/// A well-formed IP packet for one of the table's VIPs, as L3 left it.
pub struct VipPacket {
    /// The VIP's index in [`Table::vips`].
    pub vip: usize,
    /// [`family`] of the packet.
    pub family: u8,
    /// IP protocol (after any IPv6 extension headers).
    pub proto: u8,
    /// Source address words (IPv4 in word 0).
    pub src: [u32; 4],
    /// Destination (VIP) address words.
    pub dst: [u32; 4],
    /// Offset of the L4 header in the frame (none in a later fragment).
    pub l4: usize,
    pub fragment: Fragment,
    /// Sent to a cluster MAC: an accepted packet needs the interface's MAC.
    pub cluster_dst: bool,
}

impl VipPacket {
    /// This node's verdict: pass it up the stack as its own, or drop it
    /// (another node's, disabled, fenced or malformed). The probe variant
    /// also writes the hash and slot over the start of the frame.
    #[inline(always)]
    pub fn verdict<const PROBE: bool>(&self, f: &Frame, t: &Table, stats: Stats) -> u32 {
        if self.l4 > MAX_L4_OFF {
            return stats.malformed(why::EXT_CHAIN);
        }
        if self.fragment.later {
            return self.later_fragment_verdict(f, t, &self.frag_key(), stats);
        }
        let Some(flow) = l4::flow(f, self) else {
            return stats.malformed(why::TRUNCATED_L4);
        };
        if self.vip >= MAX_VIPS {
            return XDP_DROP;
        }
        let vip: &Vip = &t.vips[self.vip];
        let rule = if cfg!(feature = "bisect-no-rule-scan") {
            xnlb_common::RuleMatch {
                mode: vip.default_mode,
                affinity: xnlb_common::affinity::NONE,
                slot: vip.default_slot,
            }
        } else {
            match_rule(vip, &t.port_maps[self.vip], flow.proto, flow.dport)
        };
        if rule.mode == mode::DISABLED {
            stats.bump(counter::DROPPED_DISABLED);
            return XDP_DROP;
        }
        let words = FlowWords::new(
            self.family,
            flow.client,
            flow.ports,
            flow.proto,
            rule.affinity,
        );
        let hash = flow_hash(t.seed, &words);
        let slot = rule.slot_index(hash, t.buckets);
        if slot >= MAX_SLOTS {
            return XDP_DROP;
        }
        if PROBE {
            write_probe_result(f, hash, slot);
        }
        let state = t.state[slot];
        // Fail closed: a node past its lease accepts nothing new (S3). For
        // a while (held delivery) it still delivers the connections its own
        // kernel holds: the cluster lists it as a previous owner of every
        // slot it held for longer than that, so every other node drops
        // them (S6). A slot it does not hold is dropped below without
        // reading the clock, the common case on every node.
        let decision = if state == slot_state::NOT_OWNED {
            Decision::Drop
        } else {
            match standing() {
                Standing::Serving => verdict::decide(f, state, &flow, self.family),
                Standing::Holding => match verdict::decide_holding(f, &flow, self.family) {
                    Decision::Drop => return stats.fenced(),
                    d => d,
                },
                Standing::Fenced => return stats.fenced(),
            }
        };
        match decision {
            Decision::Drop => {
                stats.bump(counter::DROPPED_NOT_OWNER);
                XDP_DROP
            }
            d => {
                if self.fragment.fragmented {
                    // Failure only loses the later fragments.
                    let _ = XNLB_FRAGS.insert(&self.frag_key(), &frag::pack(slot, now()), 0);
                }
                if d == Decision::PassHeld {
                    stats.bump(counter::PASSED_HELD);
                }
                if flow.icmp_error {
                    stats.bump(counter::PASSED_ICMP_ERROR);
                }
                self.accept(f, stats)
            }
        }
    }

    /// The key of this packet's datagram in `XNLB_FRAGS`. Built only for a
    /// fragment: 40 bytes of stack stores that an unfragmented packet (the
    /// steady path) must not pay for.
    #[inline(always)]
    fn frag_key(&self) -> FragKey {
        FragKey {
            src: self.src,
            dst: self.dst,
            id: self.fragment.id,
            proto: self.proto,
            _pad: 0,
            _pad2: 0,
        }
    }

    /// A later fragment has no L4 header: follow the node that took the
    /// first fragment, while that entry is young and its slot is still held
    /// here (an IP id reused after the slot moved must not be taken by a
    /// stale entry).
    #[inline(always)]
    fn later_fragment_verdict(
        &self,
        f: &Frame,
        t: &Table,
        frag_key: &FragKey,
        stats: Stats,
    ) -> u32 {
        if let Some(entry) = XNLB_FRAGS.get_ptr(frag_key) {
            // SAFETY: pointer into the map value, valid for this run.
            let (slot, at) = frag::unpack(unsafe { *entry });
            if frag::fresh(at, now()) && slot < MAX_SLOTS && t.state[slot] != slot_state::NOT_OWNED
            {
                if !lease_valid() {
                    return stats.fenced();
                }
                stats.bump(counter::PASSED_FRAGMENT);
                return self.accept(f, stats);
            }
        }
        stats.bump(counter::DROPPED_NOT_OWNER);
        XDP_DROP
    }

    /// Pass the packet up the stack, as the node's own.
    #[inline(always)]
    fn accept(&self, f: &Frame, stats: Stats) -> u32 {
        stats.bump(counter::PASSED);
        if self.cluster_dst {
            // The stack drops unicast IP sent to a multicast or foreign MAC:
            // rewrite the cluster MAC to the interface's.
            if let (Some(mac), Some(eth)) = (XNLB_CTRL.get(ctrl::IFMAC), f.get::<6>(0)) {
                let m = mac.to_le_bytes();
                eth.write_mac(0, &[m[0], m[1], m[2], m[3], m[4], m[5]]);
            }
        }
        XDP_PASS
    }
}

/// The probe's output: the flow hash (8 bytes, little endian) and the slot
/// (4 bytes) over the start of the frame.
#[inline(always)]
pub fn write_probe_result(f: &Frame, hash: u64, slot: usize) {
    if let Some(out) = f.get::<12>(0) {
        let h = hash.to_le_bytes();
        let s = (slot as u32).to_le_bytes();
        out.write::<12>(
            0,
            &[
                h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], s[0], s[1], s[2], s[3],
            ],
        );
    }
}
