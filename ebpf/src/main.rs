//! The xnlb XDP program: parse -> classify -> verdict.
//!
//! A frame goes through [`l2`] (Ethernet, VLAN tags; ARP to [`reply`]),
//! [`l3`] (IPv4 options and fragments, IPv6 extension headers; neighbour
//! solicitations to [`reply`]) to a [`vip::VipPacket`], whose verdict reads
//! the flow from [`l4`] and this node's slot state through [`verdict`].
//! [`drop_log`] counts every packet and logs why one was dropped. A plain
//! IPv4 frame (no VLAN tag, no options, not a fragment), nearly every
//! packet, takes [`steady`]: a shortcut past L2 and L3 to the same verdict.
//!
//! Every node of the cluster sees every packet for a VIP. This program decides,
//! in the kernel, whether *this* node accepts it: it finds the VIP, picks the
//! port rule, hashes the flow with the shared definition in `xnlb_common::hash`,
//! and looks up this node's state for the bucket (or single slot) in the live
//! [`Table`]. Everything not addressed to a VIP passes untouched.
//!
//! Safety rules it enforces on its own, whatever the agent does:
//! - past the lease deadline in `XNLB_CTRL` every VIP packet is dropped (S3),
//! - unknown slot states drop, malformed VIP packets drop and are counted,
//! - a packet's verdict comes from exactly one [`Table`] (the agent swaps
//!   whole tables), so no packet sees half of one epoch and half of another.
#![no_std]
#![no_main]

mod clock;
mod drop_log;
mod l2;
mod l3;
mod l4;
mod packet;
mod reply;
mod steady;
mod tunnel;
mod verdict;
mod vip;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use core::cell::Cell;

use xnlb_common::{
    ctrl, ethertype, ipproto, Counters, FragKey, MemberRoute, Table, FRAG_TABLE_ENTRIES,
    MEMBER_ENTRIES,
};

/// Two tables; `XNLB_CTRL[ACTIVE]` names the live one.
#[map]
static XNLB_TABLES: Array<Table> = Array::pinned(2, 0);
/// Control words: active table, lease deadline, interface MAC, layout version.
#[map]
static XNLB_CTRL: Array<u64> = Array::pinned(ctrl::COUNT, 0);
/// Per-CPU counters by verdict.
#[map]
static XNLB_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(1, 0);
/// First fragments this node accepted; later fragments follow them.
#[map]
static XNLB_FRAGS: LruHashMap<FragKey, u64> = LruHashMap::pinned(FRAG_TABLE_ENTRIES, 0);

/// Routed mode: how to reach each member ([`MemberRoute`], by member id),
/// learnt and written by the agent.
#[map]
static XNLB_MEMBERS: Array<MemberRoute> = Array::pinned(MEMBER_ENTRIES, 0);

/// The filter itself at index 0 (set by the agent after loading): a
/// member's tunnel packet, once stripped, is judged from the start.
/// Pinned: the kernel empties a program array nobody in userspace holds,
/// and a crashed agent's program must still take apart the tunnel packets
/// of the connections it delivers (held delivery). A restarted agent
/// points it at its own program.
#[map]
static XNLB_JUMP: ProgramArray = ProgramArray::pinned(1, 0);

/// Last log time per CPU (coarse ns), so logging is rate-limited.
#[map]
static XNLB_LOGRL: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The filter attached to the interface. Written out rather than with
/// `#[xdp]` (which wraps the body in an inner function LLVM may leave out
/// of line): the tail call that judges a stripped tunnel packet again must
/// be in the program's own body, the kernel refuses it in a BPF
/// subprogram.
#[unsafe(no_mangle)]
#[unsafe(link_section = "xdp")]
pub fn xnlb(ctx: *mut aya_ebpf::bindings::xdp_md) -> u32 {
    run::<false>(&XdpContext::new(ctx))
}

/// Test probe: runs the same parser and classification, then writes the flow
/// hash (8 bytes, little endian) and slot index (4 bytes) over the start of
/// the frame, so `BPF_PROG_TEST_RUN` can prove the kernel computes what
/// userspace computes. Never attached to an interface.
#[xdp]
pub fn xnlb_probe(ctx: XdpContext) -> u32 {
    run::<true>(&ctx)
}

/// Entry point shared by the filter and the probe: the verdict, and a
/// rate-limited log line when a packet is dropped as malformed or fenced.
#[inline(always)]
fn run<const PROBE: bool>(ctx: &XdpContext) -> u32 {
    let why = Cell::new(0u8);
    let stats = drop_log::Stats::new(&why);
    let frame = packet::Frame::new(ctx);
    // (The probe takes the full path only: both paths end in the same
    // `VipPacket::verdict`, and the two together are more states than the
    // verifier explores for one program.)
    let steady = if PROBE {
        None
    } else {
        steady::plain_ipv4::<PROBE>(&frame, stats)
    };
    let mut verdict = match steady {
        Some(verdict) => verdict,
        None => l2::frame_verdict::<PROBE>(&frame, stats),
    };
    if verdict == tunnel::JUDGE_AGAIN {
        // (The probe is run only on frames it classifies: it makes no tail
        // call, which the kernel would refuse in its non-inlined body.)
        verdict = if PROBE {
            XDP_DROP
        } else {
            tunnel::judge_again(ctx, stats)
        };
    }
    if let Some(text) = drop_log::due(why.get()) {
        aya_log_ebpf::warn!(ctx, "xnlb: dropped a packet: {}", text);
    }
    verdict
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never linked in.
    loop {}
}

/// Verdict codes, re-exported for the modules.
pub(crate) const XDP_PASS: u32 = xdp_action::XDP_PASS;
pub(crate) const XDP_DROP: u32 = xdp_action::XDP_DROP;
pub(crate) const XDP_TX: u32 = xdp_action::XDP_TX;

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Benchmark baseline: the cheapest possible XDP program. `cargo xtask
/// bench dataplane` reports every xnlb path as a ratio to it. Never attached.
#[xdp]
pub fn xnlb_bench_drop(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// Benchmark reference: the least a bucket filter can do (Ethernet + IPv4 +
/// ports, the same hash, one table lookup; no VLAN, IPv6, options, rules,
/// lease, tracking, counters or MAC rewrite). Shows what xnlb's features
/// cost on top of the bare minimum. Never attached.
#[xdp]
pub fn xnlb_bench_minimal(ctx: XdpContext) -> u32 {
    let f = packet::Frame::new(&ctx);
    let (Some(eth), Some(ip), Some(l4)) = (f.get::<14>(0), f.get::<20>(14), f.get::<4>(34)) else {
        return XDP_PASS;
    };
    if eth.be16(12) != ethertype::IPV4 || ip.u8(9) != ipproto::TCP {
        return XDP_PASS;
    }
    let Some(t) = XNLB_TABLES.get(0) else {
        return XDP_PASS;
    };
    if ip.word(16) != t.vips[0].addr[0] {
        return XDP_PASS;
    }
    let w = xnlb_common::FlowWords::new(4, [ip.word(12), 0, 0, 0], l4.word(0), 6, 0);
    let b = xnlb_common::bucket_of(xnlb_common::flow_hash(t.seed, &w), t.buckets) as usize;
    if b < t.state.len() && t.state[b] == xnlb_common::slot_state::OWNED {
        XDP_PASS
    } else {
        XDP_DROP
    }
}

/// Benchmark sender (`cargo xtask bench peers`): `[0]` the sender veth's
/// ifindex, set by userspace (0, the default, makes [`xnlb_bench_sender`] a
/// bare `XDP_PASS` program); `[1]` the traffic: 0 cycles through a fixed
/// set of 16384 flows, 1 gives every frame a fresh random flow.
#[map]
static XNLB_BENCH_TX: Array<u32> = Array::pinned(2, 0);
/// Benchmark sender: frames sent so far, per CPU (the flow counter).
#[map]
static XNLB_BENCH_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Benchmark sender, run by `BPF_PROG_TEST_RUN` in live-frames mode on a
/// 60-byte IPv4 UDP frame from 198.18.64.0: gives each frame the next of
/// 16384 flows (source 198.18.64.0/18, source port spread the same way as
/// `xnlb_tests::peers::frames`) or a random flow (source in 198.18.0.0/16,
/// any source port from 1024), fixes the IPv4 header checksum, zeroes the
/// UDP one, and redirects it out of the interface in `XNLB_BENCH_TX`, so
/// the peer's native XDP program sees an `xdp_frame` before any skb exists.
/// With no interface set it passes everything: attached to a receiving
/// veth it is the trivial program that lets the veth accept redirected
/// frames. Never attached by the agent.
#[xdp]
pub fn xnlb_bench_sender(ctx: XdpContext) -> u32 {
    let ifindex = match XNLB_BENCH_TX.get(0) {
        Some(&i) if i != 0 => i,
        _ => return XDP_PASS,
    };
    let random = matches!(XNLB_BENCH_TX.get(1), Some(&1));
    let f = packet::Frame::new(&ctx);
    let (Some(ip), Some(udp)) = (f.get::<20>(14), f.get::<8>(34)) else {
        return XDP_DROP;
    };
    let Some(seq) = XNLB_BENCH_SEQ.get_ptr_mut(0) else {
        return XDP_DROP;
    };
    // SAFETY: a valid per-CPU map value; only this CPU's program touches it.
    let n = unsafe {
        let n = *seq;
        *seq = n.wrapping_add(1);
        n
    };
    // Drawn for fixed flows too: both traffics then cost the sender the
    // same and are offered at the same rate. Offered faster (fixed flows
    // without the draw came at ~11.5 Mpps, random ones at ~9.5), a
    // receiver near its capacity fills the veth's ring and then pays for
    // the sender's contention on it, a cost of the rate, not of its work.
    // SAFETY: a helper call with no arguments.
    let r = unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() };
    let (low, sport) = if random {
        (r as u16, ((r >> 16) as u16) | 1024)
    } else {
        let i = n & 0x3fff;
        (
            (0x4000 | i) as u16,
            1024 + (i.wrapping_mul(7919) % 60_000) as u16,
        )
    };
    // Low half of the source address (big-endian halfword).
    ip.write::<2>(14, &low.to_be_bytes());
    udp.write::<2>(0, &sport.to_be_bytes());
    udp.write::<2>(6, &[0, 0]);
    ip.set_ipv4_checksum(0);
    // SAFETY: a helper call with plain integer arguments.
    unsafe { aya_ebpf::helpers::bpf_redirect(ifindex, 0) as u32 }
}
