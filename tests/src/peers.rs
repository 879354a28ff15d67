//! The peers benchmark's setup (`cargo xtask bench peers`, see
//! `src/bin/bench-peers.rs` for what it compares and how it reports):
//! fresh sender and receiver namespaces per measurement, the filter under
//! test installed on the receiver (xnlb's XDP program, an nftables rule, or
//! `xt_cluster` through iptables-nft or -legacy), a sender (the XDP
//! live-frames program or an AF_PACKET socket) pinned to a CPU, and each
//! filter's own counters read over one window.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, XdpMode};
use xnlb_common::{
    counter, slot_state, MAP_BENCH_TX, PROG_BENCH_BASELINE, PROG_BENCH_SENDER, PROG_FILTER,
};

use crate::fixture::Fixture;
use crate::frames::{frame, IpOpts, L4};
use crate::netns::{enter_netns, veth, Netns};
use crate::raw::{mac_of, sockaddr_ll, PacketSocket};
use crate::tables::{table, BUCKETS, VIP4};

/// The VIP's multicast cluster MAC, where every frame goes.
fn vip_cluster_mac() -> [u8; 6] {
    xnlb::host::cluster_mac(IpAddr::V4(VIP4), xnlb::config::MacMode::Multicast)
}

/// Distinct flows in the traffic (one source address each, 198.18.64.0/18).
pub const FLOWS: u32 = 16384;
/// UDP destination port (a `multiple` rule, affinity none, in the test table).
pub const DPORT: u16 = 5353;
/// Frames per sendmmsg call (AF_PACKET) or per live-frames batch (XDP).
pub const BATCH: usize = 64;
/// Frames per `BPF_PROG_TEST_RUN` call of the XDP sender (a few ms each).
pub const LIVE_REPEAT: u32 = 1 << 15;
/// Traffic before counting (conntrack and caches warm up).
pub const WARMUP: Duration = Duration::from_millis(300);
/// Counting window.
pub const WINDOW: Duration = Duration::from_millis(1500);
/// Owned fractions, in quarters of the hash space.
pub const OWNED: [u32; 3] = [0, 1, 2];
const RX_ADDR: &str = "198.18.6.2";
/// A veth of the sender namespace that only holds the XDP sender program
/// attached (see [`live_loop`]); it carries no traffic.
const HOLD_DEV: &str = "hold0";
const TX_ADDR: &str = "198.18.6.1";

/// How the sender puts frames on its veth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sender {
    /// `xnlb_bench_sender` in `BPF_PROG_TEST_RUN` live-frames mode,
    /// redirecting `xdp_frame`s across the veth pair.
    Live,
    /// An AF_PACKET socket: the receiver gets skbs.
    AfPacket,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Filter {
    /// The receiving veth is down: the sender's own cost per frame
    /// (AF_PACKET sender).
    SenderOnly,
    /// The receiving veth runs a bare `XDP_DROP` program natively: the XDP
    /// sender's cost plus the least a receiver can do (with the receiving
    /// veth down, a failing `ndo_xdp_xmit` costs the sender more than a
    /// delivery does, so that is no baseline for the XDP sender).
    BareDrop,
    /// No filter: everything goes up the stack (reference only).
    None,
    Xnlb,
    /// xnlb in native (driver) mode: on a veth that is its NAPI path, which
    /// still copies a sender's skb into a page first.
    XnlbNative,
    Nft,
    XtClusterNft,
    XtClusterLegacy,
}

impl Filter {
    pub fn name(self) -> &'static str {
        match self {
            Filter::SenderOnly => "sender only (rx veth down)",
            Filter::BareDrop => "sender + bare XDP_DROP rx",
            Filter::None => "no filter (stack only)",
            Filter::Xnlb => "xnlb XDP (generic/skb)",
            Filter::XnlbNative => "xnlb XDP (native veth)",
            Filter::Nft => "nft netdev ingress jhash",
            Filter::XtClusterNft => "xt_cluster, iptables-nft",
            Filter::XtClusterLegacy => "xt_cluster, iptables-legacy",
        }
    }
    pub fn iptables(self) -> &'static str {
        if self == Filter::XtClusterLegacy {
            "iptables-legacy"
        } else {
            "iptables"
        }
    }
    pub fn is_peer(self) -> bool {
        matches!(
            self,
            Filter::Nft | Filter::XtClusterNft | Filter::XtClusterLegacy
        )
    }
}

/// One measured window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    /// Dropped by the filter, per second.
    pub dropped: f64,
    /// Passed by the filter, per second.
    pub passed: f64,
    /// Frames the sender offered, per second.
    pub offered: f64,
    /// Receive-CPU softirq ns per packet the filter saw (`--rps` only).
    pub softirq_ns: f64,
}

impl Rate {
    pub fn total(&self) -> f64 {
        self.dropped + self.passed
    }
}

/// The traffic: one 60-byte UDP frame per flow.
pub fn frames() -> Vec<Vec<u8>> {
    (0..FLOWS)
        .map(|i| {
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 64, 0)) + i);
            // Spread source ports too (xnlb and nft hash them).
            let sport = 1024 + (i.wrapping_mul(7919) % 60_000) as u16;
            frame(
                vip_cluster_mac(),
                IpAddr::V4(src),
                IpAddr::V4(VIP4),
                &L4::Udp {
                    sport,
                    dport: DPORT,
                    len: 18,
                },
                &IpOpts::default(),
            )
        })
        .collect()
}

/// Pins the calling thread to CPU `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; affects only this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Floods `frames` out of `eth0` through an AF_PACKET socket until `stop`,
/// adding every frame it offered to the kernel to `offered`. Runs on the
/// calling thread, which must be in the sender's namespace.
fn af_packet_loop(frames: &[Vec<u8>], stop: &AtomicBool, offered: &AtomicU64) {
    let sock = PacketSocket::sender("eth0");
    let mut addr = sockaddr_ll(sock.ifindex(), libc::ETH_P_IP as u16, vip_cluster_mac());
    let mut iov: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: a zeroed mmsghdr is valid; the pointers set below
            // point into `addr` and `iov`, which outlive every send.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = &mut addr as *mut _ as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            m.msg_hdr.msg_iov = v as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut at = 0usize;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `msgs[at..at + BATCH]` are valid messages (`at` stays
        // below `msgs.len() - BATCH`) whose buffers are in `frames`.
        let n =
            unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr().add(at), BATCH as u32, 0) };
        // A refused frame (full backlog, or no carrier in the
        // sender-only baseline) still cost the sender its work:
        // count it as offered, skip it and go on.
        let took = if n > 0 { n as usize } else { 1 };
        offered.fetch_add(took as u64, Ordering::Relaxed);
        at = (at + took) % (msgs.len() - BATCH);
    }
}

/// Runs `xnlb_bench_sender` of `sfx` in live-frames mode on `template`
/// (redirecting out of `eth0`) until `stop`, adding the frames it generated
/// to `offered`. Runs on the calling thread, which must be in the sender's
/// namespace: the redirect's ifindex is looked up there.
fn live_loop(sfx: &mut Fixture, template: &[u8], stop: &AtomicBool, offered: &AtomicU64) {
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
    assert!(ifindex > 0, "eth0 in the sender namespace");
    let pin = sfx.dp.pin_dir().join(MAP_BENCH_TX);
    let data = MapData::from_pin(&pin).unwrap_or_else(|e| panic!("{}: {e}", pin.display()));
    let mut tx: Array<MapData, u32> = Array::try_from(Map::Array(data)).expect("sender map");
    tx.set(0, ifindex, 0).expect("sender ifindex");
    let prog = sfx.dp.program(PROG_BENCH_SENDER).expect("sender program");
    // Every BPF_PROG_TEST_RUN of an XDP program adds it to the kernel's XDP
    // dispatcher and removes it after, each with a synchronize_rcu() (~8 ms
    // here: the sender would idle most of the time). A program the
    // dispatcher already holds skips both, so keep this one attached
    // (natively, to an otherwise unused veth of the sender namespace) while
    // sending.
    let hold = prog
        .attach(HOLD_DEV, XdpMode::Driver)
        .expect("attach the sender program to the holding veth");
    while !stop.load(Ordering::Relaxed) {
        let opts = TestRunOptions {
            data_in: Some(template),
            repeat: LIVE_REPEAT,
            attrs: TestRunAttrs::new().xdp_live_frames(BATCH as u32),
            ..Default::default()
        };
        prog.test_run(opts)
            .expect("BPF_PROG_TEST_RUN, live frames (needs Linux >= 5.18)");
        offered.fetch_add(LIVE_REPEAT as u64, Ordering::Relaxed);
    }
    let _ = prog.detach(hold);
    // A stale ifindex must not outlive the namespace (the map is per fixture,
    // but be tidy).
    let _ = tx.set(0, 0, 0);
}

/// Softirq ticks of CPU `cpu` from /proc/stat.
fn softirq_ticks(cpu: usize) -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let tag = format!("cpu{cpu} ");
    s.lines()
        .find(|l| l.starts_with(&tag))
        .and_then(|l| l.split_whitespace().nth(7)?.parse().ok())
        .unwrap_or(0)
}

/// One measurement's namespaces, removed on drop (also on panic).
struct Topo {
    tx: Netns,
    rx: Netns,
    /// The receiver's XDP program (name) and its link, detached after.
    xdp: Option<(&'static str, aya::programs::xdp::XdpLinkId)>,
}

fn build(rx_cpu: Option<usize>) -> Topo {
    let tx = Netns::new("pt");
    let rx = Netns::new("pr");
    veth(&tx, "eth0", &rx, "eth0");
    tx.sh(&format!(
        "ip addr add {TX_ADDR}/24 dev eth0 && ip link add {HOLD_DEV} type veth peer name hold1"
    ));
    rx.sh(&format!(
        "ip addr add {RX_ADDR}/24 dev eth0 && ip addr add {VIP4}/32 dev lo"
    ));
    if let Some(cpu) = rx_cpu {
        rx.sh(&format!(
            "echo {:x} > /sys/class/net/eth0/queues/rx-0/rps_cpus",
            1u64 << cpu
        ));
    }
    Topo { tx, rx, xdp: None }
}

/// Attaches `prog` of `fx` to the receiver's eth0 in `mode`.
fn attach(t: &mut Topo, fx: &mut Fixture, prog: &'static str, mode: XdpMode) {
    let id = t.rx.enter(|| {
        fx.dp
            .program(prog)
            .expect("program")
            .attach("eth0", mode)
            .expect("attach XDP")
    });
    t.xdp = Some((prog, id));
}

fn install(t: &mut Topo, f: Filter, quarters: u32, fx: &mut Fixture, sender: Sender) {
    // With the XDP sender, a receiving veth only accepts redirected frames
    // while it runs a native XDP program: the stack-based filters get the
    // bare pass program (skbs are then built from the frames).
    if sender == Sender::Live
        && matches!(
            f,
            Filter::None | Filter::Nft | Filter::XtClusterNft | Filter::XtClusterLegacy
        )
    {
        attach(t, fx, PROG_BENCH_SENDER, XdpMode::Driver);
    }
    match f {
        Filter::None => {}
        Filter::SenderOnly => {
            t.rx.sh("ip link set eth0 down");
        }
        Filter::BareDrop => attach(t, fx, PROG_BENCH_BASELINE, XdpMode::Driver),
        Filter::Xnlb | Filter::XnlbNative => {
            let mut tab = table(slot_state::NOT_OWNED);
            for b in 0..BUCKETS as usize {
                if (b % 4) < quarters as usize {
                    tab.state[b] = slot_state::OWNED;
                }
            }
            fx.serve(&tab);
            fx.dp.set_if_mac(mac_of(&t.rx, "eth0")).expect("if mac");
            let mode = if f == Filter::Xnlb {
                XdpMode::Skb
            } else {
                XdpMode::Driver
            };
            attach(t, fx, PROG_FILTER, mode);
        }
        Filter::Nft => {
            t.rx.sh(&format!(
                "nft -f - <<'EOF'\n\
                 table netdev xpeer {{\n\
                   chain in {{ type filter hook ingress device \"eth0\" priority -500; policy accept;\n\
                     ip daddr {VIP4} jhash ip saddr . udp sport mod 4 seed 0x5eed >= {quarters} counter drop\n\
                     ip daddr {VIP4} counter accept\n\
                   }}\n\
                 }}\n\
                 EOF"
            ));
        }
        Filter::XtClusterNft | Filter::XtClusterLegacy => {
            let ipt = f.iptables();
            // 0 of 4 hash values: an inverted all-ones mask (the hash is
            // still computed, and never matches); otherwise the low
            // `quarters` values.
            let mask = match quarters {
                0 => "! --cluster-local-nodemask 0xf".to_string(),
                q => format!("--cluster-local-nodemask {:#x}", (1u32 << q) - 1),
            };
            t.rx.sh(&format!(
                "{ipt} -t mangle -A PREROUTING -d {VIP4} -p udp -m cluster --cluster-total-nodes 4 \
                 {mask} --cluster-hash-seed 0x5eed -j MARK --set-mark 0xffff && \
                 {ipt} -t mangle -A PREROUTING -d {VIP4} -p udp -m mark ! --mark 0xffff -j DROP"
            ));
        }
    }
}

/// `(dropped, passed)` so far, from the filter's own counters.
fn counts(t: &Topo, f: Filter, fx: &Fixture) -> (u64, u64) {
    match f {
        Filter::SenderOnly | Filter::BareDrop => (0, 0),
        Filter::None => (
            0,
            t.rx.sh("cat /sys/class/net/eth0/statistics/rx_packets")
                .trim()
                .parse()
                .unwrap_or(0),
        ),
        Filter::Xnlb | Filter::XnlbNative => {
            let c = fx.counters().c;
            let dropped = c[counter::DROPPED_NOT_OWNER]
                + c[counter::DROPPED_FENCED]
                + c[counter::DROPPED_MALFORMED]
                + c[counter::DROPPED_DISABLED];
            (dropped, c[counter::PASSED])
        }
        Filter::Nft => {
            let out = t.rx.sh("nft list table netdev xpeer");
            let v: Vec<u64> = out
                .lines()
                .filter_map(|l| {
                    let i = l.find("counter packets ")?;
                    l[i + 16..].split_whitespace().next()?.parse().ok()
                })
                .collect();
            (
                v.first().copied().unwrap_or(0),
                v.get(1).copied().unwrap_or(0),
            )
        }
        Filter::XtClusterNft | Filter::XtClusterLegacy => {
            let out = t.rx.sh(&format!(
                "{} -t mangle -L PREROUTING -v -x -n",
                f.iptables()
            ));
            let pk = |target: &str| -> u64 {
                out.lines()
                    .find(|l| l.split_whitespace().nth(2) == Some(target))
                    .and_then(|l| l.split_whitespace().next()?.parse().ok())
                    .unwrap_or(0)
            };
            (pk("DROP"), pk("MARK"))
        }
    }
}

/// What a sender sends: the AF_PACKET frames, or the XDP sender's fixture
/// and template frame.
pub enum Source<'a> {
    AfPacket(&'a [Vec<u8>]),
    Live(&'a mut Fixture, &'a [u8]),
}

impl Source<'_> {
    fn kind(&self) -> Sender {
        match self {
            Source::AfPacket(_) => Sender::AfPacket,
            Source::Live(..) => Sender::Live,
        }
    }
}

pub fn measure(
    f: Filter,
    quarters: u32,
    fx: &mut Fixture,
    src: &mut Source,
    tx_cpu: usize,
    rx_cpu: Option<usize>,
) -> Rate {
    let mut t = build(rx_cpu);
    install(&mut t, f, quarters, fx, src.kind());
    let stop = AtomicBool::new(false);
    let offered = AtomicU64::new(0);
    let cpu = rx_cpu.unwrap_or(tx_cpu);
    let ((d0, p0, o0, si0), (d1, p1, o1, si1), secs) = std::thread::scope(|s| {
        let (stop, offered, ns) = (&stop, &offered, t.tx.name.clone());
        let sender = s.spawn(move || {
            enter_netns(&ns);
            pin_to(tx_cpu);
            match src {
                Source::AfPacket(frames) => af_packet_loop(frames, stop, offered),
                Source::Live(sfx, template) => live_loop(sfx, template, stop, offered),
            }
        });
        // Stop the sender even if counting panics.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _guard = StopOnDrop(stop);
        std::thread::sleep(WARMUP);
        let sample = || {
            let (d, p) = counts(&t, f, fx);
            (d, p, offered.load(Ordering::Relaxed), softirq_ticks(cpu))
        };
        let a = sample();
        let t0 = Instant::now();
        std::thread::sleep(WINDOW);
        let b = sample();
        let secs = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::SeqCst);
        if let Err(e) = sender.join() {
            std::panic::resume_unwind(e);
        }
        (a, b, secs)
    });
    if let Some((prog, id)) = t.xdp.take() {
        t.rx.enter(|| {
            let _ = fx.dp.program(prog).map(|p| p.detach(id));
        });
    }
    let (d, p) = (d1.saturating_sub(d0), p1.saturating_sub(p0));
    // USER_HZ is 100 on Linux: a tick is 10 ms.
    let tick_ns = 1e7;
    Rate {
        dropped: d as f64 / secs,
        passed: p as f64 / secs,
        offered: o1.saturating_sub(o0) as f64 / secs,
        softirq_ns: si1.saturating_sub(si0) as f64 * tick_ns / (d + p).max(1) as f64,
    }
}

/// Whether `iptables` (binary `ipt`) can load the xt_cluster match here.
pub fn xt_cluster_available(ipt: &str) -> Result<(), String> {
    let ns = Netns::new("px");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, ipt, "-t", "mangle", "-A"])
        .args(["PREROUTING", "-m", "cluster", "--cluster-total-nodes", "2"])
        .args(["--cluster-local-node", "1", "--cluster-hash-seed", "1"])
        .args(["-j", "MARK", "--set-mark", "1"])
        .output()
        .map_err(|e| format!("{ipt}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .next()
            .unwrap_or("failed")
            .to_string())
    }
}
