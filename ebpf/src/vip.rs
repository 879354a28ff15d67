//! A packet addressed to a VIP: which VIP it is for, and this node's
//! verdict on it. [`VipPacket`] carries what L3 learnt; its
//! [`VipPacket::verdict`] parses L4, picks the rule, hashes the flow and
//! reads this node's slot state, following the truth table in
//! [`crate::verdict`].

use xnlb_common::{
    counter, ctrl, ethertype, family, flow_hash, forward_target, frag, instead_of_straight_back,
    mac_mode, match_rule, mode, route_kind, shim, slot_state, FlowWords, FragKey, PacketKind,
    Table, Vip, ETH_HLEN, MAX_HOPS, MAX_SLOTS, MAX_VIPS,
};

use aya_ebpf::helpers::bpf_xdp_adjust_head;

use crate::clock::{lease_valid, now, standing, Standing};
use crate::drop_log::{why, Stats};
use crate::l3::MAX_L4_OFF;
use crate::packet::Frame;
use crate::verdict::{self, Decision};
use crate::{l4, XDP_DROP, XDP_PASS, XDP_TX, XNLB_CTRL, XNLB_FRAGS, XNLB_MEMBERS};

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
    /// Offset of the L3 header (past VLAN tags and routed mode's shim).
    pub l3: usize,
}

/// How many times other nodes forwarded this frame (routed mode's
/// [`shim`], right after the MACs; 0 without one).
#[inline(always)]
pub fn hop(f: &Frame) -> u8 {
    match f.get::<{ shim::HOP + 1 }>(0) {
        Some(h) if h.be16(12) == ethertype::FORWARDED => h.u8(shim::HOP),
        _ => 0,
    }
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
        // Whether the lease is valid, when it was read (not for a slot
        // this node does not hold).
        let mut serving = None;
        let decision = if state == slot_state::NOT_OWNED {
            Decision::Drop
        } else {
            let s = standing();
            serving = Some(s == Standing::Serving);
            match s {
                Standing::Serving => verdict::decide(f, state, &flow, self.family),
                Standing::Holding => verdict::decide_holding(f, &flow, self.family),
                Standing::Fenced => Decision::Drop,
            }
        };
        match decision {
            Decision::Drop if vip.mac_mode == mac_mode::ROUTED => {
                let kind = PacketKind::of(flow.proto, flow.tcp_flags);
                self.forward(f, t, slot, kind, serving, stats)
            }
            Decision::Drop if serving == Some(false) => stats.fenced(),
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

    /// Routed mode: send a packet this node does not accept to the node
    /// that does ([`xnlb_common::forward`]): the target's MAC as
    /// destination, ours as source, the forwarding ethertype for the hop,
    /// back out of the interface it came in on. Drops what may not go on.
    #[inline(always)]
    fn forward(
        &self,
        f: &Frame,
        t: &Table,
        slot: usize,
        kind: PacketKind,
        serving: Option<bool>,
        stats: Stats,
    ) -> u32 {
        let unroutable = || {
            stats.bump(counter::DROPPED_UNROUTABLE);
            XDP_DROP
        };
        let hop = hop(f);
        if hop >= MAX_HOPS || slot >= MAX_SLOTS {
            return unroutable();
        }
        let holders = [t.holder[slot], t.holder2[slot]];
        let Some(target) =
            forward_target(t.me, t.owner[slot], holders, t.fallback, hop, kind, || {
                serving.unwrap_or_else(lease_valid)
            })
        else {
            return unroutable();
        };
        let (Some(mut route), Some(eth), Some(ours)) = (
            XNLB_MEMBERS.get(target as u32),
            f.get::<12>(0),
            XNLB_CTRL.get(ctrl::IFMAC),
        ) else {
            return unroutable();
        };
        // Never straight back to where it came from (the frame's source
        // MAC is the target's).
        let from = eth.read_mac(6);
        if route.kind == route_kind::L2 && from == route.mac {
            let Some(instead) = instead_of_straight_back(t.me, t.owner[slot], holders, target)
            else {
                return unroutable();
            };
            match XNLB_MEMBERS.get(instead as u32) {
                Some(r) if r.mac != from => route = r,
                _ => return unroutable(),
            }
        }
        if route.kind == route_kind::IPIP {
            return crate::tunnel::encapsulate(f, self.l3, hop, self.family, route, stats);
        }
        if route.kind != route_kind::L2 {
            return unroutable();
        }
        let m = ours.to_le_bytes();
        let ours = [m[0], m[1], m[2], m[3], m[4], m[5]];
        if hop == 0 {
            // First forward: make room for the shim after the MACs.
            // SAFETY: the program's own context; XDP leaves headroom.
            if unsafe { bpf_xdp_adjust_head(f.ctx as *mut _, -(shim::LEN as i32)) } != 0 {
                return unroutable();
            }
            let Some(h) = f.reload().get::<{ ETH_HLEN + shim::LEN }>(0) else {
                return unroutable();
            };
            h.write_mac(0, &route.mac);
            h.write_mac(6, &ours);
            h.write::<4>(12, &[0x88, 0xb5, 1, 0]);
        } else {
            let Some(h) = f.get::<{ shim::HOP + 1 }>(0) else {
                return unroutable();
            };
            h.write_mac(0, &route.mac);
            h.write_mac(6, &ours);
            h.write::<1>(shim::HOP, &[hop + 1]);
        }
        stats.bump(counter::FORWARDED);
        XDP_TX
    }

    /// Pass the packet up the stack, as the node's own.
    #[inline(always)]
    fn accept(&self, f: &Frame, stats: Stats) -> u32 {
        stats.bump(counter::PASSED);
        if hop(f) != 0 {
            // Forwarded here: out with the shim, the stack takes the frame
            // as it was (the MACs move up over it).
            let Some(h) = f.get::<{ ETH_HLEN + shim::LEN }>(0) else {
                return XDP_DROP;
            };
            let (dst, src) = (h.read_mac(0), h.read_mac(6));
            h.write_mac(shim::LEN, &dst);
            h.write_mac(shim::LEN + 6, &src);
            // SAFETY: the program's own context; the frame holds the shim.
            if unsafe { bpf_xdp_adjust_head(f.ctx as *mut _, shim::LEN as i32) } != 0 {
                return XDP_DROP;
            }
            return XDP_PASS;
        }
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
