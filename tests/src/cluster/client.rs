//! What the client does: TCP connections from chosen ports (std cannot bind
//! before it connects), long-lived echo connections, single TCP and UDP
//! probes of the VIPs.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::{prober, Cluster, CLIENT, CLIENT6, TCP_PORT, UDP_PORT, VIP};
use crate::traffic::ProbeThread;

impl Cluster {
    /// One TCP connection from `client_port`: the id of the node that
    /// answered, or `None` if the SYN went unanswered within `timeout`.
    pub fn tcp_probe(&self, client_port: u16, timeout: Duration) -> Option<u8> {
        self.client.enter(|| {
            let s = connect_from(client_port, timeout)?;
            read_node_id(s)
        })
    }

    /// One UDP datagram with a unique `id` from `client_port`: the node that
    /// answered (every server records what it accepted).
    pub fn udp_probe(&self, client_port: u16, id: u64, timeout: Duration) -> Option<u8> {
        self.client.enter(|| {
            let s = UdpSocket::bind((CLIENT, client_port)).ok()?;
            s.set_read_timeout(Some(timeout)).ok()?;
            s.send_to(&id.to_le_bytes(), (VIP, UDP_PORT)).ok()?;
            let mut buf = [0u8; 16];
            let (n, _) = s.recv_from(&mut buf).ok()?;
            (n >= 1).then_some(buf[0])
        })
    }

    /// One TCP connection to `vip` (v4 or v6) from `client_port` of the
    /// client's address of the same family: the answering node's id.
    pub fn tcp_probe_at(&self, vip: IpAddr, client_port: u16, timeout: Duration) -> Option<u8> {
        self.client.enter(|| {
            let s = connect_between(
                client_addr(vip, client_port),
                (vip, TCP_PORT).into(),
                timeout,
            )?;
            read_node_id(s)
        })
    }

    /// One UDP datagram of `len` bytes (at least 8; the first 8 are the
    /// little-endian `id`) to `vip` from `client_port`: the node that
    /// answered. Larger than the MTU, it leaves the client in fragments.
    pub fn udp_probe_at(
        &self,
        vip: IpAddr,
        client_port: u16,
        id: u64,
        len: usize,
        timeout: Duration,
    ) -> Option<u8> {
        self.client.enter(|| {
            let s = UdpSocket::bind(client_addr(vip, client_port)).ok()?;
            allow_fragments(&s, vip.is_ipv6());
            s.set_read_timeout(Some(timeout)).ok()?;
            let mut payload = vec![0x5a; len.max(8)];
            payload[..8].copy_from_slice(&id.to_le_bytes());
            s.send_to(&payload, (vip, UDP_PORT)).ok()?;
            let mut buf = [0u8; 16];
            let (n, _) = s.recv_from(&mut buf).ok()?;
            (n >= 1).then_some(buf[0])
        })
    }

    /// Opens a long-lived TCP connection to the IPv4 VIP from
    /// `client_port`; the servers echo every byte until the client closes.
    pub fn open_conn(&self, client_port: u16, timeout: Duration) -> Option<Conn> {
        self.client.enter(|| {
            let mut s = connect_from(client_port, timeout)?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).ok()?;
            Some(Conn {
                port: client_port,
                node: b[0],
                stream: s,
                sent: 0,
            })
        })
    }

    /// Starts probing the IPv4 VIP with UDP datagrams from the client in
    /// the background, one probe at a time, ids from `first_id` + 1.
    pub fn prober(&self, first_id: u64) -> ProbeThread {
        prober::start(&self.client, first_id)
    }
}

/// The client's address of `vip`'s family, with `port`.
pub fn client_addr(vip: IpAddr, port: u16) -> SocketAddr {
    match vip {
        IpAddr::V4(_) => SocketAddr::from((CLIENT, port)),
        IpAddr::V6(_) => SocketAddr::from((CLIENT6, port)),
    }
}

/// Lets the kernel fragment datagrams larger than the path MTU (no DF).
fn allow_fragments(s: &UdpSocket, v6: bool) {
    let (level, opt, val) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DONT,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DONT,
        )
    };
    // SAFETY: setsockopt with an int on a socket we own.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            &val as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
}

/// A `sockaddr_storage` for `a` and its length.
fn raw_sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: a zeroed sockaddr_storage is valid and large enough for both
    // families.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as u32)
}

/// Connects from a fixed local address to `remote` (std cannot bind
/// first). Call it inside the namespace the socket must live in.
pub fn connect_between(
    local: SocketAddr,
    remote: SocketAddr,
    timeout: Duration,
) -> Option<TcpStream> {
    let family = if local.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // CLOEXEC: an agent started later must not inherit the socket, or
    // dropping the stream would not close the connection (no FIN).
    // SAFETY: socket syscalls on a descriptor the TcpStream owns at once.
    unsafe {
        let fd = libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return None;
        }
        let stream = <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const _ as *const libc::c_void,
            4,
        );
        let (l, llen) = raw_sockaddr(local);
        if libc::bind(fd, &l as *const _ as *const libc::sockaddr, llen) != 0 {
            return None;
        }
        let (r, rlen) = raw_sockaddr(remote);
        libc::connect(fd, &r as *const _ as *const libc::sockaddr, rlen);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ready = libc::poll(&mut pfd, 1, timeout.as_millis() as i32) == 1;
        if ready && stream.take_error().ok().flatten().is_none() && stream.peer_addr().is_ok() {
            stream.set_nonblocking(false).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            Some(stream)
        } else {
            None
        }
    }
}

/// A long-lived TCP connection to the VIP (see [`Cluster::open_conn`]).
pub struct Conn {
    /// Client port.
    pub port: u16,
    /// The node that accepted it.
    pub node: u8,
    /// The socket (lives in the client namespace).
    pub stream: TcpStream,
    /// Bytes echoed so far.
    pub sent: u64,
}

impl Conn {
    /// Sends one byte (without waiting for its echo).
    pub fn send(&mut self) -> std::io::Result<()> {
        let b = (self.sent % 251) as u8;
        self.stream.write_all(&[b])
    }

    /// Reads the echo of the last [`Conn::send`] (2 s timeout).
    pub fn recv(&mut self) -> std::io::Result<()> {
        let want = (self.sent % 251) as u8;
        let mut b = [0u8; 1];
        self.stream.read_exact(&mut b)?;
        if b[0] != want {
            return Err(std::io::Error::other(format!(
                "echo {} instead of {want}",
                b[0]
            )));
        }
        self.sent += 1;
        Ok(())
    }
}

/// Sends one byte on every connection, then reads every echo: the ports
/// whose connection broke (error, reset, EOF, timeout), with the reason.
pub fn echo_round(conns: &mut [Conn]) -> Vec<(u16, u8, String)> {
    let mut broken = Vec::new();
    let mut ok = vec![true; conns.len()];
    for (i, c) in conns.iter_mut().enumerate() {
        if let Err(e) = c.send() {
            broken.push((c.port, c.node, format!("send: {e}")));
            ok[i] = false;
        }
    }
    for (i, c) in conns.iter_mut().enumerate() {
        if ok[i] {
            if let Err(e) = c.recv() {
                broken.push((c.port, c.node, format!("echo: {e}")));
            }
        }
    }
    broken
}

/// Connects to the VIP from a fixed client port (std cannot bind first).
pub fn connect_from(port: u16, timeout: Duration) -> Option<TcpStream> {
    connect_between(
        SocketAddr::from((CLIENT, port)),
        SocketAddr::from((VIP, TCP_PORT)),
        timeout,
    )
}

/// Closes `s` with a reset (SO_LINGER 0), as a client that aborts: the
/// server's socket is gone at once, with no FIN exchange.
pub fn abort(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a valid linger struct.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// Reads the one-byte node id a test server sends first.
pub fn read_node_id(mut s: TcpStream) -> Option<u8> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b).ok()?;
    Some(b[0])
}

/// Address helper for tests that talk to a node directly.
pub fn node_addr(id: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([198, 19, 1, id], port))
}
