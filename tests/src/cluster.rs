//! A real xnlb cluster in network namespaces (DESIGN section 5).
//!
//! Topology: a data bridge (198.18.1.0/24, client traffic and heartbeat
//! link 1) and a heartbeat bridge (198.19.1.0/24, heartbeat link 0), each in
//! its own namespace with multicast snooping off; one namespace per node with
//! `eth0` on the data bridge and `eth1` on the heartbeat bridge; one client
//! namespace on the data bridge. Every node runs the real `xnlb agent` and,
//! as threads of the test process inside its namespace, a TCP and a UDP
//! server on the VIP that answer with the node id and record what they
//! received, so a test can prove no datagram was accepted by two nodes.
//!
//! Everything is torn down on drop (agents killed, namespaces and pins
//! removed), also when the test panics.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xnlb::control::client::request;
use xnlb::control::Request;
use xnlb::status::StatusView;

use crate::netns::{unique, veth, Netns};

/// The VIP every cluster test serves.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The client's address on the data bridge.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 200);
/// TCP port of the test servers.
pub const TCP_PORT: u16 = 80;
/// UDP port of the test servers.
pub const UDP_PORT: u16 = 5353;

/// One member of the cluster under test.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Member id.
    pub id: u8,
    /// `active`, `standby` or `witness`.
    pub role: &'static str,
    /// Weight.
    pub weight: u32,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Members.
    pub nodes: Vec<NodeSpec>,
    /// Heartbeat links per member: 1 (heartbeat bridge) or 2 (plus the
    /// data bridge).
    pub links: usize,
    /// `failback` setting.
    pub failback: &'static str,
    /// `drain_timeout_s`.
    pub drain_timeout_s: u64,
}

impl ClusterSpec {
    /// `n` active members of weight 100, one heartbeat link.
    pub fn actives(n: u8) -> ClusterSpec {
        ClusterSpec {
            nodes: (1..=n)
                .map(|id| NodeSpec {
                    id,
                    role: "active",
                    weight: 100,
                })
                .collect(),
            links: 1,
            failback: "auto",
            drain_timeout_s: 30,
        }
    }
}

/// What the in-process servers of all nodes received.
#[derive(Default)]
pub struct Recorder {
    /// UDP probe id -> nodes that accepted it.
    pub udp: Mutex<HashMap<u64, Vec<u8>>>,
    /// TCP connections accepted per node.
    pub tcp: Mutex<HashMap<u8, u64>>,
}

struct Node {
    spec: NodeSpec,
    ns: Netns,
    config: PathBuf,
    socket: PathBuf,
    agent: Option<Child>,
    pin_dir: PathBuf,
}

/// A running cluster.
pub struct Cluster {
    nodes: Vec<Node>,
    /// The client namespace.
    pub client: Netns,
    _data: Netns,
    _hb: Netns,
    dir: PathBuf,
    bin: PathBuf,
    /// What the servers saw.
    pub recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
}

/// The agent binary built by `cargo xtask test` (or `XNLB_BIN`).
pub fn agent_binary() -> PathBuf {
    std::env::var_os("XNLB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/xnlb"))
}

fn bridge(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.sh("ip link add br0 type bridge mcast_snooping 0 && ip link set br0 up");
    ns
}

/// Plugs a new interface `dev` of `ns` into the bridge namespace `br`.
fn plug(br: &Netns, ns: &Netns, dev: &str, addr: &str) {
    let port = unique("p");
    veth(ns, dev, br, &port);
    br.sh(&format!("ip link set {port} master br0"));
    ns.sh(&format!("ip addr add {addr}/24 dev {dev}"));
}

impl Cluster {
    /// Builds the topology and starts every agent (does not wait for
    /// convergence: see [`Cluster::wait_converged`]).
    pub fn start(spec: &ClusterSpec) -> Cluster {
        crate::require_root();
        let bin = agent_binary();
        assert!(
            bin.is_file(),
            "{} missing: run `cargo xtask test` (it builds the agent)",
            bin.display()
        );
        let dir = PathBuf::from(format!("/tmp/{}", unique("xnlb-cluster-")));
        std::fs::create_dir_all(&dir).expect("test dir");
        let key = dir.join("cluster.key");
        std::fs::write(&key, xnlb::key::generate()).expect("key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");

        let data = bridge("d");
        let hb = bridge("h");
        let client = Netns::new("c");
        plug(&data, &client, "eth0", &CLIENT.to_string());
        client.sh(&format!("ip route add {VIP}/32 dev eth0"));

        let recorder = Arc::new(Recorder::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = Vec::new();
        let mut nodes = Vec::new();
        for n in &spec.nodes {
            let ns = Netns::new(&format!("n{}", n.id));
            plug(&data, &ns, "eth0", &format!("198.18.1.{}", n.id));
            plug(&hb, &ns, "eth1", &format!("198.19.1.{}", n.id));
            // Servers bind the VIP before the agent puts it on lo.
            ns.sh("sysctl -qw net.ipv4.ip_nonlocal_bind=1");
            if n.role != "witness" {
                servers.extend(start_servers(&ns, n.id, recorder.clone(), stop.clone()));
            }
            let pin_dir = PathBuf::from(format!("/sys/fs/bpf/xnlb/{}", unique("t")));
            let config = dir.join(format!("n{}.toml", n.id));
            let socket = dir.join(format!("n{}.sock", n.id));
            std::fs::write(&config, config_text(spec, n, &key, &socket, &pin_dir, &dir))
                .expect("config");
            nodes.push(Node {
                spec: n.clone(),
                ns,
                config,
                socket,
                agent: None,
                pin_dir,
            });
        }
        let mut c = Cluster {
            nodes,
            client,
            _data: data,
            _hb: hb,
            dir,
            bin,
            recorder,
            stop,
            servers,
        };
        for id in spec.nodes.iter().map(|n| n.id) {
            c.start_agent(id);
        }
        c
    }

    fn node(&self, id: u8) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.spec.id == id)
            .expect("node id")
    }

    fn node_mut(&mut self, id: u8) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.spec.id == id)
            .expect("node id")
    }

    /// The namespace of node `id`.
    pub fn ns(&self, id: u8) -> &Netns {
        &self.node(id).ns
    }

    /// Starts (or restarts) node `id`'s agent.
    pub fn start_agent(&mut self, id: u8) {
        let bin = self.bin.clone();
        let log = self.dir.join(format!("agent{id}.log"));
        let node = self.node_mut(id);
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        // nsenter enters only the network namespace: `ip netns exec` would
        // also give the agent a private mount namespace, and its bpffs pins
        // (which must outlive it) would vanish with it.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", node.ns.name))
            .arg("--")
            .arg(&bin)
            .args(["agent", "--config"])
            .arg(&node.config)
            .env("XNLB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("start agent");
        node.agent = Some(child);
    }

    fn signal(&mut self, id: u8, sig: i32) {
        let node = self.node_mut(id);
        if let Some(child) = &node.agent {
            // nsenter execs the agent, so the child's pid is the agent's.
            // SAFETY: signalling a child process we started.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
    }

    /// SIGKILL node `id`'s agent (its XDP program and lease stay behind).
    pub fn kill(&mut self, id: u8) {
        self.signal(id, libc::SIGKILL);
        if let Some(mut c) = self.node_mut(id).agent.take() {
            let _ = c.wait();
        }
    }

    /// SIGSTOP node `id`'s agent: a frozen process.
    pub fn freeze(&mut self, id: u8) {
        self.signal(id, libc::SIGSTOP);
    }

    /// SIGCONT node `id`'s agent.
    pub fn thaw(&mut self, id: u8) {
        self.signal(id, libc::SIGCONT);
    }

    /// SIGTERM node `id`'s agent and wait for it to leave (at most 10 s).
    pub fn terminate(&mut self, id: u8) -> Option<std::process::ExitStatus> {
        self.signal(id, libc::SIGTERM);
        let mut child = self.node_mut(id).agent.take()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Cuts node `id`'s heartbeat link (eth1) in both directions; client
    /// traffic still reaches it on eth0.
    pub fn cut_heartbeats(&self, id: u8) {
        self.ns(id).sh("ip link set eth1 down");
    }

    /// Restores what [`Cluster::cut_heartbeats`] cut.
    pub fn heal_heartbeats(&self, id: u8) {
        self.ns(id).sh("ip link set eth1 up");
    }

    /// Drops only node `id`'s outgoing heartbeats: it still hears the others
    /// (an asymmetric partition).
    pub fn drop_outgoing_heartbeats(&self, id: u8) {
        self.ns(id).sh("nft add table inet xnlbtest && \
             nft add chain inet xnlbtest out '{ type filter hook output priority 0; }' && \
             nft add rule inet xnlbtest out udp dport 7450 drop");
    }

    /// Undoes [`Cluster::drop_outgoing_heartbeats`].
    pub fn allow_outgoing_heartbeats(&self, id: u8) {
        self.ns(id).sh("nft delete table inet xnlbtest");
    }

    /// Node `id`'s status, if its agent answers.
    pub fn status(&self, id: u8) -> Option<StatusView> {
        let r = request(
            &self.node(id).socket,
            &Request::Status,
            Duration::from_secs(2),
        )
        .ok()?;
        serde_json::from_value(r.data).ok()
    }

    /// Sends a control request to node `id`.
    pub fn control(&self, id: u8, req: Request) -> xnlb::control::Response {
        request(&self.node(id).socket, &req, Duration::from_secs(5)).expect("control request")
    }

    /// Which node `xnlb owner` (asked on node `ask`) names for a TCP flow.
    pub fn owner(&self, ask: u8, client_port: u16) -> Option<u8> {
        let r = self.control(
            ask,
            Request::Owner {
                vip: VIP.to_string(),
                proto: "tcp".into(),
                src: format!("{CLIENT}:{client_port}"),
                dport: TCP_PORT,
            },
        );
        r.data
            .get("owner")
            .and_then(|o| o.as_u64())
            .map(|o| o as u8)
    }

    /// Waits until every listed node reports converged at the same epoch
    /// with quorum. Panics with every status after `timeout`.
    pub fn wait_converged(&self, ids: &[u8], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let st: Vec<Option<StatusView>> = ids.iter().map(|&i| self.status(i)).collect();
            let epochs: Vec<u64> = st.iter().flatten().map(|s| s.epoch).collect();
            let ok = st
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| s.converged && s.quorum.has))
                && epochs.windows(2).all(|w| w[0] == w[1]);
            if ok {
                return epochs[0];
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = ids.iter().map(|i| self.log_tail(*i, 8)).collect();
                panic!(
                    "nodes {ids:?} did not converge in {timeout:?}: {st:#?}\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `n` lines of node `id`'s agent log.
    pub fn log_tail(&self, id: u8, n: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("agent{id}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- agent {id} log ---\n{}",
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }

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

    /// UDP ids accepted by more than one node (an overlap: must be empty).
    pub fn overlaps(&self) -> Vec<(u64, Vec<u8>)> {
        let udp = self.recorder.udp.lock().expect("recorder");
        udp.iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.agent.take() {
                // SAFETY: our child; SIGCONT in case it is frozen.
                unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir_all(&n.pin_dir);
        }
        self.stop.store(true, Ordering::SeqCst);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
        if std::thread::panicking() {
            eprintln!("cluster logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn config_text(
    spec: &ClusterSpec,
    n: &NodeSpec,
    key: &Path,
    socket: &Path,
    pin_dir: &Path,
    dir: &Path,
) -> String {
    let addrs = |id: u8| {
        let mut a = vec![format!("\"198.19.1.{id}:7450\"")];
        if spec.links > 1 {
            a.push(format!("\"198.18.1.{id}:7450\""));
        }
        a.join(", ")
    };
    let mut t = format!(
        "[node]\nid = {id}\n{iface}role = \"{role}\"\nweight = {w}\nfailback = \"{fb}\"\nstate_dir = \"{state}\"\npin_dir = \"{pin}\"\n\n\
         [cluster]\nname = \"test\"\nkey_file = \"{key}\"\nlisten = [{listen}]\ndrain_timeout_s = {drain}\n\n",
        id = n.id,
        iface = if n.role == "witness" { String::new() } else { "interface = \"eth0\"\n".into() },
        role = n.role,
        w = n.weight,
        fb = spec.failback,
        state = dir.join(format!("state{}", n.id)).display(),
        pin = pin_dir.display(),
        key = key.display(),
        listen = addrs(n.id),
        drain = spec.drain_timeout_s,
    );
    for m in &spec.nodes {
        t += &format!(
            "[[cluster.member]]\nid = {}\naddrs = [{}]\nrole = \"{}\"\nweight = {}\n",
            m.id,
            addrs(m.id),
            m.role,
            m.weight
        );
    }
    t += &format!(
        "\n[[vip]]\naddress = \"{VIP}\"\ndefault = \"multiple\"\n\
         [[vip.rule]]\nprotocol = \"both\"\nports = \"1-65535\"\nmode = \"multiple\"\n\n\
         [control]\nsocket = \"{}\"\nmetrics = \"\"\n",
        socket.display()
    );
    t
}

fn start_servers(
    ns: &Netns,
    id: u8,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let (tcp, udp) = ns.enter(|| {
        let t = TcpListener::bind((VIP, TCP_PORT)).expect("bind tcp");
        let u = UdpSocket::bind((VIP, UDP_PORT)).expect("bind udp");
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
        let mut buf = [0u8; 64];
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
                    let _ = udp.send_to(&[id], from);
                }
            }
        }
    });
    vec![t, u]
}

/// Connects to the VIP from a fixed client port (std cannot bind first).
pub fn connect_from(port: u16, timeout: Duration) -> Option<TcpStream> {
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: socket syscalls on a descriptor the TcpStream owns at once.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
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
        let local = sockaddr(CLIENT, port);
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            return None;
        }
        let remote = sockaddr(VIP, TCP_PORT);
        libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len);
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
