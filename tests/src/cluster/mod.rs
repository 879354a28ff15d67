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
//!
//! [`Cluster`] builds and tears down the topology and drives the agents;
//! its sibling modules hold the agent's config file ([`config`]), the
//! servers on the nodes ([`servers`]), what the client does ([`client`],
//! [`prober`]), the faults a test injects ([`faults`]), the checks
//! shared by the end-to-end tests ([`checks`]), and a real HTTP server and
//! load generator through the cluster ([`http`]: nginx on the nodes, wrk on
//! the client, and the check of nginx's logs that no connection was
//! answered by two nodes).

mod client;
mod config;
mod faults;
pub mod http;
mod prober;
mod servers;

pub mod checks;

pub use checks::wait_until;
pub use client::{
    abort, client_addr, connect_between, connect_from, echo_round, node_addr, read_node_id, Conn,
};
pub use servers::Recorder;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xnlb::control::client::request;
use xnlb::control::Request;
use xnlb::status::StatusView;

use crate::netns::{fresh_dir, unique, veth, Netns};
use config::config_text;
use servers::start_servers;

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
/// Where each node's agent serves metrics when [`ClusterSpec::metrics`]
/// is set (inside the node's namespace).
pub const METRICS_ADDR: &str = "127.0.0.1:9477";
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
    /// Serve Prometheus metrics on [`METRICS_ADDR`] in each node's
    /// namespace (read them with [`Cluster::scrape`]).
    pub metrics: bool,
    /// Every VIP's `mode`: `"flood"` or `"routed"`.
    pub vip_mode: &'static str,
    /// Members whose `eth0` is not on the data bridge but on a second one,
    /// [`REMOTE_NET`] (their second heartbeat address is there too): only a
    /// router the test plugs into both ([`Cluster::plug_into_remote`])
    /// connects them. Routed mode reaches them through its tunnel.
    pub remote: Vec<u8>,
}

/// The subnet of [`ClusterSpec::remote`] members (`198.18.2.ID`).
pub const REMOTE_NET: &str = "198.18.2";

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
            metrics: false,
            vip_mode: "flood",
            remote: Vec::new(),
        }
    }
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
    /// The second data bridge of [`ClusterSpec::remote`] members.
    remote: Netns,
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
        let dir = fresh_dir(Path::new("/tmp"), "xnlb-cluster-");
        let key = dir.join("cluster.key");
        std::fs::write(&key, xnlb::key::generate()).expect("key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");

        let data = bridge("d");
        let remote = bridge("e");
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
            if spec.remote.contains(&n.id) {
                plug(&remote, &ns, "eth0", &format!("{REMOTE_NET}.{}", n.id));
            } else {
                plug(&data, &ns, "eth0", &format!("198.18.1.{}", n.id));
            }
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
            let pin_dir = fresh_dir(Path::new("/sys/fs/bpf/xnlb"), "t");
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
            remote,
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

    /// Plugs interface `dev` of namespace `ns` (a router, another client)
    /// into the data bridge with address `addr`/24.
    pub fn plug_into_data(&self, ns: &Netns, dev: &str, addr: &str) {
        plug(&self.data, ns, dev, addr);
    }

    /// Plugs a new interface `dev` of `ns`, with address `addr`/24, into
    /// the second data bridge ([`ClusterSpec::remote`]).
    pub fn plug_into_remote(&self, ns: &Netns, dev: &str, addr: &str) {
        plug(&self.remote, ns, dev, addr);
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
    /// frames are sent raw, see `tests/protocols.rs`.)
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

    /// The TCP connections node `id`'s kernel holds (`ss`), for failure
    /// reports: the socket table is what decides who serves a connection.
    pub fn dump_flows(&self, id: u8) -> String {
        format!("--- node {id} sockets ---\n{}", self.ns(id).sh("ss -tn"))
    }

    /// The namespace of node `id`.
    pub fn ns(&self, id: u8) -> &Netns {
        &self.node(id).ns
    }

    /// Starts (or restarts) node `id`'s agent.
    pub fn start_agent(&mut self, id: u8) {
        self.start_agent_with_env(id, &[]);
    }

    /// Starts node `id`'s agent with extra environment variables (e.g.
    /// `NOTIFY_SOCKET`, to hear what it tells systemd).
    pub fn start_agent_with_env(&mut self, id: u8, env: &[(&str, &Path)]) {
        let bin = self.bin.clone();
        let log = self.dir.join(format!("agent{id}.log"));
        let node = self.node_mut(id);
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let mut cmd = agent_command(&bin, &node.ns, &node.config, logf);
        for (k, v) in env {
            cmd.env(k, v);
        }
        node.agent = Some(cmd.spawn().expect("start agent"));
    }

    /// Node `id`'s Prometheus text (GET /metrics on [`METRICS_ADDR`] in
    /// its namespace; needs [`ClusterSpec::metrics`]).
    pub fn scrape(&self, id: u8) -> String {
        use std::io::{Read, Write};
        self.ns(id).enter(|| {
            let mut s = std::net::TcpStream::connect(METRICS_ADDR).expect("metrics endpoint");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("request");
            let mut text = String::new();
            s.read_to_string(&mut text).expect("metrics answer");
            assert!(text.starts_with("HTTP/1.1 200"), "scrape: {text}");
            text.split_once("\r\n\r\n")
                .map(|(_, body)| body.to_string())
                .unwrap_or_default()
        })
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

    /// Node `id`'s configuration file.
    pub fn config_path(&self, id: u8) -> &Path {
        &self.node(id).config
    }

    /// Node `id`'s control socket (for running the `xnlb` CLI against it).
    pub fn socket_path(&self, id: u8) -> &Path {
        &self.node(id).socket
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

    /// The cluster key file every node reads.
    pub fn key_path(&self) -> &Path {
        &self.key
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
fn spawn_agent(bin: &Path, ns: &Netns, config: &Path, log: std::fs::File) -> Child {
    agent_command(bin, ns, config, log)
        .spawn()
        .expect("start agent")
}

/// The command that runs the agent `bin` with `config` in `ns`, its log to
/// `log`.
///
/// nsenter enters only the network namespace: `ip netns exec` would also
/// give the agent a private mount namespace, and its bpffs pins (which must
/// outlive it) would vanish with it.
fn agent_command(bin: &Path, ns: &Netns, config: &Path, log: std::fs::File) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", ns.name))
        .arg("--")
        .arg(bin)
        .args(["agent", "--config"])
        .arg(config)
        .env("XNLB_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd
}
