//! Startup order. First everything that can fail without touching the
//! host: the node lock (one agent per node), the key, the plan, the state
//! file and the protocol node, the heartbeat sockets and the control
//! socket. Then the data plane, so that VIP traffic is filtered before a
//! VIP is on `lo`; then the host (VIPs, sysctls, cluster MACs).

use tokio::net::UnixListener;
use tracing::{info, warn};
use xnlb_common::{Table, MAX_BUCKETS};
use xnlb_proto::Node;

use super::persistence::restore_node;
use super::{Dependencies, RunError};
use crate::config::{Config, Role, XdpMode};
use crate::control::server;
use crate::dataplane::{embedded_object, Dataplane, DataplaneError};
use crate::host::{self, Host};
use crate::lock::NodeLock;
use crate::plan::{plan, proto_config, Plan};

/// What a started agent holds: ready to serve, host set up.
pub(super) struct Started {
    /// Held until the agent exits.
    pub lock: NodeLock,
    pub control: UnixListener,
    /// Everything the protocol thread takes.
    pub parts: ShellParts,
}

/// What the protocol thread is handed to build its
/// [`Shell`](super::shell::Shell).
pub(super) struct ShellParts {
    pub cfg: Config,
    pub plan: Plan,
    pub node: Node,
    pub key: Vec<u8>,
    /// One per `cluster.listen` address, in order.
    pub heartbeat: Vec<std::net::UdpSocket>,
    /// The data plane and how it is attached (none on a witness).
    pub dataplane: Option<(Dataplane, String)>,
    pub host: Host,
}

/// Starts the agent for `cfg` in the order the module doc gives. Must run
/// inside a tokio runtime (the control socket registers with it).
pub(super) fn start(cfg: Config, deps: &Dependencies) -> Result<Started, RunError> {
    // Taken before the state file is read, so a second agent touches
    // nothing (see `lock.rs`).
    let lock = NodeLock::acquire(&cfg.state_dir, cfg.node_id)?;
    let key = crate::key::load(&cfg.key_file)?;
    let plan = plan(&cfg);
    let mut node = restore_node(&cfg, proto_config(&cfg, &plan, key.clone()))?;
    let heartbeat = bind_heartbeat(&cfg)?;
    let control = bind_control(&cfg)?;
    info!(
        "xnlb agent: node {} ({:?}) of cluster {:?}, {} members, {} VIPs, {} buckets",
        cfg.node_id,
        cfg.role,
        cfg.cluster_name,
        cfg.members.len(),
        cfg.vips.len(),
        cfg.buckets
    );
    let mut dataplane = match cfg.role {
        Role::Witness => None,
        Role::Active | Role::Standby => (deps.dataplane)(&cfg, &plan)?,
    };
    if let Some((dp, _)) = &mut dataplane {
        // The table a previous agent left live keeps serving the
        // connections it holds while this one rejoins (S6).
        let live = dp.current_table()?;
        let buckets = cfg.buckets as usize;
        let singles = plan.single_slots.len();
        node.adopt_dataplane(
            super::now(),
            live.epoch,
            &live.state[..buckets],
            &live.state[MAX_BUCKETS as usize..MAX_BUCKETS as usize + singles],
        );
    }
    let host = (deps.host)(&cfg)?;
    let parts = ShellParts {
        cfg,
        plan,
        node,
        key,
        heartbeat,
        dataplane,
        host,
    };
    Ok(Started {
        lock,
        control,
        parts,
    })
}

fn bind_heartbeat(cfg: &Config) -> Result<Vec<std::net::UdpSocket>, RunError> {
    cfg.listen
        .iter()
        .map(|&addr| {
            let bind = |source| RunError::Bind { addr, source };
            let s = std::net::UdpSocket::bind(addr).map_err(bind)?;
            s.set_nonblocking(true).map_err(bind)?;
            crate::prefilter::widen_receive_buffer(&s);
            Ok(s)
        })
        .collect()
}

fn bind_control(cfg: &Config) -> Result<UnixListener, RunError> {
    if cfg.socket.as_os_str().is_empty() {
        return Err(RunError::NoControlSocket);
    }
    server::bind(&cfg.socket).map_err(|source| RunError::ControlSocket {
        path: cfg.socket.clone(),
        source,
    })
}

fn same_vips(a: &Table, b: &Table) -> bool {
    a.seed == b.seed && a.buckets == b.buckets && a.nvips == b.nvips && a.vips == b.vips
}

/// The system's data plane: loads or adopts the embedded XDP program,
/// makes sure the live table knows this config's VIPs (owning nothing
/// until the protocol says so), and attaches it.
pub(super) fn setup_dataplane(
    cfg: &Config,
    plan: &Plan,
) -> Result<Option<(Dataplane, String)>, RunError> {
    let obj = embedded_object().ok_or(DataplaneError::NotEmbedded)?;
    let interface = cfg.interface.as_deref().ok_or(RunError::NoInterface)?;
    let mut dp = Dataplane::load(obj, &cfg.pin_dir)?;
    dp.set_if_mac(host::interface_mac(interface)?)?;
    let live = dp.current_table()?;
    if !same_vips(&live, &plan.table) {
        // Fresh maps, or another VIP set: fail closed until the protocol
        // installs this config's map.
        dp.install(&plan.table)?;
    } else {
        info!(
            "adopting the live table of epoch {} left by the previous agent",
            live.epoch
        );
    }
    let mode = match cfg.xdp_mode {
        XdpMode::Native => aya::programs::XdpMode::Driver,
        XdpMode::Generic => aya::programs::XdpMode::Skb,
        XdpMode::Auto if host::is_veth(interface) => aya::programs::XdpMode::Skb,
        XdpMode::Auto => aya::programs::XdpMode::Driver,
    };
    let how = match dp.attach(interface, mode) {
        Ok(how) => how,
        Err(e) if cfg.xdp_mode == XdpMode::Auto && mode == aya::programs::XdpMode::Driver => {
            warn!("native XDP on {interface} failed ({e}); falling back to generic");
            dp.attach(interface, aya::programs::XdpMode::Skb)?
        }
        Err(e) => return Err(e.into()),
    };
    let how = format!("{how} on {interface}");
    info!("XDP program attached: {how}");
    Ok(Some((dp, how)))
}
