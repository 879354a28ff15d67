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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
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
/// The IPv6 VIP (served when [`ClusterSpec::vip6`] is set).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);
/// The client's IPv6 address on the data bridge.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x200);
/// Node `id`'s IPv6 address on the data bridge.
pub fn node_addr6(id: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, id as u16)
}
/// The heartbeat port every member listens on.
pub const HB_PORT: u16 = 7450;
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
    /// Also serve the IPv6 VIP [`VIP6`] (nodes and client get fd00:1::/64
    /// addresses on the data bridge).
    pub vip6: bool,
    /// Members whose agent is not started by [`Cluster::start`] (start them
    /// later with [`Cluster::start_agent`]: a join).
    pub deferred: Vec<u8>,
    /// Give the IPv4 VIP a health check: TCP connect to 127.0.0.1:PORT in
    /// each node's namespace (100 ms interval, fall 2, rise 2).
    pub health_tcp_port: Option<u16>,
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
            vip6: false,
            deferred: Vec::new(),
            health_tcp_port: None,
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
    /// UDP probe id -> size of each copy accepted (whole datagrams).
    pub udp_sizes: Mutex<HashMap<u64, Vec<usize>>>,
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
    data: Netns,
    hb: Netns,
    spec: ClusterSpec,
    key: PathBuf,
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
    // No duplicate address detection on the new interfaces: while their
    // link-local addresses are tentative (about a second), the first IPv6
    // connection of a fresh namespace waits for a SYN retransmission.
    for n in [br, ns] {
        n.sh("sysctl -qw net.ipv6.conf.default.accept_dad=0");
    }
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
        if spec.vip6 {
            client.sh(&format!(
                "ip -6 addr add {CLIENT6}/64 dev eth0 nodad && ip -6 route add {VIP6}/128 dev eth0"
            ));
        }

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
            if spec.vip6 {
                ns.sh(&format!(
                    "sysctl -qw net.ipv6.ip_nonlocal_bind=1 && ip -6 addr add {}/64 dev eth0 nodad",
                    node_addr6(n.id)
                ));
            }
            if n.role != "witness" {
                let mut vips = vec![IpAddr::V4(VIP)];
                if spec.vip6 {
                    vips.push(IpAddr::V6(VIP6));
                }
                for vip in vips {
                    servers.extend(start_servers(
                        &ns,
                        vip,
                        n.id,
                        recorder.clone(),
                        stop.clone(),
                    ));
                }
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
            data,
            hb,
            spec: spec.clone(),
            key,
            dir,
            bin,
            recorder,
            stop,
            servers,
        };
        for id in spec.nodes.iter().map(|n| n.id) {
            if !spec.deferred.contains(&id) {
                c.start_agent(id);
            }
        }
        c
    }

    /// The data bridge's namespace (client traffic, heartbeat link 1).
    pub fn data_bridge(&self) -> &Netns {
        &self.data
    }

    /// The heartbeat bridge's namespace (heartbeat link 0).
    pub fn hb_bridge(&self) -> &Netns {
        &self.hb
    }

    /// The spec as it is now (weights follow [`Cluster::set_weight`]).
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Whether node `id`'s agent process is running (started and not
    /// exited).
    pub fn running(&mut self, id: u8) -> bool {
        match &mut self.node_mut(id).agent {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Writes every node's config file from the current spec.
    fn write_configs(&self) {
        for n in &self.nodes {
            let spec = self
                .spec
                .nodes
                .iter()
                .find(|s| s.id == n.spec.id)
                .expect("node in spec");
            std::fs::write(
                &n.config,
                config_text(
                    &self.spec, spec, &self.key, &n.socket, &n.pin_dir, &self.dir,
                ),
            )
            .expect("config");
        }
    }

    /// SIGHUP node `id`'s agent: reload its config file.
    pub fn reload(&mut self, id: u8) {
        self.signal(id, libc::SIGHUP);
    }

    /// Changes member `id`'s weight the way an operator does: edits the
    /// config files (node.weight of `id`, and its [[cluster.member]] weight
    /// in every file) and sends SIGHUP to node `id`'s agent.
    pub fn set_weight(&mut self, id: u8, weight: u32) {
        for n in self.spec.nodes.iter_mut().filter(|n| n.id == id) {
            n.weight = weight;
        }
        for n in self.nodes.iter_mut().filter(|n| n.spec.id == id) {
            n.spec.weight = weight;
        }
        self.write_configs();
        self.reload(id);
    }

    /// Makes the data bridge carry 802.1Q tags inside the frames it
    /// forwards (no tx VLAN offload on its ports), so the nodes' XDP
    /// program on eth0 sees the tags a client puts on its frames. (This
    /// kernel has no 8021q module, so there are no VLAN interfaces: tagged
    /// frames are sent raw, see `tests/scenarios.rs`.)
    pub fn vlan_tags_in_frames(&self) {
        self.data.sh(
            "for p in $(ip -o link show master br0 | awk -F': ' '{print $2}' | cut -d@ -f1); do \
             ethtool -K $p txvlan off >/dev/null; done",
        );
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

    /// Where node `id`'s XDP program and maps are pinned.
    pub fn pin_dir(&self, id: u8) -> &Path {
        &self.node(id).pin_dir
    }

    /// Node `id`'s tracked TCP connections as `bpftool` dumps them (for
    /// failure reports).
    pub fn dump_flows(&self, id: u8) -> String {
        let dir = self.pin_dir(id);
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for m in $(find {d} -iname '*flows*'); do bpftool map dump pinned $m; done",
                d = dir.display()
            ))
            .output();
        match out {
            Ok(o) => format!(
                "--- node {id} flows ---\n{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("bpftool: {e}"),
        }
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
        node.agent = Some(spawn_agent(&bin, &node.ns, &node.config, logf));
    }

    fn signal(&mut self, id: u8, sig: i32) {
        let node = self.node_mut(id);
        if let Some(child) = &node.agent {
            // nsenter execs the agent, so the child's pid is the agent's.
            // SAFETY: signalling a child process we started.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
    }

    /// The PID of node `id`'s running agent.
    pub fn agent_pid(&self, id: u8) -> Option<u32> {
        self.node(id).agent.as_ref().map(|c| c.id())
    }

    /// Runs one more agent for node `id` with its config, next to the one
    /// running (it must refuse to start): its exit status (`None`: it was
    /// still running after `timeout` and was killed) and its error output.
    pub fn run_second_agent(
        &self,
        id: u8,
        timeout: Duration,
    ) -> (Option<std::process::ExitStatus>, String) {
        let node = self.node(id);
        let log = self.dir.join(format!("agent{id}-second.log"));
        let logf = std::fs::File::create(&log).expect("log");
        let mut child = spawn_agent(&self.bin, &node.ns, &node.config, logf);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, std::fs::read_to_string(&log).unwrap_or_default())
    }

    /// A new namespace plugged into the heartbeat bridge with `addr`/24
    /// (a stranger on the cluster interconnect). Removed on drop.
    pub fn join_hb_bridge(&self, tag: &str, addr: Ipv4Addr) -> Netns {
        let ns = Netns::new(tag);
        plug(&self.hb, &ns, "eth0", &addr.to_string());
        ns
    }

    /// Node `id`'s whole agent log.
    pub fn log(&self, id: u8) -> String {
        std::fs::read_to_string(self.dir.join(format!("agent{id}.log"))).unwrap_or_default()
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
        self.wait_exit(id, Duration::from_secs(10))
    }

    /// Waits up to `timeout` for node `id`'s agent to exit on its own (then
    /// kills it) and returns its exit status.
    pub fn wait_exit(&mut self, id: u8, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.node_mut(id).agent.take()?;
        let deadline = Instant::now() + timeout;
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
        self.owner_of(
            ask,
            IpAddr::V4(VIP),
            "tcp",
            SocketAddr::from((CLIENT, client_port)),
            TCP_PORT,
        )
    }

    /// Which node `xnlb owner` (asked on node `ask`) names for any flow.
    pub fn owner_of(
        &self,
        ask: u8,
        vip: IpAddr,
        proto: &str,
        src: SocketAddr,
        dport: u16,
    ) -> Option<u8> {
        let r = self.control(
            ask,
            Request::Owner {
                vip: vip.to_string(),
                proto: proto.into(),
                src: src.to_string(),
                dport,
            },
        );
        r.data
            .get("owner")
            .and_then(|o| o.as_u64())
            .map(|o| o as u8)
    }

    /// Waits until every listed node reports converged at the same epoch
    /// with quorum and, unless a witness, a valid lease (it serves). Panics
    /// with every status after `timeout`.
    pub fn wait_converged(&self, ids: &[u8], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let st: Vec<Option<StatusView>> = ids.iter().map(|&i| self.status(i)).collect();
            let epochs: Vec<u64> = st.iter().flatten().map(|s| s.epoch).collect();
            // Converged with quorum is not enough: right after a start the
            // agent reports both before its first lease (state `fenced`,
            // lease 0), and its data plane drops VIP traffic until then.
            let ok = st.iter().all(|s| {
                s.as_ref().is_some_and(|s| {
                    s.converged && s.quorum.has && (s.role == "witness" || s.lease_ms > 0)
                })
            }) && epochs.windows(2).all(|w| w[0] == w[1]);
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
    /// the background (see [`Prober`]).
    pub fn prober(&self, first_id: u64) -> Prober {
        Prober::start(&self.client, first_id)
    }

    /// Panics, naming `when`, if any UDP probe was accepted by two nodes.
    pub fn assert_no_overlap(&self, when: &str) {
        let o = self.overlaps();
        assert!(o.is_empty(), "{when}: datagrams accepted twice: {o:?}");
    }

    /// Rewrites node `id`'s config file through `edit`, as an operator
    /// editing one node's file; [`Cluster::reload`] then applies it.
    pub fn edit_config(&self, id: u8, edit: impl FnOnce(String) -> String) {
        let path = &self
            .nodes
            .iter()
            .find(|n| n.spec.id == id)
            .expect("node")
            .config;
        let text = std::fs::read_to_string(path).expect("config");
        std::fs::write(path, edit(text)).expect("config");
    }

    /// Node `id`'s `node.state_dir`.
    pub fn state_dir(&self, id: u8) -> PathBuf {
        self.dir.join(format!("state{id}"))
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

/// Starts the agent `bin` with `config` in `ns`, its log to `log`.
///
/// nsenter enters only the network namespace: `ip netns exec` would also
/// give the agent a private mount namespace, and its bpffs pins (which must
/// outlive it) would vanish with it.
fn spawn_agent(bin: &Path, ns: &Netns, config: &Path, log: std::fs::File) -> Child {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg("--")
        .arg(bin)
        .args(["agent", "--config"])
        .arg(config)
        .env("XNLB_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start agent")
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
    let mut vips = vec![VIP.to_string()];
    if spec.vip6 {
        vips.push(VIP6.to_string());
    }
    for (i, vip) in vips.iter().enumerate() {
        t += &format!(
            "\n[[vip]]\naddress = \"{vip}\"\ndefault = \"multiple\"\n\
             [[vip.rule]]\nprotocol = \"both\"\nports = \"1-65535\"\nmode = \"multiple\"\n"
        );
        if let (0, Some(port)) = (i, spec.health_tcp_port) {
            t += &format!(
                "[vip.health]\ntcp = \"127.0.0.1:{port}\"\ninterval_ms = 100\ntimeout_ms = 50\nfall = 2\nrise = 2\n"
            );
        }
    }
    t += &format!(
        "\n[control]\nsocket = \"{}\"\nmetrics = \"\"\n",
        socket.display()
    );
    t
}

fn start_servers(
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

/// Polls `f` every 50 ms until it holds; false after `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// Spawns a thread that has entered namespace `ns` (see [`Netns::enter`]
/// for a scoped one).
pub fn spawn_in<R: Send + 'static, F: FnOnce() -> R + Send + 'static>(
    ns: &Netns,
    f: F,
) -> JoinHandle<R> {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: a valid namespace fd; affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// One probe of a [`Prober`].
#[derive(Clone, Debug)]
pub struct Probe {
    /// When it was sent, since the prober started.
    pub at: Duration,
    /// Its id.
    pub id: u64,
    /// Client port.
    pub port: u16,
    /// The node that answered (`None`: unanswered within 100 ms).
    pub node: Option<u8>,
}

/// Background UDP probing of the IPv4 VIP from the client: one datagram
/// with a unique id at a time, each from the next client port (20000..
/// 60000), 100 ms to answer. The servers' recorder sees every accepted id,
/// so [`Cluster::overlaps`] covers the whole run.
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Probe>>>,
}

impl Prober {
    fn start(client: &Netns, first_id: u64) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = spawn_in(client, move || {
            let t0 = Instant::now();
            let mut out = Vec::new();
            let mut id = first_id;
            while !s.load(Ordering::SeqCst) {
                id += 1;
                let port = 20_000 + (id % 40_000) as u16;
                let at = t0.elapsed();
                let node = (|| {
                    let sock = UdpSocket::bind((CLIENT, port)).ok()?;
                    sock.set_read_timeout(Some(Duration::from_millis(100)))
                        .ok()?;
                    sock.send_to(&id.to_le_bytes(), (VIP, UDP_PORT)).ok()?;
                    let mut buf = [0u8; 16];
                    let (n, _) = sock.recv_from(&mut buf).ok()?;
                    (n >= 1).then_some(buf[0])
                })();
                out.push(Probe { at, id, port, node });
                if node.is_none() {
                    // Keep a dead period from being only timeouts: pace.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            out
        });
        Prober {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops probing and returns every probe.
    pub fn finish(mut self) -> Vec<Probe> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .map(|h| h.join().expect("prober"))
            .unwrap_or_default()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
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
        // SAFETY: a packet socket we own (closed by the OwnedFd).
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a fresh descriptor.
        let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: setsockopt with a timeval.
        unsafe {
            libc::setsockopt(
                owned.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            // SAFETY: recv into our buffer.
            let n = unsafe {
                libc::recv(
                    owned.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 14 + 20 + 8 {
                continue;
            }
            let f = &buf[..n as usize];
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

/// Connects to the VIP from a fixed client port (std cannot bind first).
pub fn connect_from(port: u16, timeout: Duration) -> Option<TcpStream> {
    connect_between(
        SocketAddr::from((CLIENT, port)),
        SocketAddr::from((VIP, TCP_PORT)),
        timeout,
    )
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
