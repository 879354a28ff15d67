//! `xnlb check-config --print`: the configuration as the agent will run
//! it, every default filled in, written back as TOML that parses to the
//! same [`Config`]. An operator sees what the file leaves implicit (the
//! pin directory derived from the node id, the default priority lists)
//! without reading the code.

use std::fmt::Write;

use super::{
    role_name, Affinity, Config, Failback, HealthProbe, MacMode, Mode, Protocol, VipMode, XdpMode,
};

/// `cfg` as TOML.
pub fn to_toml(cfg: &Config) -> String {
    let mut t = String::new();
    let me = cfg.members.iter().find(|m| m.id == cfg.node_id);
    let _ = writeln!(t, "# {}: effective configuration", cfg.path.display());
    let _ = writeln!(t, "[node]");
    let _ = writeln!(t, "id = {}", cfg.node_id);
    if let Some(i) = &cfg.interface {
        let _ = writeln!(t, "interface = {}", quote(i));
    }
    let _ = writeln!(t, "role = {}", quote(role_name(cfg.role)));
    let _ = writeln!(t, "weight = {}", cfg.weight);
    let xdp = match cfg.xdp_mode {
        XdpMode::Auto => "auto",
        XdpMode::Native => "native",
        XdpMode::Generic => "generic",
    };
    let _ = writeln!(t, "xdp_mode = {}", quote(xdp));
    let failback = match cfg.failback {
        Failback::Auto => "auto",
        Failback::Manual => "manual",
    };
    let _ = writeln!(t, "failback = {}", quote(failback));
    let _ = writeln!(t, "state_dir = {}", quote(&cfg.state_dir.to_string_lossy()));
    let _ = writeln!(t, "pin_dir = {}", quote(&cfg.pin_dir.to_string_lossy()));
    let _ = writeln!(t, "heartbeat_priority = {}", cfg.heartbeat_priority);
    let _ = writeln!(t, "\n[cluster]");
    let _ = writeln!(t, "name = {}", quote(&cfg.cluster_name));
    let _ = writeln!(t, "key_file = {}", quote(&cfg.key_file.to_string_lossy()));
    let _ = writeln!(t, "listen = {}", list(cfg.listen.iter()));
    let _ = writeln!(t, "buckets = {}", cfg.buckets);
    let _ = writeln!(t, "heartbeat_interval_ms = {}", cfg.heartbeat_interval_ms);
    let _ = writeln!(t, "dead_after_ms = {}", cfg.dead_after_ms);
    let _ = writeln!(t, "drain_timeout_s = {}", cfg.drain_timeout_s);
    for m in &cfg.members {
        let _ = writeln!(t, "\n[[cluster.member]]");
        let _ = writeln!(t, "id = {}", m.id);
        let _ = writeln!(t, "addrs = {}", list(m.addrs.iter()));
        let _ = writeln!(t, "role = {}", quote(role_name(m.role)));
        // The agent uses node.weight for itself whatever its entry says.
        let note = if me.is_some_and(|me| me.id == m.id) {
            "    # this node: node.weight"
        } else {
            ""
        };
        let _ = writeln!(t, "weight = {}{note}", m.weight);
    }
    for v in &cfg.vips {
        let _ = writeln!(t, "\n[[vip]]");
        let _ = writeln!(t, "address = {}", quote(&v.address.to_string()));
        let vip_mode = match v.mode {
            VipMode::Flood => "flood",
            VipMode::Routed => "routed",
        };
        let _ = writeln!(t, "mode = {}", quote(vip_mode));
        let mac = match v.mac_mode {
            MacMode::Multicast => "multicast",
            MacMode::Unicast => "unicast",
        };
        let _ = writeln!(t, "mac_mode = {}", quote(mac));
        let _ = writeln!(t, "default = {}", quote(mode(v.default)));
        if v.default == Mode::Single {
            let _ = writeln!(t, "priority = {:?}", v.default_priority);
        }
        for r in &v.rules {
            let _ = writeln!(t, "[[vip.rule]]");
            let proto = match r.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Both => "both",
            };
            let _ = writeln!(t, "protocol = {}", quote(proto));
            let _ = writeln!(t, "ports = \"{}-{}\"", r.port_lo, r.port_hi);
            let _ = writeln!(t, "mode = {}", quote(mode(r.mode)));
            let aff = match r.affinity {
                Affinity::None => "none",
                Affinity::Single => "single",
                Affinity::Network => "network",
            };
            let _ = writeln!(t, "affinity = {}", quote(aff));
            if r.mode == Mode::Single {
                let _ = writeln!(t, "priority = {:?}", r.priority);
            }
        }
        if let Some(h) = &v.health {
            let _ = writeln!(t, "[vip.health]");
            match &h.probe {
                HealthProbe::Tcp(a) => {
                    let _ = writeln!(t, "tcp = {}", quote(&a.to_string()));
                }
                HealthProbe::Command(c) => {
                    let _ = writeln!(t, "command = {}", quote(c));
                }
            }
            let _ = writeln!(t, "interval_ms = {}", h.interval_ms);
            let _ = writeln!(t, "timeout_ms = {}", h.timeout_ms);
            let _ = writeln!(t, "fall = {}", h.fall);
            let _ = writeln!(t, "rise = {}", h.rise);
        }
    }
    let _ = writeln!(t, "\n[control]");
    let _ = writeln!(t, "socket = {}", quote(&cfg.socket.to_string_lossy()));
    let metrics = cfg.metrics.map(|m| m.to_string()).unwrap_or_default();
    let _ = writeln!(t, "metrics = {}", quote(&metrics));
    t
}

fn mode(m: Mode) -> &'static str {
    match m {
        Mode::Multiple => "multiple",
        Mode::Single => "single",
        Mode::Disabled => "disabled",
    }
}

/// A TOML basic string (toml's own escaping, so any path or command survives).
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list<T: ToString>(items: impl Iterator<Item = T>) -> String {
    let quoted: Vec<String> = items.map(|i| quote(&i.to_string())).collect();
    format!("[{}]", quoted.join(", "))
}
