//! Drops heartbeat-port datagrams from addresses that are no member's,
//! before they reach the protocol core.
//!
//! The core authenticates every datagram (HMAC-SHA256), but it runs on the
//! one thread that also sends our heartbeats, and the receive tasks hand it
//! datagrams through a bounded channel: a flood of unauthenticated junk
//! (hundreds of thousands per second from anywhere that can reach the port)
//! would fill that channel and the socket's receive buffer, and real
//! heartbeats would queue behind it or be dropped until members look dead.
//! Comparing the source address with the configured members' addresses
//! costs a hash lookup and no MAC, so junk is discarded as fast as the
//! kernel delivers it. A forger who spoofs a member's address still passes
//! here and is dropped (and counted) by the core, as before.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::Config;

/// The reason name under `protocol_drops` in status JSON and metrics.
pub const UNKNOWN_SOURCE: &str = "unknown_source";

/// Which source addresses may talk to the heartbeat port.
#[derive(Clone, Debug)]
pub struct SourceFilter {
    /// Shared with the receive tasks, so a reload that changes member
    /// addresses takes effect for them at once.
    members: Arc<RwLock<HashSet<IpAddr>>>,
    dropped: Arc<AtomicU64>,
}

fn member_addrs(cfg: &Config) -> HashSet<IpAddr> {
    cfg.members
        .iter()
        .flat_map(|m| m.addrs.iter().map(|a| canonical(a.ip())))
        .collect()
}

/// An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4
/// sender) compares as the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl SourceFilter {
    /// Every address of every configured member (all links; our own too:
    /// harmless, and a loopback test setup needs it).
    pub fn new(cfg: &Config) -> SourceFilter {
        SourceFilter {
            members: Arc::new(RwLock::new(member_addrs(cfg))),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Takes the member addresses of a reloaded `cfg` (every clone of this
    /// filter sees them).
    pub fn update(&self, cfg: &Config) {
        let addrs = member_addrs(cfg);
        match self.members.write() {
            Ok(mut m) => *m = addrs,
            Err(poisoned) => *poisoned.into_inner() = addrs,
        }
    }

    /// Whether a datagram from `from` may go to the core; counts it if not.
    pub fn admits(&self, from: SocketAddr) -> bool {
        let ok = match self.members.read() {
            Ok(m) => m.contains(&canonical(from.ip())),
            Err(poisoned) => poisoned.into_inner().contains(&canonical(from.ip())),
        };
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Datagrams refused so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Most datagrams [`drain_ready`] takes from one socket in one call: a
/// flood must not keep the protocol thread from its timers.
pub const DRAIN_MAX: usize = 4096;

/// Reads what is already queued on `sock` without waiting, and hands each
/// datagram from a member to `deliver`.
///
/// Called right before the core runs its timers: after the protocol thread
/// was off the CPU (a loaded host, a flood), a member's heartbeats may sit
/// in the socket behind junk while its silence timer has run out; reading
/// them first keeps a late thread from declaring a live member dead.
pub fn drain_ready(
    sock: &tokio::net::UdpSocket,
    filter: &SourceFilter,
    buf: &mut [u8],
    mut deliver: impl FnMut(&[u8]),
) {
    for _ in 0..DRAIN_MAX {
        match sock.try_recv_from(buf) {
            Ok((n, from)) => {
                if filter.admits(from) {
                    deliver(&buf[..n]);
                }
            }
            Err(_) => return,
        }
    }
}

/// Receive buffer of a heartbeat socket.
///
/// The prefilter only helps if junk is read out of the socket faster than
/// it arrives; when the protocol thread is off the CPU for a few ms, the
/// kernel's default buffer (about 200 small datagrams at ~1 KiB of
/// accounting each) is full of junk within milliseconds, and the real
/// heartbeats that arrive next are dropped by the kernel before the
/// prefilter ever sees them. 16 MiB absorbs ~0.5 s of a 30,000/s flood per
/// socket; memory is only used while datagrams wait.
pub const RECEIVE_BUFFER: usize = 16 << 20;

/// Sets [`RECEIVE_BUFFER`] on a heartbeat socket: `SO_RCVBUFFORCE` (the
/// agent has CAP_NET_ADMIN; it ignores `net.core.rmem_max`), else
/// `SO_RCVBUF` (capped by `rmem_max`). Best effort: a smaller buffer is
/// logged, not fatal.
pub fn widen_receive_buffer(sock: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let size = RECEIVE_BUFFER as libc::c_int;
    let set = |opt| {
        // SAFETY: setsockopt with an int on a socket we own.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !set(libc::SO_RCVBUFFORCE) && !set(libc::SO_RCVBUF) {
        tracing::warn!(
            "heartbeat socket receive buffer: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg() -> Config {
        let src = r#"
[node]
id = 1
interface = "eth0"
[cluster]
name = "t"
key_file = "/nonexistent"
listen = ["198.19.1.1:7450", "[fd00:1::1]:7450"]
[[cluster.member]]
id = 1
addrs = ["198.19.1.1:7450", "[fd00:1::1]:7450"]
[[cluster.member]]
id = 2
addrs = ["198.19.1.2:7450", "[fd00:1::2]:7450"]
"#;
        Config::parse(std::path::Path::new("t.toml"), src).expect("valid config")
    }

    #[test]
    fn a_reload_that_moves_a_member_updates_every_clone_of_the_filter() {
        let f = SourceFilter::new(&cfg());
        let receiver_copy = f.clone();
        assert!(!receiver_copy.admits("198.19.1.9:7450".parse().expect("addr")));
        let moved = Config::parse(
            std::path::Path::new("t.toml"),
            r#"
[node]
id = 1
interface = "eth0"
[cluster]
name = "t"
key_file = "/nonexistent"
listen = ["198.19.1.1:7450"]
[[cluster.member]]
id = 1
addrs = ["198.19.1.1:7450"]
[[cluster.member]]
id = 2
addrs = ["198.19.1.9:7450"]
"#,
        )
        .expect("valid config");
        f.update(&moved);
        assert!(receiver_copy.admits("198.19.1.9:7450".parse().expect("addr")));
        assert!(!receiver_copy.admits("198.19.1.2:7450".parse().expect("addr")));
    }

    #[test]
    fn only_member_addresses_pass_and_the_rest_is_counted() {
        let f = SourceFilter::new(&cfg());
        let admits = |s: &str| f.admits(s.parse().expect("socket address"));
        // Members, on any source port, on either link.
        assert!(admits("198.19.1.2:7450"));
        assert!(admits("198.19.1.2:40000"));
        assert!(admits("[fd00:1::2]:7450"));
        assert!(admits("198.19.1.1:7450"));
        // A dual-stack socket's view of an IPv4 member.
        assert!(admits("[::ffff:198.19.1.2]:7450"));
        assert_eq!(f.dropped(), 0);
        // Strangers, including a neighbour of a member and the member's
        // address in the other family.
        assert!(!admits("198.19.1.200:7450"));
        assert!(!admits("198.19.1.3:7450"));
        assert!(!admits("[fd00:1::3]:7450"));
        assert!(!admits("[::ffff:198.19.1.200]:7450"));
        assert_eq!(f.dropped(), 4);
        // Clones share the count (one per receive task, one in status).
        let g = f.clone();
        assert!(!g.admits("203.0.113.1:1".parse().expect("addr")));
        assert_eq!(f.dropped(), 5);
    }
}
