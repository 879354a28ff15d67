//! The agent's config file for one member of a test cluster.

use std::path::Path;

use super::{ClusterSpec, NodeSpec, VIP, VIP6};

pub(super) fn config_text(
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
            let net = if spec.remote.contains(&id) {
                super::REMOTE_NET
            } else {
                "198.18.1"
            };
            a.push(format!("\"{net}.{id}:7450\""));
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
            "\n[[vip]]\naddress = \"{vip}\"\nmode = \"{mode}\"\ndefault = \"multiple\"\n\
             [[vip.rule]]\nprotocol = \"both\"\nports = \"1-65535\"\nmode = \"multiple\"\n",
            mode = spec.vip_mode,
        );
        if let (0, Some(port)) = (i, spec.health_tcp_port) {
            t += &format!(
                "[vip.health]\ntcp = \"127.0.0.1:{port}\"\ninterval_ms = 100\ntimeout_ms = 50\nfall = 2\nrise = 2\n"
            );
        }
    }
    t += &format!(
        "\n[control]\nsocket = \"{}\"\nmetrics = \"{}\"\n",
        socket.display(),
        if spec.metrics {
            super::METRICS_ADDR
        } else {
            ""
        }
    );
    t
}
