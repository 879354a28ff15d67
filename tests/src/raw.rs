//! Raw sockets for the tests: AF_PACKET sockets that send hand-built frames
//! and sniff what crosses an interface, a raw ICMP echo client, the
//! Internet checksum those frames need, and interface MACs.
//!
//! Only what std has no safe equivalent for lives here; every socket is an
//! `OwnedFd` from the moment it exists, opened `SOCK_CLOEXEC` so an agent
//! started later does not inherit it.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// An AF_PACKET socket (raw frames, Ethernet header included).
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

/// `SO_RCVTIMEO` of `timeout` on `fd`.
fn set_recv_timeout(fd: RawFd, timeout: Duration) {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt with a timeval on a descriptor we own.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
}

/// A fresh AF_PACKET socket receiving `protocol` (network order is applied
/// here; 0 receives nothing).
fn packet_fd(protocol: u16, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall; the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | flags,
            protocol.to_be() as i32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The index of interface `dev` of the current namespace (0: none).
pub fn ifindex(dev: &str) -> i32 {
    let name = std::ffi::CString::new(dev).expect("interface name");
    // SAFETY: a NUL-terminated name.
    unsafe { libc::if_nametoindex(name.as_ptr()) as i32 }
}

/// A link-layer address: interface `ifindex`, ethertype `protocol` (host
/// order), destination `mac` (zero: none).
pub fn sockaddr_ll(ifindex: i32, protocol: u16, mac: [u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: a zeroed sockaddr_ll is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    if mac != [0; 6] {
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&mac);
    }
    sll
}

impl PacketSocket {
    /// Bound to `dev` of the current namespace, receiving every protocol,
    /// each receive waiting at most `timeout`. Panics if it cannot.
    pub fn bind(dev: &str, timeout: Duration) -> PacketSocket {
        let ifindex = ifindex(dev);
        assert!(ifindex > 0, "no {dev}");
        let fd = packet_fd(libc::ETH_P_ALL as u16, libc::SOCK_CLOEXEC)
            .unwrap_or_else(|e| panic!("packet socket: {e}"));
        let sll = sockaddr_ll(ifindex, libc::ETH_P_ALL as u16, [0; 6]);
        // SAFETY: bind with a valid sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
        set_recv_timeout(fd.as_raw_fd(), timeout);
        PacketSocket { fd, ifindex }
    }

    /// Receiving every protocol on every interface of the current
    /// namespace, each receive waiting at most `timeout`.
    pub fn any(timeout: Duration) -> io::Result<PacketSocket> {
        let fd = packet_fd(libc::ETH_P_ALL as u16, libc::SOCK_CLOEXEC)?;
        set_recv_timeout(fd.as_raw_fd(), timeout);
        Ok(PacketSocket { fd, ifindex: 0 })
    }

    /// The interface it is bound to (0: any).
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Sends `frame` whole on the bound interface; panics otherwise.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: send from our buffer on a bound packet socket.
        let rc = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        assert_eq!(
            rc as usize,
            frame.len(),
            "send: {}",
            io::Error::last_os_error()
        );
    }

    /// The next frame, or `None` when the receive timed out or failed.
    pub fn recv<'a>(&self, buf: &'a mut [u8]) -> Option<&'a [u8]> {
        // SAFETY: recv into our buffer.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        (n >= 0).then(|| &buf[..n as usize])
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Captures, in namespace `ns` (every interface there, e.g. a bridge's
/// ports), the first IPv4 UDP datagram to `port`: (source, destination,
/// payload). `None` after `timeout`.
pub fn sniff_udp(
    ns: &Netns,
    port: u16,
    timeout: Duration,
) -> Option<(Ipv4Addr, Ipv4Addr, Vec<u8>)> {
    ns.enter(|| {
        let sock = PacketSocket::any(Duration::from_millis(100)).ok()?;
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            let Some(f) = sock.recv(&mut buf) else {
                continue;
            };
            if f.len() < 14 + 20 + 8 {
                continue;
            }
            if f[12..14] != [0x08, 0x00] || f[14] >> 4 != 4 || f[14 + 9] != 17 {
                continue;
            }
            let ihl = ((f[14] & 0xf) as usize) * 4;
            let udp = 14 + ihl;
            if f.len() < udp + 8 || u16::from_be_bytes([f[udp + 2], f[udp + 3]]) != port {
                continue;
            }
            let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
            let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
            let ulen = u16::from_be_bytes([f[udp + 4], f[udp + 5]]) as usize;
            let end = (udp + ulen).min(f.len());
            return Some((src, dst, f[udp + 8..end].to_vec()));
        }
        None
    })
}

/// The Internet checksum (RFC 1071) of `b`: IPv4 headers, ICMP messages.
pub fn internet_checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for ch in b.chunks(2) {
        let w = if ch.len() == 2 {
            u16::from_be_bytes([ch[0], ch[1]])
        } else {
            u16::from_be_bytes([ch[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The MAC address of interface `dev` in `ns`.
pub fn mac_of(ns: &Netns, dev: &str) -> [u8; 6] {
    let s = ns.sh(&format!("cat /sys/class/net/{dev}/address"));
    let mut mac = [0u8; 6];
    for (m, part) in mac.iter_mut().zip(s.trim().split(':')) {
        *m = u8::from_str_radix(part, 16).expect("mac");
    }
    mac
}

/// Sends echo requests with `ids` x `seqs` to `to` from a raw ICMP socket
/// in the current namespace; counts echo replies per (id, seq).
pub fn ping_raw(to: Ipv4Addr, ids: &[u16], seqs: u16) -> HashMap<(u16, u16), usize> {
    // SAFETY: a raw ICMP socket, owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    assert!(fd >= 0, "raw socket: {}", io::Error::last_os_error());
    // SAFETY: fresh descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    set_recv_timeout(sock.as_raw_fd(), Duration::from_millis(50));
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.octets()),
        },
        sin_zero: [0; 8],
    };
    let mut counts = HashMap::new();
    let recv_some = |counts: &mut HashMap<(u16, u16), usize>, until: Instant| {
        let mut buf = [0u8; 2048];
        while Instant::now() < until {
            // SAFETY: recv into our buffer.
            let n = unsafe {
                libc::recv(
                    sock.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 28 {
                continue;
            }
            let ihl = ((buf[0] & 0xf) as usize) * 4;
            let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            let icmp = &buf[ihl..n as usize];
            if src == to && icmp.len() >= 8 && icmp[0] == 0 {
                let id = u16::from_be_bytes([icmp[4], icmp[5]]);
                let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
                *counts.entry((id, seq)).or_insert(0) += 1;
            }
        }
    };
    for seq in 1..=seqs {
        for &id in ids {
            let mut pkt = vec![8u8, 0, 0, 0];
            pkt.extend_from_slice(&id.to_be_bytes());
            pkt.extend_from_slice(&seq.to_be_bytes());
            pkt.extend_from_slice(&[0xa5; 56]);
            let ck = internet_checksum(&pkt);
            pkt[2..4].copy_from_slice(&ck.to_be_bytes());
            // SAFETY: sendto with a valid sockaddr_in.
            let rc = unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    pkt.as_ptr() as *const libc::c_void,
                    pkt.len(),
                    0,
                    &dst as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            assert!(rc > 0, "sendto: {}", io::Error::last_os_error());
        }
        recv_some(&mut counts, Instant::now() + Duration::from_millis(60));
    }
    recv_some(&mut counts, Instant::now() + Duration::from_millis(400));
    counts
}

#[cfg(test)]
mod tests {
    use super::internet_checksum;

    #[test]
    fn internet_checksum_matches_rfc_1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2.
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&b), !0xddf2);
        // A header with its checksum filled in sums to zero.
        let mut h = b.to_vec();
        h.extend_from_slice(&internet_checksum(&b).to_be_bytes());
        assert_eq!(internet_checksum(&h), 0);
    }
}
