//! The kernel's TCP socket table, as the judge of which node holds a
//! connection (DESIGN S6).
//!
//! Every node sees every packet, so the node whose kernel holds a
//! connection's socket can keep accepting it whoever owns the bucket now.
//! This module dumps the sockets this node's kernel holds on the VIPs
//! (`NETLINK_SOCK_DIAG`, the interface `ss` uses) and maps them onto slots
//! with the one flow hash ([`crate::flow::classify`]), so the agent knows
//! which buckets it still *lingers* in after they moved away, and when a
//! drain or handoff is done: when no socket is left in the moved buckets.
//! The kernel validates sequence numbers and knows when a connection ends
//! (FIN, RST, timeout), so unlike a tracking table it cannot be fooled by
//! spoofed packets, does not evict long-lived connections under churn, and
//! forgets connections that ended with a reset.

use std::net::IpAddr;

use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use thiserror::Error;
use xnlb_common::{ipproto, Table};

use crate::flow::{classify, FlowSpec};

/// Why the socket table could not be read.
#[derive(Debug, Error)]
pub enum SocketsError {
    /// The netlink socket failed.
    #[error("reading the TCP socket table (sock_diag): {0}")]
    Io(#[from] std::io::Error),
    /// The kernel answered something that does not parse.
    #[error("reading the TCP socket table (sock_diag): malformed answer: {0}")]
    Malformed(String),
    /// The kernel answered with an error code.
    #[error("reading the TCP socket table (sock_diag): kernel error {0}")]
    Kernel(i32),
}

/// TCP states in which a socket carries a connection whose packets must
/// keep reaching this node: the handshake's last step (`SYN_RECV`), data
/// (`ESTABLISHED`) and the closing states. `TIME_WAIT` is left out: it
/// holds no data, answers at most a retransmitted FIN, and would keep a
/// drain waiting 60 s for nothing.
pub fn held_states() -> StateFlags {
    StateFlags::SYN_RECV
        | StateFlags::ESTABLISHED
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

/// One connection to a VIP held by this node's kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldConn {
    /// The VIP (the socket's local address).
    pub vip: IpAddr,
    /// The VIP port.
    pub vip_port: u16,
    /// The client.
    pub client: IpAddr,
    /// The client's port.
    pub client_port: u16,
    /// TCP state (`TCP_ESTABLISHED` = 1, ...).
    pub state: u8,
}

/// The TCP connections this node's kernel holds (in the current network
/// namespace) whose local address is one of `vips`, in [`held_states`].
pub fn held_connections(vips: &[IpAddr]) -> Result<Vec<HeldConn>, SocketsError> {
    let mut out = Vec::new();
    for (family, v6) in [(AF_INET, false), (AF_INET6, true)] {
        if !vips.iter().any(|v| v.is_ipv6() == v6) {
            continue;
        }
        dump(family, v6, vips, &mut out)?;
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn dump(
    family: u8,
    v6: bool,
    vips: &[IpAddr],
    out: &mut Vec<HeldConn>,
) -> Result<(), SocketsError> {
    let request = SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::empty(),
        states: held_states(),
        socket_id: if v6 {
            SocketId::new_v6()
        } else {
            SocketId::new_v4()
        },
    });
    let answers =
        crate::netlink::exchange(NETLINK_SOCK_DIAG, request, NLM_F_DUMP).map_err(|e| {
            match (e.kind(), e.raw_os_error()) {
                (std::io::ErrorKind::InvalidData, _) => SocketsError::Malformed(e.to_string()),
                (_, Some(code)) => SocketsError::Kernel(-code),
                _ => SocketsError::Io(e),
            }
        })?;
    for answer in answers {
        if let SockDiagMessage::InetResponse(r) = answer {
            let id = &r.header.socket_id;
            if vips.contains(&id.source_address) {
                out.push(HeldConn {
                    vip: id.source_address,
                    vip_port: id.source_port,
                    client: id.destination_address,
                    client_port: id.destination_port,
                    state: r.header.state,
                });
            }
        }
    }
    Ok(())
}

/// The data-plane slot (`Table::state` index) a connection falls in,
/// computed exactly as the XDP program classifies its packets; `None` if
/// its address is no VIP of `table`.
pub fn slot_of(table: &Table, c: &HeldConn) -> Option<usize> {
    classify(
        table,
        &FlowSpec {
            vip: c.vip,
            client: c.client,
            proto: ipproto::TCP,
            client_port: c.client_port,
            vip_port: c.vip_port,
        },
    )
    .map(|c| c.slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    #[test]
    fn an_established_loopback_connection_is_found_and_gone_after_close() {
        // Loopback in this process's namespace: the listener's address plays
        // the VIP. Needs no privilege.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        let vip_port = listener.local_addr().expect("addr").port();
        // The client end binds another loopback address: only the server
        // end has the "VIP" as its local address, as on a real node.
        let client_sock = socket_from(Ipv4Addr::new(127, 0, 0, 2));
        let mut client = connect_from(client_sock, vip_port);
        let (mut server, peer) = listener.accept().expect("accept");
        client.write_all(b"x").expect("write");
        let mut b = [0u8; 1];
        server.read_exact(&mut b).expect("read");
        let vips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let held = held_connections(&vips).expect("sock_diag");
        let ours: Vec<&HeldConn> = held
            .iter()
            .filter(|c| c.vip_port == vip_port && c.client_port == peer.port())
            .collect();
        assert_eq!(ours.len(), 1, "{held:?}");
        assert_eq!(ours[0].state, 1, "established");
        assert!(
            !held.iter().any(|c| c.client_port == vip_port),
            "the client's end is not a VIP socket: {held:?}"
        );
        // Reset by the client: the server's socket is gone at once.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a valid linger struct.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&client),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let _ = server.read(&mut b);
            let held = held_connections(&vips).expect("sock_diag");
            let still = held
                .iter()
                .any(|c| c.vip_port == vip_port && c.client_port == peer.port() && c.state == 1);
            if !still {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "still held: {held:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// A TCP socket bound to `ip` (port chosen by the kernel).
    fn socket_from(ip: Ipv4Addr) -> std::os::fd::OwnedFd {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "socket");
        // SAFETY: fd is a fresh descriptor we own.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: bind with a valid sockaddr_in of the right size.
        let rc = unsafe {
            libc::bind(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind {ip}");
        owned
    }

    /// Connects the bound socket `s` to 127.0.0.1:`port`.
    fn connect_from(s: std::os::fd::OwnedFd, port: u16) -> TcpStream {
        use std::os::fd::AsRawFd;
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: connect with a valid sockaddr_in of the right size.
        let rc = unsafe {
            libc::connect(
                s.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "connect");
        TcpStream::from(s)
    }

    #[test]
    fn connections_map_to_the_slots_the_data_plane_would_use() {
        let mut table = Table::empty();
        table.seed = xnlb_common::seed_from_name(b"web");
        table.buckets = 64;
        table.nvips = 1;
        let vip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
        table.vips[0].addr = xnlb_common::addr_words(&crate::flow::ip_bytes(vip));
        table.vips[0].family = xnlb_common::family::V4;
        table.vips[0].default_mode = xnlb_common::mode::MULTIPLE;
        let conns: Vec<HeldConn> = (0..200u16)
            .map(|i| HeldConn {
                vip,
                vip_port: 80,
                client: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 7)),
                client_port: 30_000 + i,
                state: 1,
            })
            .collect();
        for c in &conns {
            let spec = FlowSpec {
                vip,
                client: c.client,
                proto: ipproto::TCP,
                client_port: c.client_port,
                vip_port: 80,
            };
            let want = classify(&table, &spec).expect("a VIP").slot;
            assert_eq!(slot_of(&table, c), Some(want), "{c:?}");
            assert!(want < 64);
        }
        let other = HeldConn {
            vip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            ..conns[0]
        };
        assert_eq!(slot_of(&table, &other), None, "not a VIP");
    }
}
