//! The peers benchmark's setup (`cargo xtask bench peers`, see
//! `src/bin/bench-peers.rs` for what it compares and how it reports):
//! fresh sender and receiver namespaces per measurement joined by a veth
//! pair, the receiver under test installed on the receiving veth (an XDP
//! program, an nftables rule, or `xt_cluster` through iptables-nft), the
//! XDP live-frames sender pinned to one CPU, the receiver's NAPI poll
//! threaded and pinned to the other, and that thread's on-CPU time per
//! packet it received.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use xnlb_common::bench::{MinimalTable, MAP_MINIMAL, PROG_MINIMAL};
use xnlb_common::{
    addr_words, slot_state, Table, MAP_BENCH_TX, MAX_BUCKETS, PROG_BENCH_BASELINE,
    PROG_BENCH_SENDER, PROG_FILTER,
};

use crate::fixture::Fixture;
use crate::frames::{frame, IpOpts, L4};
use crate::netns::{enter_netns, veth, Netns};
use crate::raw::mac_of;
use crate::tables::{BUCKETS, VIP4};

/// The VIP's multicast cluster MAC, where every frame goes.
fn vip_cluster_mac() -> [u8; 6] {
    xnlb::host::cluster_mac(IpAddr::V4(VIP4), xnlb::config::MacMode::Multicast)
}

/// Distinct flows of the fixed traffic (one source address each,
/// 198.18.64.0/18).
pub const FLOWS: u32 = 16384;
/// UDP destination port (a `multiple` rule, affinity none, in the bench
/// table).
pub const DPORT: u16 = 5353;
/// Frames per live-frames batch of the XDP sender: each batch is one
/// flush to the veth and one wake-up of the receiver, so the largest the
/// kernel takes (and the veth ring holds) keeps the wake-up's share of the
/// per-packet cost small.
pub const BATCH: usize = 256;
/// Frames per `BPF_PROG_TEST_RUN` call of the XDP sender (a few ms each).
pub const LIVE_REPEAT: u32 = 1 << 15;
/// Traffic before counting (conntrack, caches and the CPU clock settle).
pub const WARMUP: Duration = Duration::from_millis(300);
/// Counting window.
pub const WINDOW: Duration = Duration::from_millis(1000);
/// Owned fractions, in quarters of the hash space.
pub const OWNED: [u32; 3] = [0, 1, 2];
const RX_ADDR: &str = "198.18.6.2";
/// A veth of the sender namespace that only holds the XDP sender program
/// attached (see [`live_loop`]); it carries no traffic.
const HOLD_DEV: &str = "hold0";
const TX_ADDR: &str = "198.18.6.1";

/// The flows the sender puts in its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// A fresh random flow in every frame (source address and port): every
    /// packet misses every per-flow cache, as a SYN flood or a large client
    /// population does.
    Random,
    /// [`FLOWS`] flows in turn.
    Fixed,
}

impl Traffic {
    pub fn name(self) -> &'static str {
        match self {
            Traffic::Random => "random flow per packet",
            Traffic::Fixed => "16384 fixed flows",
        }
    }
}

/// What receives the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// A bare `XDP_DROP` program: the least a receiver can do.
    BareDrop,
    /// `xnlb-minimal`: Ethernet + IPv4 + ports, the flow hash, one array
    /// lookup.
    Minimal,
    /// xnlb's filter in native mode, from object variant `n` (0: the
    /// object under test; more with `--variant`).
    Xnlb(usize),
    /// An nftables rule in the netdev ingress hook, `jhash ip saddr . udp
    /// sport mod 4`.
    Nft,
    /// The `xt_cluster` match through iptables-nft (needs conntrack).
    XtCluster,
}

impl Filter {
    /// Whether this is one of the in-kernel alternatives to xnlb.
    pub fn is_peer(self) -> bool {
        matches!(self, Filter::Nft | Filter::XtCluster)
    }
    /// Whether the owned fraction means anything to it.
    pub fn hashes(self) -> bool {
        self != Filter::BareDrop
    }
}

/// One measured window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// On-CPU ns of the receiver's NAPI thread per packet it received.
    pub ns_per_pkt: f64,
    /// Packets the receiver's XDP hook saw, per second.
    pub pps: f64,
    /// Frames the sender generated, per second.
    pub offered: f64,
    /// Packets per wake-up of the NAPI thread: each wake-up costs the
    /// thread a context switch and a poll set-up, shared by these packets,
    /// so a receiver that keeps up with the sender and sleeps more often
    /// pays more per packet (see the module documentation of the bench).
    pub pkts_per_wakeup: f64,
}

/// The receivers' programs, loaded once: xnlb object variants (each in its
/// own pin directory), the minimal filter, and the sender's own object.
pub struct Receivers {
    /// `(name, fixture)` per xnlb object; the first is the object under
    /// test and also provides the bare `XDP_DROP` and `XDP_PASS` programs.
    pub xnlb: Vec<(String, Fixture)>,
    /// Per entry of `xnlb`: serves the VIP in routed mode ([`routed_table`]:
    /// every packet it does not own is forwarded, `XDP_TX` back out).
    pub routed: Vec<bool>,
    minimal: Ebpf,
    sender: Fixture,
}

impl Receivers {
    /// Loads the default object and `variants` (`(name, object path)`).
    pub fn load(variants: &[(String, std::path::PathBuf)]) -> Receivers {
        let mut main = Fixture::new();
        for prog in [PROG_BENCH_SENDER, PROG_BENCH_BASELINE] {
            main.dp
                .program(prog)
                .expect("bench program")
                .load()
                .expect("load a bench program");
        }
        let mut xnlb = vec![("xnlb".to_string(), main)];
        for (name, path) in variants {
            xnlb.push((format!("xnlb[{name}]"), Fixture::from_object(path)));
        }
        let path = minimal_object_path();
        let obj = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "reading {}: {e}: run `cargo xtask build-ebpf --release` first",
                path.display()
            )
        });
        let mut minimal = EbpfLoader::new().load(&obj).expect("load xnlb-minimal");
        let prog: &mut Xdp = minimal
            .program_mut(PROG_MINIMAL)
            .expect("minimal program")
            .try_into()
            .expect("an XDP program");
        prog.load().expect("load the minimal filter");
        let mut sender = Fixture::new();
        sender
            .dp
            .program(PROG_BENCH_SENDER)
            .expect("sender program")
            .load()
            .expect("load the sender program");
        let routed = vec![false; xnlb.len()];
        Receivers {
            xnlb,
            routed,
            minimal,
            sender,
        }
    }

    /// Adds the default object serving the VIP in routed mode: what a
    /// not-owned packet costs when it is forwarded instead of dropped.
    pub fn add_routed(&mut self) {
        self.xnlb
            .push(("xnlb, routed VIP (forwards)".to_string(), Fixture::new()));
        self.routed.push(true);
    }

    /// Display name of `f`.
    pub fn name(&self, f: Filter) -> String {
        match f {
            Filter::BareDrop => "bare XDP_DROP".into(),
            Filter::Minimal => "minimal XDP filter".into(),
            Filter::Xnlb(i) => self.xnlb[i].0.clone(),
            Filter::Nft => "nftables netdev jhash".into(),
            Filter::XtCluster => "xt_cluster (iptables-nft)".into(),
        }
    }

    fn set_minimal(&mut self, quarters: u32, if_mac: [u8; 6]) {
        let mut m = [0u8; 8];
        m[..6].copy_from_slice(&if_mac);
        let mut t = Box::new(MinimalTable {
            if_mac: u64::from_le_bytes(m),
            seed: bench_table(0).seed,
            vip: addr_words(&xnlb::flow::ip_bytes(IpAddr::V4(VIP4)))[0],
            buckets: BUCKETS,
            state: [slot_state::NOT_OWNED; MAX_BUCKETS as usize],
        });
        for (b, s) in t.state.iter_mut().enumerate().take(BUCKETS as usize) {
            if (b % 4) < quarters as usize {
                *s = slot_state::OWNED;
            }
        }
        let mut map: Array<&mut MapData, MinimalTable> =
            Array::try_from(self.minimal.map_mut(MAP_MINIMAL).expect("minimal map"))
                .expect("minimal map type");
        map.set(0, *t, 0).expect("minimal table");
    }
}

/// Path of `target/bpf/xnlb-minimal.bpf.o` (`XNLB_MINIMAL_OBJ` overrides).
pub fn minimal_object_path() -> std::path::PathBuf {
    std::env::var_os("XNLB_MINIMAL_OBJ")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bpf/xnlb-minimal.bpf.o")
        })
}

/// The table xnlb serves in the benchmark: the kernel tests' table (three
/// VIPs, the UDP port's rule sixth of the first VIP's rules), `quarters` of
/// every 4 buckets owned.
pub fn bench_table(quarters: u32) -> Box<Table> {
    let mut t = crate::tables::table(slot_state::NOT_OWNED);
    for b in 0..BUCKETS as usize {
        if (b % 4) < quarters as usize {
            t.state[b] = slot_state::OWNED;
        }
    }
    t
}

/// [`bench_table`] with the VIP the traffic goes to in routed mode: this
/// node (member 1) owns what it owns there, member 2 the rest (its MAC is
/// the sender's, so forwarded frames go back out to it).
pub fn routed_table(quarters: u32) -> Box<Table> {
    let mut t = bench_table(quarters);
    t.vips[0].mac_mode = xnlb_common::mac_mode::ROUTED;
    for s in 0..t.owner.len() {
        t.owner[s] = if t.state[s] == slot_state::OWNED {
            1
        } else {
            2
        };
    }
    t.me = 1;
    t
}

/// The template frame the XDP sender rewrites: UDP from 198.18.64.0 to the
/// VIP's port [`DPORT`], 60 bytes.
pub fn template() -> Vec<u8> {
    frame(
        vip_cluster_mac(),
        IpAddr::V4(Ipv4Addr::new(198, 18, 64, 0)),
        IpAddr::V4(VIP4),
        &L4::Udp {
            sport: 1024,
            dport: DPORT,
            len: 18,
        },
        &IpOpts::default(),
    )
}

/// Pins thread or process `pid` (0: the calling thread) to CPU `cpu`.
fn pin_to(pid: i32, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; affects only `pid`.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        rc,
        0,
        "pinning {pid} to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `xnlb_bench_sender` of `sfx` in live-frames mode on `template`
/// (redirecting out of `eth0`) until `stop`, adding the frames it generated
/// to `offered`. Runs on the calling thread, which must be in the sender's
/// namespace: the redirect's ifindex is looked up there.
fn live_loop(
    sfx: &mut Fixture,
    template: &[u8],
    traffic: Traffic,
    stop: &AtomicBool,
    offered: &AtomicU64,
) {
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
    assert!(ifindex > 0, "eth0 in the sender namespace");
    let pin = sfx.dp.pin_dir().join(MAP_BENCH_TX);
    let data = MapData::from_pin(&pin).unwrap_or_else(|e| panic!("{}: {e}", pin.display()));
    let mut tx: Array<MapData, u32> = Array::try_from(Map::Array(data)).expect("sender map");
    tx.set(0, ifindex, 0).expect("sender ifindex");
    tx.set(1, u32::from(traffic == Traffic::Random), 0)
        .expect("sender traffic");
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
        match prog.test_run(opts) {
            Ok(_) => {
                offered.fetch_add(LIVE_REPEAT as u64, Ordering::Relaxed);
            }
            // A pending signal ends a batch early (how far it got is not
            // reported; the offered rate is only shown, never used).
            Err(aya::programs::ProgramError::SyscallError(e))
                if e.io_error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("BPF_PROG_TEST_RUN, live frames (needs Linux >= 5.18): {e}"),
        }
    }
    let _ = prog.detach(hold);
    // A stale ifindex must not outlive the namespace.
    let _ = tx.set(0, 0, 0);
}

/// Gives thread `pid` a real-time (FIFO) priority: it runs as soon as the
/// sender wakes it, whatever else the shared machine runs on its CPU, so
/// each wake-up finds the same batch of frames and no other task's time
/// slice sits between the sender's flush and the poll. (It is busy well
/// under half the time; the kernel's real-time throttling bounds it anyway.)
fn realtime(pid: i32) {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: plain syscall on a thread we created (the veth's NAPI thread).
    let rc = unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) };
    assert_eq!(
        rc,
        0,
        "SCHED_FIFO for {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// PIDs of the kernel's threaded-NAPI pollers (`napi/<dev>-<id>`).
fn napi_threads() -> HashSet<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashSet::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        comm.starts_with("napi/").then_some(pid)
    })
    .collect()
}

/// On-CPU ns of thread `pid` so far and the times it was scheduled in
/// (`/proc/<pid>/schedstat`, first and third fields).
fn schedstat(pid: i32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/schedstat: {e}"));
    let v: Vec<u64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [ns, _, slices, ..] => (ns, slices),
        _ => panic!("/proc/{pid}/schedstat: {s:?}"),
    }
}

/// Frames the receiving veth's XDP hook processed so far.
fn xdp_packets(rx: &Netns) -> u64 {
    rx.sh("ethtool -S eth0")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rx_queue_0_xdp_packets:"))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum()
}

/// One measurement's namespaces, removed on drop (also on panic).
struct Topo {
    tx: Netns,
    rx: Netns,
}

fn build() -> Topo {
    let tx = Netns::new("pt");
    let rx = Netns::new("pr");
    veth(&tx, "eth0", &rx, "eth0");
    tx.sh(&format!(
        "ip addr add {TX_ADDR}/24 dev eth0 && ip link add {HOLD_DEV} type veth peer name hold1"
    ));
    rx.sh(&format!(
        "ip addr add {RX_ADDR}/24 dev eth0 && ip addr add {VIP4}/32 dev lo"
    ));
    Topo { tx, rx }
}

/// Attaches `prog` natively to the receiver's eth0, in `rx`'s namespace.
fn attach(rx: &Netns, prog: &mut Xdp) -> aya::programs::xdp::XdpLinkId {
    rx.enter(|| prog.attach("eth0", XdpMode::Driver).expect("attach XDP"))
}

/// Installs receiver `f` owning `quarters` of 4; returns the XDP program
/// attached (to detach after). A veth accepts redirected frames only with
/// a native XDP program attached, so the stack-based peers get the bare
/// pass program in front (skbs are then built from the frames).
fn install(
    t: &Topo,
    f: Filter,
    quarters: u32,
    r: &mut Receivers,
) -> (Option<usize>, aya::programs::xdp::XdpLinkId) {
    let (fixture, id) = match f {
        Filter::BareDrop => {
            let p = r.xnlb[0].1.dp.program(PROG_BENCH_BASELINE).expect("drop");
            (Some(0), attach(&t.rx, p))
        }
        Filter::Minimal => {
            r.set_minimal(quarters, mac_of(&t.rx, "eth0"));
            let p: &mut Xdp = r
                .minimal
                .program_mut(PROG_MINIMAL)
                .expect("minimal")
                .try_into()
                .expect("XDP");
            (None, attach(&t.rx, p))
        }
        Filter::Xnlb(i) => {
            let routed = r.routed[i];
            let fx = &mut r.xnlb[i].1;
            if routed {
                fx.serve(&routed_table(quarters));
                fx.dp
                    .set_member_mac(2, Some(mac_of(&t.tx, "eth0")))
                    .expect("member mac");
            } else {
                fx.serve(&bench_table(quarters));
            }
            fx.dp.set_if_mac(mac_of(&t.rx, "eth0")).expect("if mac");
            (
                Some(i),
                attach(&t.rx, fx.dp.program(PROG_FILTER).expect("xnlb")),
            )
        }
        Filter::Nft | Filter::XtCluster => {
            let p = r.xnlb[0].1.dp.program(PROG_BENCH_SENDER).expect("pass");
            (Some(0), attach(&t.rx, p))
        }
    };
    match f {
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
        Filter::XtCluster => {
            // 0 of 4 hash values: an inverted all-ones mask (the hash is
            // still computed, and never matches); otherwise the low
            // `quarters` values.
            let mask = match quarters {
                0 => "! --cluster-local-nodemask 0xf".to_string(),
                q => format!("--cluster-local-nodemask {:#x}", (1u32 << q) - 1),
            };
            t.rx.sh(&format!(
                "iptables -t mangle -A PREROUTING -d {VIP4} -p udp -m cluster \
                 --cluster-total-nodes 4 {mask} --cluster-hash-seed 0x5eed -j MARK --set-mark 0xffff && \
                 iptables -t mangle -A PREROUTING -d {VIP4} -p udp -m mark ! --mark 0xffff -j DROP"
            ));
        }
        _ => {}
    }
    (fixture, id)
}

/// Makes the receiving veth's NAPI poll a kernel thread of its own, pins
/// it to `cpu` and makes it real-time; returns its PID. (The veth has a NAPI context only
/// while an XDP program is attached, so this follows [`install`].)
fn thread_napi(rx: &Netns, cpu: usize) -> i32 {
    let before = napi_threads();
    rx.sh("echo 1 > /sys/class/net/eth0/threaded");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let new: Vec<i32> = napi_threads().difference(&before).copied().collect();
        match new[..] {
            [pid] => {
                pin_to(pid, cpu);
                realtime(pid);
                return pid;
            }
            [] if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => panic!("expected one new NAPI thread for the receiving veth, found {new:?}"),
        }
    }
}

/// Bytes [`thrash_caches`] sweeps: past the L2 caches of this machine.
const THRASH_BYTES: usize = 8 << 20;

/// Sweeps a buffer larger than the L2 cache on `cpu` at normal priority
/// until `stop`: it runs whenever the (real-time) NAPI thread sleeps and
/// evicts its code and data, as other work on a busy node does. With it the
/// benchmark shows what a receiver's cache footprint costs.
fn thrash_caches(cpu: usize, stop: &AtomicBool) {
    pin_to(0, cpu);
    let mut buf = vec![0u8; THRASH_BYTES];
    let mut n = 0u8;
    while !stop.load(Ordering::Relaxed) {
        for line in buf.chunks_mut(64) {
            line[0] = line[0].wrapping_add(n);
        }
        n = n.wrapping_add(1);
        std::hint::black_box(&buf);
    }
}

/// Measures receiver `f` owning `quarters` of 4 under `traffic`: the
/// sender on `tx_cpu`, the receiver's NAPI thread on `rx_cpu`, with
/// [`thrash_caches`] there too if `thrash`.
pub fn measure(
    f: Filter,
    quarters: u32,
    traffic: Traffic,
    r: &mut Receivers,
    tx_cpu: usize,
    rx_cpu: usize,
    thrash: bool,
) -> Sample {
    let t = build();
    let (fixture, link) = install(&t, f, quarters, r);
    let napi = thread_napi(&t.rx, rx_cpu);
    let template = template();
    let stop = AtomicBool::new(false);
    let offered = AtomicU64::new(0);
    let sender_fx = &mut r.sender;
    let (a, b, secs) = std::thread::scope(|s| {
        let (stop, offered, ns) = (&stop, &offered, t.tx.name.clone());
        let template = &template;
        let sender = s.spawn(move || {
            enter_netns(&ns);
            pin_to(0, tx_cpu);
            live_loop(sender_fx, template, traffic, stop, offered)
        });
        // Stop the sender even if counting panics.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _guard = StopOnDrop(stop);
        if thrash {
            s.spawn(move || thrash_caches(rx_cpu, stop));
        }
        std::thread::sleep(WARMUP);
        let sample = || {
            (
                schedstat(napi),
                xdp_packets(&t.rx),
                offered.load(Ordering::Relaxed),
            )
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
    t.rx.enter(|| match fixture {
        Some(i) => {
            let dp = &mut r.xnlb[i].1.dp;
            let prog = match f {
                Filter::BareDrop => PROG_BENCH_BASELINE,
                Filter::Xnlb(_) => PROG_FILTER,
                _ => PROG_BENCH_SENDER,
            };
            let _ = dp.program(prog).map(|p| p.detach(link));
        }
        None => {
            let p: Result<&mut Xdp, _> = r
                .minimal
                .program_mut(PROG_MINIMAL)
                .expect("minimal")
                .try_into();
            let _ = p.map(|p| p.detach(link));
        }
    });
    let pkts = b.1.saturating_sub(a.1);
    Sample {
        ns_per_pkt: b.0 .0.saturating_sub(a.0 .0) as f64 / pkts.max(1) as f64,
        pps: pkts as f64 / secs,
        offered: b.2.saturating_sub(a.2) as f64 / secs,
        pkts_per_wakeup: pkts as f64 / b.0 .1.saturating_sub(a.0 .1).max(1) as f64,
    }
}

/// Whether iptables-nft can load the xt_cluster match here.
pub fn xt_cluster_available() -> Result<(), String> {
    let ns = Netns::new("px");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "iptables", "-t", "mangle", "-A"])
        .args(["PREROUTING", "-m", "cluster", "--cluster-total-nodes", "2"])
        .args(["--cluster-local-node", "1", "--cluster-hash-seed", "1"])
        .args(["-j", "MARK", "--set-mark", "1"])
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
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
