//! Background UDP probing of the VIP while a test changes the cluster.

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{CLIENT, UDP_PORT, VIP};
use crate::netns::Netns;
use crate::traffic::{Probe, ProbeThread};

/// Background UDP probing of the IPv4 VIP from the client: one datagram
/// with a unique id at a time, each from the next client port (20000..
/// 60000), 100 ms to answer. The servers' recorder sees every accepted id,
/// so [`Cluster::overlaps`](super::Cluster::overlaps) covers the whole run.
pub(super) fn start(client: &Netns, first_id: u64) -> ProbeThread {
    ProbeThread::spawn(client, move |stop| {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut id = first_id;
        while !stop.load(Ordering::SeqCst) {
            id += 1;
            let port = 20_000 + (id % 40_000) as u16;
            let sent = Instant::now();
            let mut probe = Probe::unanswered(id, port, sent, sent - t0);
            let node = (|| {
                let sock = UdpSocket::bind((CLIENT, port)).ok()?;
                sock.set_read_timeout(Some(Duration::from_millis(100)))
                    .ok()?;
                sock.send_to(&id.to_le_bytes(), (VIP, UDP_PORT)).ok()?;
                let mut buf = [0u8; 16];
                let (n, _) = sock.recv_from(&mut buf).ok()?;
                (n >= 1).then_some(buf[0])
            })();
            probe.node = node;
            probe.rtt = node.map(|_| sent.elapsed());
            out.push(probe);
            if node.is_none() {
                // Keep a dead period from being only timeouts: pace.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        out
    })
}
