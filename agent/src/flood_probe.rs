//! Does the segment flood the cluster MACs? Every serving node sends, once
//! a second per VIP, one small frame to that VIP's cluster MAC, shaped as
//! VIP traffic is (an IPv4 or IPv6 packet of the VIP's family in a frame
//! to the cluster MAC, so IGMP/MLD snooping treats it exactly as it treats
//! client traffic), and counts the probes it receives from each member.
//! `xnlb doctor` then reports a peer whose probes do not arrive: the
//! switch (or bridge) does not flood that MAC to this node, so this node
//! never sees the flows of its buckets.
//!
//! Sending costs one frame per VIP per second. Receiving needs a packet
//! tap, which every received packet would pass through, so the tap is
//! open only while a doctor run asks for it ([`Seen::listen_for`]): the
//! data path pays nothing in between.
//!
//! The packet carries IP protocol 253 (RFC 3692, experimental) between
//! unspecified addresses: no VIP, so the XDP program passes it untouched,
//! and no stack accepts it. A packet socket with a classic BPF filter
//! (protocol 253 only) sees it before the stack drops it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// IP protocol of the probes (RFC 3692: for experimentation).
pub const PROBE_PROTO: u8 = 253;
/// How often each node probes each VIP's cluster MAC.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const MAGIC: &[u8; 8] = b"XNLBFLD1";

/// What a probe says: who sent it, for which cluster and VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The cluster's hash seed (probes of another cluster are ignored).
    pub cluster: u64,
    /// The sending member.
    pub member: u8,
    /// The VIP's position in the configuration.
    pub vip: u8,
}

/// The probe frame for VIP `vip` (family from `v6`) to `dst_mac`.
pub fn build(dst_mac: [u8; 6], src_mac: [u8; 6], v6: bool, p: &Probe) -> Vec<u8> {
    let mut payload = MAGIC.to_vec();
    payload.extend_from_slice(&p.cluster.to_le_bytes());
    payload.push(p.member);
    payload.push(p.vip);
    let mut f = Vec::with_capacity(80);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    if v6 {
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&[PROBE_PROTO, 1]);
        f.extend_from_slice(&[0u8; 32]); // :: -> ::
    } else {
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let total = (20 + payload.len()) as u16;
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[8] = 1; // TTL
        h[9] = PROBE_PROTO;
        // 0.0.0.0 -> 0.0.0.0; the checksum must be right or a snooping
        // bridge counts the frame as an error instead of forwarding it.
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&h);
    }
    f.extend_from_slice(&payload);
    f
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The probe in `frame`, if it is one sent to a cluster MAC.
pub fn parse(frame: &[u8]) -> Option<Probe> {
    if !xnlb_common::mac_mode::is_cluster_prefix(*frame.first()?, *frame.get(1)?) {
        return None;
    }
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let (proto, payload) = match ethertype {
        0x0800 => (*frame.get(23)?, frame.get(34..)?),
        0x86dd => (*frame.get(20)?, frame.get(54..)?),
        _ => return None,
    };
    if proto != PROBE_PROTO || payload.get(..8)? != MAGIC {
        return None;
    }
    Some(Probe {
        cluster: u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?),
        member: *payload.get(16)?,
        vip: *payload.get(17)?,
    })
}

/// When the last probe of each (member, VIP index) arrived, whether the
/// probe still runs, and the listening window doctor asked for.
#[derive(Clone, Default)]
pub struct Seen {
    last: Arc<Mutex<BTreeMap<(u8, u8), Instant>>>,
    stopped: Arc<AtomicBool>,
    window: Arc<Mutex<Window>>,
}

/// The receive tap's window.
#[derive(Default)]
struct Window {
    /// Keep the tap open until then.
    until: Option<Instant>,
    /// Open since then (`None`: closed).
    since: Option<Instant>,
}

impl Seen {
    /// Keeps the receive tap open for `d` from now (opening it within
    /// 200 ms if closed).
    pub fn listen_for(&self, d: Duration) {
        if let Ok(mut w) = self.window.lock() {
            w.until = Some(Instant::now() + d);
        }
    }

    /// How long the tap has been open, ms (0: closed): probes are judged
    /// only after a few intervals of listening.
    pub fn listening_ms(&self) -> u64 {
        self.window
            .lock()
            .ok()
            .and_then(|w| w.since)
            .map_or(0, |t| t.elapsed().as_millis() as u64)
    }

    /// Whether the tap should be open now; records when it opened or closed.
    fn want_tap(&self, open: bool) -> bool {
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        let want = w.until.is_some_and(|t| Instant::now() < t);
        match (want, open) {
            (true, false) => w.since = Some(Instant::now()),
            (false, true) => w.since = None,
            _ => {}
        }
        want
    }

    /// False once the probe thread ended (its error is in the log).
    pub fn running(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed)
    }

    /// Milliseconds since member `member`'s last probe for VIP `vip`
    /// arrived (`None`: never).
    pub fn ago_ms(&self, member: u8, vip: u8) -> Option<u64> {
        let m = self.last.lock().ok()?;
        m.get(&(member, vip))
            .map(|t| t.elapsed().as_millis() as u64)
    }

    fn record(&self, p: &Probe) {
        if let Ok(mut m) = self.last.lock() {
            m.insert((p.member, p.vip), Instant::now());
        }
    }
}

/// What to probe: this node, its interface and the VIPs' cluster MACs.
pub struct Plan {
    /// The cluster's hash seed.
    pub cluster: u64,
    /// This member.
    pub member: u8,
    /// The interface VIP traffic arrives on.
    pub interface: String,
    /// Each VIP and its cluster MAC, in configuration order.
    pub vips: Vec<(IpAddr, [u8; 6])>,
}

/// A packet socket for `protocol` (network order; 0: send only, no tap).
fn packet_socket(protocol: u16) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket call; the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol as i32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_option<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` is a live T of the size we pass; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a packet tap on `ifindex` that receives only probes, and never
/// sees (so never clones) outgoing packets.
fn open_tap(ifindex: u32) -> std::io::Result<OwnedFd> {
    let fd = packet_socket((libc::ETH_P_ALL as u16).to_be())?;
    // Accept IPv4 or IPv6 (no IPv4 options) of protocol PROBE_PROTO only.
    let bpf = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let mut prog = [
        bpf(0x28, 0, 0, 12),                 // ldh [12]
        bpf(0x15, 0, 2, 0x0800),             // jeq IPv4 ? next : +2
        bpf(0x30, 0, 0, 23),                 // ldb [23]
        bpf(0x15, 3, 4, PROBE_PROTO as u32), // jeq 253 ? accept : reject
        bpf(0x15, 0, 3, 0x86dd),             // jeq IPv6 ? next : reject
        bpf(0x30, 0, 0, 20),                 // ldb [20]
        bpf(0x15, 0, 1, PROBE_PROTO as u32), // jeq 253 ? accept : reject
        bpf(0x06, 0, 0, 256),                // accept
        bpf(0x06, 0, 0, 0),                  // reject
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    set_option(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
    set_option(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1i32)?;
    // SAFETY: a zeroed sockaddr_ll filled with the family, protocol, index.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binding our socket to a valid sockaddr_ll.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: TICK.as_micros() as i64,
    };
    set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    Ok(fd)
}

/// Starts the probe thread: it sends this node's probes every
/// [`PROBE_INTERVAL`] and records the others'. It runs for the life of
/// the process; failures are logged once and the thread ends (doctor then
/// reports the probes missing).
pub fn start(plan: Plan) -> Seen {
    let seen = Seen::default();
    let out = seen.clone();
    let spawned = std::thread::Builder::new()
        .name("xnlb-flood-probe".into())
        .spawn(move || {
            let result = run(&plan, &seen);
            seen.stopped.store(true, Ordering::Relaxed);
            if let Err(e) = result {
                tracing::warn!("cluster MAC flood probe on {} stopped: {e}", plan.interface);
            }
        });
    if let Err(e) = spawned {
        out.stopped.store(true, Ordering::Relaxed);
        tracing::warn!("cluster MAC flood probe not started: {e}");
    }
    out
}

/// How often the probe thread looks at its clock and window.
const TICK: Duration = Duration::from_millis(200);

fn run(plan: &Plan, seen: &Seen) -> std::io::Result<()> {
    let ifindex = crate::dataplane::ifindex(&plan.interface);
    let sender = packet_socket(0)?;
    let src = crate::host::interface_mac(&plan.interface)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let frames: Vec<Vec<u8>> = plan
        .vips
        .iter()
        .enumerate()
        .map(|(i, (vip, mac))| {
            let p = Probe {
                cluster: plan.cluster,
                member: plan.member,
                vip: i as u8,
            };
            build(*mac, src, vip.is_ipv6(), &p)
        })
        .collect();
    let mut next_send = Instant::now();
    let mut tap: Option<OwnedFd> = None;
    let mut buf = [0u8; 256];
    loop {
        if Instant::now() >= next_send {
            for f in &frames {
                send(&sender, ifindex, f);
            }
            next_send = Instant::now() + PROBE_INTERVAL;
        }
        match (seen.want_tap(tap.is_some()), &tap) {
            (true, None) => tap = Some(open_tap(ifindex)?),
            (false, Some(_)) => tap = None,
            _ => {}
        }
        let Some(fd) = &tap else {
            std::thread::sleep(TICK);
            continue;
        };
        // SAFETY: a zeroed sockaddr_ll the kernel fills in.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: receiving into our buffer and address.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
                &mut from as *mut _ as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        if let Some(p) = parse(&buf[..n as usize]) {
            if p.cluster == plan.cluster && p.member != plan.member {
                seen.record(&p);
            }
        }
    }
}

fn send(fd: &OwnedFd, ifindex: u32, frame: &[u8]) {
    // SAFETY: a zeroed sockaddr_ll naming the interface.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: sending our buffer to a valid address.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        tracing::debug!("flood probe: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_round_trips_and_other_frames_are_not_probes() {
        let p = Probe {
            cluster: 0x1234_5678_9abc_def0,
            member: 3,
            vip: 1,
        };
        for v6 in [false, true] {
            let f = build([0x03, 0xbf, 1, 2, 3, 4], [2, 0, 0, 0, 0, 1], v6, &p);
            assert_eq!(parse(&f), Some(p), "v6 {v6}");
            let mut to_own_mac = f.clone();
            to_own_mac[0] = 0x02;
            to_own_mac[1] = 0x00;
            assert_eq!(parse(&to_own_mac), None);
            assert_eq!(parse(&f[..f.len() - 1]), None, "truncated");
        }
        let f = build([0x03, 0xbf, 1, 2, 3, 4], [2, 0, 0, 0, 0, 1], false, &p);
        assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum verifies");
    }
}
