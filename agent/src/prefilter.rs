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
use std::sync::Arc;

use crate::config::Config;

/// The reason name under `protocol_drops` in status JSON and metrics.
pub const UNKNOWN_SOURCE: &str = "unknown_source";

/// Which source addresses may talk to the heartbeat port.
#[derive(Clone, Debug)]
pub struct SourceFilter {
    members: Arc<HashSet<IpAddr>>,
    dropped: Arc<AtomicU64>,
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
        let members = cfg
            .members
            .iter()
            .flat_map(|m| m.addrs.iter().map(|a| canonical(a.ip())))
            .collect();
        SourceFilter {
            members: Arc::new(members),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether a datagram from `from` may go to the core; counts it if not.
    pub fn admits(&self, from: SocketAddr) -> bool {
        let ok = self.members.contains(&canonical(from.ip()));
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
