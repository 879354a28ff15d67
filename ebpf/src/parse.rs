//! From frame to verdict: L2 (VLAN), L3 (IPv4 options, IPv6 extension
//! headers, fragments), L4 (ports, TCP flags, ICMP echo and errors), then the
//! rule, the hash and this node's slot state.

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns},
    programs::XdpContext,
};
use core::cell::Cell;

use xnlb_common::{
    counter, ctrl, family, flow_hash, frag, ipproto, match_rule, mode, slot_state, Counters,
    FlowWords, FragKey, Table, Vip, MAX_IPV6_EXT, MAX_SLOTS, MAX_VIPS, MAX_VLAN_DEPTH,
};

use crate::packet::Frame;
use crate::verdict::{self, Decision};
use crate::{
    reply, XDP_DROP, XDP_PASS, XNLB_CTRL, XNLB_FRAGS, XNLB_LOGRL, XNLB_STATS, XNLB_TABLES,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// Headers of a VIP packet must end before this offset. It bounds the
/// variable offsets the verifier has to reason about; real traffic never
/// comes close (2 VLAN tags + 40 + a few extension headers).
const MAX_L4_OFF: usize = 512;

/// Per-CPU counters of this packet's CPU (null if the map is missing), and
/// why the packet was dropped, for the one rate-limited log line.
#[derive(Clone, Copy)]
pub struct Stats<'a> {
    counters: *mut Counters,
    why: &'a Cell<u8>,
}

impl Stats<'_> {
    #[inline(always)]
    pub fn bump(self, i: usize) {
        if !self.counters.is_null() && i < counter::COUNT {
            // SAFETY: per-CPU value of this CPU; XDP runs with preemption off.
            unsafe { (*self.counters).c[i] += 1 };
        }
    }

    /// Counts a malformed drop and remembers why.
    #[inline(always)]
    pub fn malformed(self, why: u8) -> u32 {
        self.bump(counter::DROPPED_MALFORMED);
        self.why.set(why);
        XDP_DROP
    }

    /// Counts a fenced drop (lease expired).
    #[inline(always)]
    pub fn fenced(self) -> u32 {
        self.bump(counter::DROPPED_FENCED);
        self.why.set(why::FENCED);
        XDP_DROP
    }
}

/// Why a packet was dropped, for the log (0: nothing to log).
pub mod why {
    pub const TRUNCATED_L2: u8 = 1;
    pub const UNPARSABLE_L2: u8 = 2;
    pub const TRUNCATED_L3: u8 = 3;
    pub const BAD_VERSION: u8 = 4;
    pub const BAD_LENGTH: u8 = 5;
    pub const BAD_FRAGMENT: u8 = 6;
    pub const EXT_CHAIN: u8 = 7;
    pub const TRUNCATED_L4: u8 = 8;
    pub const FENCED: u8 = 9;

    /// The log text of a reason.
    #[inline(always)]
    pub fn text(why: u8) -> &'static str {
        match why {
            TRUNCATED_L2 => "frame shorter than an Ethernet header",
            UNPARSABLE_L2 => {
                "frame to a cluster MAC with an unknown ethertype or VLAN stack deeper than 2"
            }
            TRUNCATED_L3 => "IP header truncated",
            BAD_VERSION => "IP version does not match the ethertype",
            BAD_LENGTH => "IP header or datagram length inconsistent with the frame",
            BAD_FRAGMENT => "fragment offset past 64 KiB",
            EXT_CHAIN => "IPv6 extension headers too many or too long",
            TRUNCATED_L4 => "transport header (or quoted ICMP flow) truncated",
            _ => "lease expired: dropping VIP traffic until the agent renews it (fenced)",
        }
    }
}

/// One log line per CPU per second at most: a flood of bad packets must not
/// become a flood of log records.
#[inline(always)]
fn may_log() -> bool {
    let Some(last) = XNLB_LOGRL.get_ptr_mut(0) else {
        return false;
    };
    let t = now();
    // SAFETY: this CPU's value; preemption is off in XDP.
    unsafe {
        if t.wrapping_sub(*last) < 1_000_000_000 {
            return false;
        }
        *last = t;
    }
    true
}

/// What the L3/L4 parser learnt about a VIP packet, from the client's side:
/// for an ICMP error this is the quoted flow, not the ICMP packet.
pub struct Flow {
    pub client: [u32; 4],
    pub vip: [u32; 4],
    pub proto: u8,
    /// Wire bytes `[client port, vip port]` loaded little-endian.
    pub ports: u32,
    /// VIP port in host order, for the rule match.
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_error: bool,
}

/// IP fragment facts of the outer packet.
#[derive(Clone, Copy)]
struct Frag {
    /// Part of a fragmented datagram (MF set or offset non-zero).
    fragmented: bool,
    /// Offset non-zero: carries no L4 header.
    later: bool,
    id: u32,
}

/// Entry point shared by the filter and the probe: the verdict, and a
/// rate-limited log line when a packet is dropped as malformed or fenced.
#[inline(always)]
pub fn process<const PROBE: bool>(ctx: &XdpContext) -> u32 {
    let reason = Cell::new(0u8);
    let stats = Stats {
        counters: XNLB_STATS.get_ptr_mut(0).unwrap_or(core::ptr::null_mut()),
        why: &reason,
    };
    let verdict = frame_verdict::<PROBE>(ctx, stats);
    let r = reason.get();
    if r != 0 && may_log() {
        aya_log_ebpf::warn!(ctx, "xnlb: dropped a packet: {}", why::text(r));
    }
    verdict
}

#[inline(always)]
fn frame_verdict<const PROBE: bool>(ctx: &XdpContext, stats: Stats) -> u32 {
    let f = Frame::new(ctx);
    let Some(eth) = f.get::<ETH_HLEN>(0) else {
        return stats.malformed(why::TRUNCATED_L2);
    };
    // Frames sent to a cluster MAC are ours even when we cannot parse them:
    // they drop as malformed; others are not ours to judge and pass.
    let cluster_dst = (eth.u8(0) == 0x02 || eth.u8(0) == 0x03) && eth.u8(1) == 0xbf;
    let unparsable = Unparsable { cluster_dst, stats };

    let mut ethertype = eth.be16(12);
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_DEPTH {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        match f.get::<4>(l3) {
            Some(tag) => ethertype = tag.be16(2),
            None => return unparsable.verdict(),
        }
        l3 += 4;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        // Deeper VLAN stack than we parse.
        return unparsable.verdict();
    }

    let Some(active) = XNLB_CTRL.get(ctrl::ACTIVE) else {
        return XDP_PASS;
    };
    let Some(table) = XNLB_TABLES.get((*active & 1) as u32) else {
        return XDP_PASS;
    };

    match ethertype {
        ETH_P_IP => ipv4::<PROBE>(&f, l3, table, cluster_dst, stats),
        ETH_P_IPV6 => ipv6::<PROBE>(&f, l3, table, cluster_dst, stats),
        ETH_P_ARP => reply::arp(&f, l3, table, stats),
        _ => unparsable.verdict(),
    }
}

/// The verdict for a frame we cannot parse far enough to judge.
#[derive(Clone, Copy)]
struct Unparsable<'a> {
    cluster_dst: bool,
    stats: Stats<'a>,
}

impl Unparsable<'_> {
    #[inline(always)]
    fn verdict(self) -> u32 {
        if self.cluster_dst {
            self.stats.malformed(why::UNPARSABLE_L2)
        } else {
            self.stats.bump(counter::NON_VIP);
            XDP_PASS
        }
    }
}

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

/// Now, on CLOCK_MONOTONIC_COARSE: the timekeeper's last tick, read without
/// touching the clock source (a few nanoseconds where a precise read costs
/// tens in a VM). For bookkeeping only (log rate, tracking, fragment age):
/// it stops during suspend and lags by a tick, so the lease never uses it.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper call with no arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// True while the agent's lease is valid (S3). The deadline is on
/// CLOCK_BOOTTIME, read precisely: it keeps counting through suspend, so a
/// node that wakes up after its peers took its buckets over is fenced at
/// once, and no tick of lag has to be allowed for. Only a packet this node
/// would otherwise accept pays for the read (see `finish`).
#[inline(always)]
pub fn lease_valid() -> bool {
    match XNLB_CTRL.get(ctrl::LEASE) {
        Some(deadline) => {
            // SAFETY: a helper call with no arguments.
            let now = unsafe { bpf_ktime_get_boot_ns() };
            now < *deadline
        }
        None => false,
    }
}

#[inline(always)]
fn ipv4<const PROBE: bool>(
    f: &Frame,
    l3: usize,
    t: &Table,
    cluster_dst: bool,
    stats: Stats,
) -> u32 {
    // A frame that says IPv4 but is not is dropped whoever it is for: the
    // stack would drop it too, and we cannot tell whether it was a VIP's.
    let Some(ip) = f.get::<20>(l3) else {
        return stats.malformed(why::TRUNCATED_L3);
    };
    let vihl = ip.u8(0);
    if vihl >> 4 != 4 {
        return stats.malformed(why::BAD_VERSION);
    }
    let dst = ip.word(16);
    let Some(vip_idx) = find_vip4(t, dst) else {
        stats.bump(counter::NON_VIP);
        return XDP_PASS;
    };
    stats.bump(counter::VIP_PACKETS);
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let total = ip.be16(2) as usize;
    let frag = ip.be16(6);
    // Header shorter than its minimum, or the datagram longer than the frame.
    if ihl < 20 || total < ihl || f.start + l3 + total > f.end {
        return stats.malformed(why::BAD_LENGTH);
    }
    let offset = ((frag & 0x1fff) as usize) * 8;
    if offset + (total - ihl) > 65535 {
        return stats.malformed(why::BAD_FRAGMENT);
    }
    let fr = Frag {
        fragmented: frag & 0x3fff != 0,
        later: offset != 0,
        id: ip.be16(4) as u32,
    };
    let src = [ip.word(12), 0, 0, 0];
    let vip = [dst, 0, 0, 0];
    finish::<PROBE>(
        f,
        l3 + ihl,
        t,
        vip_idx,
        family::V4,
        ip.u8(9),
        src,
        vip,
        fr,
        cluster_dst,
        stats,
    )
}

#[inline(always)]
fn ipv6<const PROBE: bool>(
    f: &Frame,
    l3: usize,
    t: &Table,
    cluster_dst: bool,
    stats: Stats,
) -> u32 {
    let Some(ip) = f.get::<40>(l3) else {
        return stats.malformed(why::TRUNCATED_L3);
    };
    if ip.u8(0) >> 4 != 6 {
        return stats.malformed(why::BAD_VERSION);
    }
    let next = ip.u8(6);
    if next == ipproto::ICMPV6 {
        if let Some(verdict) = reply::neighbour_solicitation(f, l3, t, stats) {
            return verdict;
        }
    }
    let dst = ip.words4(24);
    let Some(vip_idx) = find_vip6(t, &dst) else {
        stats.bump(counter::NON_VIP);
        return XDP_PASS;
    };
    stats.bump(counter::VIP_PACKETS);
    let src = ip.words4(8);
    let payload = ip.be16(4) as usize;
    if f.start + l3 + 40 + payload > f.end {
        return stats.malformed(why::BAD_LENGTH);
    }
    // Bounded walk over extension headers.
    let mut off = l3 + 40;
    let mut nh = next;
    let mut fr = Frag {
        fragmented: false,
        later: false,
        id: 0,
    };
    for _ in 0..MAX_IPV6_EXT {
        if off > MAX_L4_OFF {
            return stats.malformed(why::EXT_CHAIN);
        }
        if !matches!(nh, 0 | 43 | 60 | 44 | 51) {
            break;
        }
        let Some(ext) = f.get::<8>(off) else {
            return stats.malformed(why::EXT_CHAIN);
        };
        let len = ext.u8(1) as usize;
        off += match nh {
            // Fragment header: 8 bytes.
            44 => {
                let offset = ((ext.be16(2) >> 3) as usize) * 8;
                if offset + payload > 65535 {
                    return stats.malformed(why::BAD_FRAGMENT);
                }
                fr = Frag {
                    fragmented: true,
                    later: offset != 0,
                    id: ext.word(4),
                };
                8
            }
            // Authentication header: (len + 2) * 4 bytes.
            51 => (len + 2) * 4,
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            _ => (len + 1) * 8,
        };
        nh = ext.u8(0);
    }
    if matches!(nh, 0 | 43 | 60 | 44 | 51) || off > MAX_L4_OFF {
        // Chain longer than we walk, or headers too long.
        return stats.malformed(why::EXT_CHAIN);
    }
    finish::<PROBE>(
        f,
        off,
        t,
        vip_idx,
        family::V6,
        nh,
        src,
        dst,
        fr,
        cluster_dst,
        stats,
    )
}

/// L4 parse, classification and verdict for a VIP packet.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn finish<const PROBE: bool>(
    f: &Frame,
    l4: usize,
    t: &Table,
    vip_idx: usize,
    fam: u8,
    proto: u8,
    src: [u32; 4],
    dst: [u32; 4],
    fr: Frag,
    cluster_dst: bool,
    stats: Stats,
) -> u32 {
    if l4 > MAX_L4_OFF {
        return stats.malformed(why::EXT_CHAIN);
    }
    let frag_key = FragKey {
        src,
        dst,
        id: fr.id,
        proto,
        _pad: 0,
        _pad2: 0,
    };
    if fr.later {
        // No L4 header here: follow the node that took the first fragment,
        // while that entry is young and its slot is still held here (an IP
        // id reused after the slot moved must not be taken by a stale entry).
        if let Some(entry) = XNLB_FRAGS.get_ptr(&frag_key) {
            // SAFETY: pointer into the map value, valid for this run.
            let (slot, at) = frag::unpack(unsafe { *entry });
            if frag::fresh(at, now()) && slot < MAX_SLOTS && t.state[slot] != slot_state::NOT_OWNED
            {
                if !lease_valid() {
                    return stats.fenced();
                }
                stats.bump(counter::PASSED_FRAGMENT);
                return accept(f, cluster_dst, stats);
            }
        }
        stats.bump(counter::DROPPED_NOT_OWNER);
        return XDP_DROP;
    }
    let Some(flow) = l4_flow(f, l4, fam, proto, src, dst) else {
        return stats.malformed(why::TRUNCATED_L4);
    };
    if vip_idx >= MAX_VIPS {
        return XDP_DROP;
    }
    let vip: &Vip = &t.vips[vip_idx];
    let rule = match_rule(vip, flow.proto, flow.dport);
    if rule.mode == mode::DISABLED {
        stats.bump(counter::DROPPED_DISABLED);
        return XDP_DROP;
    }
    let words = FlowWords::new(fam, flow.client, flow.ports, flow.proto, rule.affinity);
    let hash = flow_hash(t.seed, &words);
    let slot = rule.slot_index(hash, t.buckets);
    if slot >= MAX_SLOTS {
        return XDP_DROP;
    }
    if PROBE {
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
    let state = t.state[slot];
    // Fail closed before any side effect of the verdict (tracking): a node
    // past its lease accepts nothing. A slot it does not hold is dropped
    // below without reading the clock, the common case on every node.
    if state != slot_state::NOT_OWNED && !lease_valid() {
        return stats.fenced();
    }
    match verdict::decide(state, &flow, slot as u32) {
        Decision::Drop => {
            stats.bump(counter::DROPPED_NOT_OWNER);
            XDP_DROP
        }
        d => {
            if fr.fragmented {
                // Failure only loses the later fragments.
                let _ = XNLB_FRAGS.insert(&frag_key, &frag::pack(slot, now()), 0);
            }
            if d == Decision::PassTracked {
                stats.bump(counter::PASSED_TRACKED);
            }
            if flow.icmp_error {
                stats.bump(counter::PASSED_ICMP_ERROR);
            }
            accept(f, cluster_dst, stats)
        }
    }
}

/// Pass a VIP packet up the stack, as the node's own.
#[inline(always)]
fn accept(f: &Frame, cluster_dst: bool, stats: Stats) -> u32 {
    stats.bump(counter::PASSED);
    if cluster_dst {
        // The stack drops unicast IP sent to a multicast or foreign MAC:
        // rewrite the cluster MAC to the interface's.
        if let (Some(mac), Some(eth)) = (XNLB_CTRL.get(ctrl::IFMAC), f.get::<6>(0)) {
            let m = mac.to_le_bytes();
            eth.write_mac(0, &[m[0], m[1], m[2], m[3], m[4], m[5]]);
        }
    }
    XDP_PASS
}

/// The client-side flow of a VIP packet whose L4 header starts at `l4`.
#[inline(always)]
fn l4_flow(f: &Frame, l4: usize, fam: u8, proto: u8, src: [u32; 4], dst: [u32; 4]) -> Option<Flow> {
    let mut flow = Flow {
        client: src,
        vip: dst,
        proto,
        ports: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_error: false,
    };
    match proto {
        ipproto::TCP => {
            let h = f.get::<20>(l4)?;
            flow.ports = h.word(0);
            flow.dport = h.be16(2);
            flow.tcp_flags = h.u8(13);
        }
        ipproto::UDP => {
            let h = f.get::<4>(l4)?;
            flow.ports = h.word(0);
            flow.dport = h.be16(2);
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            let h = f.get::<8>(l4)?;
            let ty = h.u8(0);
            let (echo, error) = if fam == family::V4 {
                (ty == 8 || ty == 0, matches!(ty, 3 | 4 | 11 | 12))
            } else {
                (ty == 128 || ty == 129, matches!(ty, 1..=4))
            };
            if echo {
                // Hash on (source, echo identifier).
                flow.ports = h.raw16(4) as u32;
            } else if error {
                quoted_flow(f, l4 + 8, fam, &mut flow)?;
                flow.icmp_error = true;
            }
        }
        _ => {}
    }
    Some(flow)
}

/// Reads the flow quoted in an ICMP error: our reply, VIP -> client, which we
/// turn around so it hashes like the client's packets.
#[inline(always)]
fn quoted_flow(f: &Frame, inner: usize, fam: u8, flow: &mut Flow) -> Option<()> {
    let (proto, inner_src, inner_dst, inner_l4) = if fam == family::V4 {
        let ip = f.get::<20>(inner)?;
        let vihl = ip.u8(0);
        let ihl = ((vihl & 0x0f) as usize) * 4;
        if vihl >> 4 != 4 || ihl < 20 {
            return None;
        }
        (
            ip.u8(9),
            [ip.word(12), 0, 0, 0],
            [ip.word(16), 0, 0, 0],
            inner + ihl,
        )
    } else {
        let ip = f.get::<40>(inner)?;
        (ip.u8(6), ip.words4(8), ip.words4(24), inner + 40)
    };
    if proto != ipproto::TCP && proto != ipproto::UDP {
        // Not a flow with ports: hash it like its outer source.
        return Some(());
    }
    let ports = f.get::<4>(inner_l4)?;
    flow.client = inner_dst;
    flow.vip = inner_src;
    flow.proto = proto;
    flow.ports = ports.raw16(2) as u32 | (ports.raw16(0) as u32) << 16;
    flow.dport = ports.be16(0);
    Some(())
}
