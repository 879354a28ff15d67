//! What nginx's access logs say about who answered which client
//! connection, and the check that no client connection was answered by two
//! nodes.
//!
//! A client connection is known to the servers by its client address and
//! port, but the port is not unique over a run: new connections reuse
//! ephemeral ports, and after a handoff a reused port may legitimately be
//! answered by another node. What cannot happen is two connections from one
//! client endpoint at the same time (the client's kernel allows one socket
//! per 4-tuple). Each server-side connection (a node and nginx's connection
//! serial) has a window: from the connection's start (a request's end time
//! minus the connection's age then) to its last request's end. Its window
//! lies inside the client connection's lifetime, so two windows from one
//! client endpoint on two different nodes that intersect mean one client
//! connection was answered by two nodes.
//!
//! nginx's clock is cached per event loop iteration, so a logged time can
//! be early by one iteration (longer if the worker is preempted on a busy
//! machine), and a port reused at once could look like an overlap. Two
//! windows therefore count only if they intersect by more than
//! [`CLOCK_SLACK_MS`]. That misses only two nodes answering the same client
//! connection within a few milliseconds in all, which TCP itself prevents
//! (the client completes one handshake; the other node's socket never gets
//! a request); a connection carried on by a second node, the failure that
//! matters, overlaps by its whole life. Linux hands a port to the same
//! destination again only after cycling through its range (hundreds of ms
//! to seconds at these rates, once 5 ms after a fault), and
//! [`closest_reuse_ms`] reports the margin a run actually had.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// How much two windows must intersect to count as one client connection
/// answered by two nodes (ms): nginx's cached clock, skewed between nodes.
pub const CLOCK_SLACK_MS: u64 = 3;

/// One line of a node's access log (format in [`super::nginx`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedRequest {
    /// The node whose nginx answered.
    pub node: u8,
    /// The client's address and port.
    pub client: SocketAddr,
    /// nginx's connection serial (unique within one nginx).
    pub serial: u64,
    /// The request's number on its connection, from 1.
    pub nth: u64,
    /// When the request ended, ms since the Unix epoch.
    pub end_ms: u64,
    /// The connection's age when the request ended, ms.
    pub age_ms: u64,
    /// The request's path.
    pub path: String,
    /// The response status.
    pub status: u16,
}

/// Seconds with up to three decimals (`1796003908.364`, `0.001`) as ms.
fn parse_ms(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ms: u64 = format!("{frac:0<3}").parse().ok()?;
    int.parse::<u64>()
        .ok()?
        .checked_mul(1000)?
        .checked_add(frac_ms)
}

/// Parses one access log line: `node addr port serial nth msec
/// connection_time path status`.
pub fn parse_line(line: &str) -> Option<ServedRequest> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [node, addr, port, serial, nth, msec, age, path, status] = f[..] else {
        return None;
    };
    Some(ServedRequest {
        node: node.parse().ok()?,
        client: SocketAddr::new(addr.parse::<IpAddr>().ok()?, port.parse().ok()?),
        serial: serial.parse().ok()?,
        nth: nth.parse().ok()?,
        end_ms: parse_ms(msec)?,
        age_ms: parse_ms(age)?,
        path: path.to_string(),
        status: status.parse().ok()?,
    })
}

/// One server-side connection: what one node's nginx served on one
/// accepted socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedConn {
    /// The node.
    pub node: u8,
    /// The client endpoint.
    pub client: SocketAddr,
    /// nginx's connection serial.
    pub serial: u64,
    /// When the connection was accepted, ms since the Unix epoch.
    pub start_ms: u64,
    /// When its last logged request ended.
    pub end_ms: u64,
    /// Requests logged on it.
    pub requests: u64,
    /// The path of its first request.
    pub path: String,
    /// Responses with a status outside 200-399.
    pub failed: u64,
}

impl ServedConn {
    /// Whether the two windows intersect by more than [`CLOCK_SLACK_MS`].
    fn intersects(&self, other: &ServedConn) -> bool {
        let from = self.start_ms.max(other.start_ms);
        let to = self.end_ms.min(other.end_ms);
        to > from + CLOCK_SLACK_MS
    }
}

/// Groups requests into the server-side connections that carried them,
/// ordered by client endpoint and start.
pub fn connections(reqs: &[ServedRequest]) -> Vec<ServedConn> {
    let mut by: BTreeMap<(u8, u64), ServedConn> = BTreeMap::new();
    for r in reqs {
        let start = r.end_ms.saturating_sub(r.age_ms);
        let c = by.entry((r.node, r.serial)).or_insert_with(|| ServedConn {
            node: r.node,
            client: r.client,
            serial: r.serial,
            start_ms: start,
            end_ms: r.end_ms,
            requests: 0,
            path: r.path.clone(),
            failed: 0,
        });
        if r.nth == 1 {
            c.path = r.path.clone();
        }
        c.start_ms = c.start_ms.min(start);
        c.end_ms = c.end_ms.max(r.end_ms);
        c.requests += 1;
        c.failed += u64::from(!(200..400).contains(&r.status));
    }
    let mut out: Vec<ServedConn> = by.into_values().collect();
    out.sort_by_key(|c| (c.client, c.start_ms, c.node, c.serial));
    out
}

/// Server-side connections grouped by client endpoint.
fn by_client(conns: &[ServedConn]) -> BTreeMap<SocketAddr, Vec<&ServedConn>> {
    let mut m: BTreeMap<SocketAddr, Vec<&ServedConn>> = BTreeMap::new();
    for c in conns {
        m.entry(c.client).or_default().push(c);
    }
    m
}

/// Pairs of server-side connections on two different nodes from one
/// client endpoint whose windows intersect: one client connection answered
/// by two nodes. Must be empty.
pub fn overlaps(conns: &[ServedConn]) -> Vec<(ServedConn, ServedConn)> {
    let mut out = Vec::new();
    for group in by_client(conns).values() {
        for (i, a) in group.iter().enumerate() {
            for b in &group[i + 1..] {
                if a.node != b.node && a.intersects(b) {
                    out.push(((*a).clone(), (*b).clone()));
                }
            }
        }
    }
    out
}

/// The smallest gap between one connection's end and the next one's start
/// from the same client endpoint on another node (`None` if no endpoint
/// was answered by two nodes): how far the run was from the clock
/// granularity the overlap check relies on.
pub fn closest_reuse_ms(conns: &[ServedConn]) -> Option<u64> {
    by_client(conns)
        .values()
        .flat_map(|group| {
            group
                .windows(2)
                .filter(|w| w[0].node != w[1].node)
                .map(|w| w[1].start_ms.saturating_sub(w[0].end_ms))
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(node: u8, port: u16, serial: u64, nth: u64, end_ms: u64, age_ms: u64) -> String {
        format!(
            "{node} 198.18.1.200 {port} {serial} {nth} {}.{:03} {}.{:03} /keepalive 200",
            end_ms / 1000,
            end_ms % 1000,
            age_ms / 1000,
            age_ms % 1000
        )
    }

    fn conns(lines: &[String]) -> Vec<ServedConn> {
        let reqs: Vec<ServedRequest> = lines
            .iter()
            .map(|l| parse_line(l).expect("parses"))
            .collect();
        connections(&reqs)
    }

    #[test]
    fn a_real_nginx_line_parses() {
        let r = parse_line("2 198.18.1.200 52228 52769 3 1796003908.364 0.001 /new 200")
            .expect("parses");
        assert_eq!(r.node, 2);
        assert_eq!(r.client, "198.18.1.200:52228".parse().unwrap());
        assert_eq!((r.serial, r.nth), (52769, 3));
        assert_eq!((r.end_ms, r.age_ms), (1_796_003_908_364, 1));
        assert_eq!((r.path.as_str(), r.status), ("/new", 200));
        assert_eq!(parse_ms("12.5"), Some(12_500));
        assert!(parse_line("2 198.18.1.200 52228 52769 3 1796003908.364 /new 200").is_none());
        assert!(parse_ms("1.2345").is_none());
    }

    #[test]
    fn a_keepalive_connection_answered_by_two_nodes_is_an_overlap() {
        // Port 40000's connection: node 1 serves it from t=1000 to 5000;
        // node 2 answers requests from the same endpoint at 3000-3100.
        let log = [
            line(1, 40000, 7, 1, 1_000, 0),
            line(1, 40000, 7, 2, 3_050, 2_050),
            line(1, 40000, 7, 3, 5_000, 4_000),
            line(2, 40000, 9, 1, 3_000, 0),
            line(2, 40000, 9, 2, 3_100, 100),
        ];
        let c = conns(&log);
        assert_eq!(c.len(), 2);
        let o = overlaps(&c);
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!((o[0].0.node, o[0].1.node), (1, 2));
    }

    #[test]
    fn short_connections_answered_by_two_nodes_at_once_are_an_overlap() {
        // Node 1 serves port 40001 from 1000 to 1020; node 3 from 1005 to
        // 1030: 15 ms of one client endpoint on two nodes.
        let c = conns(&[
            line(1, 40001, 7, 1, 1_020, 20),
            line(3, 40001, 4, 1, 1_030, 25),
        ]);
        assert_eq!(overlaps(&c).len(), 1);
    }

    #[test]
    fn windows_touching_within_the_clock_slack_are_no_overlap() {
        // A port reused at once: node 2's logged start is 2 ms before node
        // 1's logged end (cached clocks).
        let c = conns(&[
            line(1, 40004, 7, 1, 2_000, 5),
            line(2, 40004, 3, 1, 2_004, 6),
        ]);
        assert!(overlaps(&c).is_empty(), "{:?}", overlaps(&c));
    }

    #[test]
    fn a_port_reused_by_a_later_connection_on_another_node_is_no_overlap() {
        // A short connection on node 1 ends at 2000; the client reuses the
        // port 1 ms later for a connection node 2 answers (its bucket moved),
        // and once more on node 1 later.
        let c = conns(&[
            line(1, 40002, 7, 1, 2_000, 3),
            line(2, 40002, 3, 1, 2_004, 3),
            line(1, 40002, 12, 1, 9_000, 0),
        ]);
        assert!(overlaps(&c).is_empty(), "{:?}", overlaps(&c));
        assert_eq!(closest_reuse_ms(&c), Some(1));
    }

    #[test]
    fn two_connections_of_one_node_are_no_overlap_between_nodes() {
        let c = conns(&[
            line(1, 40003, 7, 1, 2_000, 500),
            line(1, 40003, 8, 1, 2_100, 500),
        ]);
        assert!(overlaps(&c).is_empty());
        assert_eq!(closest_reuse_ms(&c), None);
    }
}
