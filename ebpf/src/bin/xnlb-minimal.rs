//! `xnlb-minimal`: the reference `cargo xtask bench peers` measures xnlb
//! against. The least a bucket filter can do: Ethernet + IPv4 (no options)
//! + the ports, the same flow hash as xnlb, one array lookup, one state
//! byte, and an accepted frame readdressed to the interface's MAC. No VLANs, IPv6, rules, lease, handoff or counters. A
//! separate object so that nothing of xnlb's (maps, code) is on its path.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use xnlb_common::bench::MinimalTable;
use xnlb_common::{
    affinity, bucket_of, ethertype, family, flow_hash, ipproto, slot_state, FlowWords,
};

#[map]
static XNLB_MINIMAL: Array<MinimalTable> = Array::with_max_entries(1, 0);

/// Ethernet (14) + IPv4 without options (20) + the two ports (4).
const HEADERS: usize = 38;

#[xdp]
pub fn xnlb_minimal(ctx: XdpContext) -> u32 {
    let (p, end) = (ctx.data(), ctx.data_end());
    if p + HEADERS > end {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: the 38 bytes read below are inside the frame (checked above).
    let (ethertype, vihl, proto, src, dst, ports) = unsafe {
        (
            u16::from_be(*((p + 12) as *const u16)),
            *((p + 14) as *const u8),
            *((p + 23) as *const u8),
            *((p + 26) as *const u32),
            *((p + 30) as *const u32),
            *((p + 34) as *const u32),
        )
    };
    if ethertype != ethertype::IPV4 || vihl != 0x45 {
        return xdp_action::XDP_PASS;
    }
    if proto != ipproto::TCP && proto != ipproto::UDP {
        return xdp_action::XDP_PASS;
    }
    let Some(t) = XNLB_MINIMAL.get(0) else {
        return xdp_action::XDP_PASS;
    };
    if dst != t.vip {
        return xdp_action::XDP_PASS;
    }
    let w = FlowWords::new(family::V4, [src, 0, 0, 0], ports, proto, affinity::NONE);
    let b = bucket_of(flow_hash(t.seed, &w), t.buckets) as usize;
    if b < t.state.len() && t.state[b] == slot_state::OWNED {
        let m = t.if_mac.to_le_bytes();
        // SAFETY: inside the frame (checked above); unaligned stores are
        // allowed on packet data.
        unsafe {
            *(p as *mut u32) = u32::from_ne_bytes([m[0], m[1], m[2], m[3]]);
            *((p + 4) as *mut u16) = u16::from_ne_bytes([m[4], m[5]]);
        }
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
