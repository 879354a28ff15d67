//! The servers every serving node runs on the VIPs, as threads of the test
//! process inside the node's namespace: a TCP server that answers with the
//! node id and then echoes, and a UDP server that answers with the node id
//! and records every datagram it accepted (so a test can prove that none was
//! accepted by two nodes).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{TCP_PORT, UDP_PORT};
use crate::netns::Netns;

/// What the in-process servers of all nodes received.
#[derive(Default)]
pub struct Recorder {
    /// UDP probe id -> nodes that accepted it.
    pub udp: Mutex<HashMap<u64, Vec<u8>>>,
    /// TCP connections accepted per node.
    pub tcp: Mutex<HashMap<u8, u64>>,
    /// UDP probe id -> size of each copy accepted (whole datagrams).
    pub udp_sizes: Mutex<HashMap<u64, Vec<usize>>>,
}

pub(super) fn start_servers(
    ns: &Netns,
    vip: IpAddr,
    id: u8,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let (tcp, udp) = ns.enter(|| {
        let t = TcpListener::bind((vip, TCP_PORT)).expect("bind tcp");
        let u = UdpSocket::bind((vip, UDP_PORT)).expect("bind udp");
        (t, u)
    });
    tcp.set_nonblocking(true).expect("nonblocking");
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let (r1, s1) = (rec.clone(), stop.clone());
    let t = std::thread::spawn(move || {
        let mut conns: Vec<TcpStream> = Vec::new();
        while !s1.load(Ordering::SeqCst) {
            match tcp.accept() {
                Ok((mut c, _)) => {
                    *r1.tcp.lock().expect("rec").entry(id).or_default() += 1;
                    let _ = c.set_nonblocking(false);
                    let _ = c.write_all(&[id]);
                    // Long-lived connections: echo until the client closes.
                    let _ = c.set_nonblocking(true);
                    conns.push(c);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
            let mut buf = [0u8; 256];
            conns.retain_mut(|c| match c.read(&mut buf) {
                Ok(0) => false,
                Ok(n) => c.write_all(&buf[..n]).is_ok(),
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            });
        }
    });
    let u = std::thread::spawn(move || {
        // Large enough for any datagram: a reassembled one is recorded with
        // its full size.
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                if n >= 8 {
                    let pid = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
                    rec.udp
                        .lock()
                        .expect("rec")
                        .entry(pid)
                        .or_default()
                        .push(id);
                    rec.udp_sizes
                        .lock()
                        .expect("rec")
                        .entry(pid)
                        .or_default()
                        .push(n);
                    let _ = udp.send_to(&[id], from);
                }
            }
        }
    });
    vec![t, u]
}
