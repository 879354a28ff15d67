//! `xnlb check-config`'s warnings: values the parser accepts because they
//! are legal, but that are most likely mistakes an operator would rather
//! hear about before the agent starts (a loopback VIP, a weight that the
//! member list contradicts, a rule that an earlier one shadows). Each names
//! the file, line and key like an error does.

use std::net::IpAddr;
use std::path::Path;

use super::context::Ctx;
use super::raw::{given_or, RawFile};
use super::{Config, Protocol};

/// The warnings for `cfg`, which was parsed from `src` at `path`.
pub fn warnings(path: &Path, src: &str, cfg: &Config) -> Vec<String> {
    // `cfg` parsed from `src`, so the raw file parses too.
    let Ok(raw) = toml::from_str::<RawFile>(src) else {
        return Vec::new();
    };
    let cx = Ctx { path, src };
    let mut out = Vec::new();
    let mut warn = |span: std::ops::Range<usize>, key: String, msg: String| {
        out.push(format!(
            "{}:{}: {key}: {msg}",
            path.display(),
            cx.line(span.start)
        ));
    };
    for (i, v) in cfg.vips.iter().enumerate() {
        let span = raw.vip[i].address.span();
        let key = format!("vip[{i}].address");
        if let Some(what) = odd_address(v.address) {
            warn(
                span.clone(),
                key.clone(),
                format!("{} is {what}: no client can reach it as a VIP", v.address),
            );
        }
        for m in &cfg.members {
            if m.addrs.iter().any(|a| a.ip() == v.address) {
                warn(
                    span.clone(),
                    key.clone(),
                    format!(
                        "{} is member {}'s heartbeat address: the VIP would take the host's own address",
                        v.address, m.id
                    ),
                );
            }
        }
        for (j, r) in v.rules.iter().enumerate() {
            let earlier = v.rules[..j].iter().position(|e| {
                protocols_meet(e.protocol, r.protocol)
                    && e.port_lo <= r.port_hi
                    && r.port_lo <= e.port_hi
            });
            if let Some(e) = earlier {
                warn(
                    raw.vip[i].rule[j].ports.span(),
                    format!("vip[{i}].rule[{j}].ports"),
                    format!(
                        "overlaps vip[{i}].rule[{e}] ({}-{}): the first matching rule wins, so this one never applies to the overlap",
                        v.rules[e].port_lo, v.rules[e].port_hi
                    ),
                );
            }
        }
    }
    let me = raw
        .cluster
        .member
        .iter()
        .find(|m| *m.id.get_ref() == cfg.node_id as i64);
    if let Some(me) = me {
        if *me.weight.get_ref() != cfg.weight {
            warn(
                given_or(&raw.node.weight, raw.node.id.span()),
                "node.weight".into(),
                format!(
                    "{} differs from this node's [[cluster.member]] weight {}: node.weight is the one used",
                    cfg.weight,
                    me.weight.get_ref()
                ),
            );
        }
    }
    if let Some(me) = cfg.members.iter().find(|m| m.id == cfg.node_id) {
        for (link, (l, a)) in cfg.listen.iter().zip(&me.addrs).enumerate() {
            if l.ip() != a.ip() && !l.ip().is_unspecified() {
                warn(
                    raw.cluster.listen.span(),
                    "cluster.listen".into(),
                    format!(
                        "{l} (link {link}) is not this node's [[cluster.member]] address {a}: peers send heartbeats to {a}"
                    ),
                );
            }
        }
    }
    out
}

/// Why `a` is no address for a VIP, if it is not.
fn odd_address(a: IpAddr) -> Option<&'static str> {
    match a {
        _ if a.is_unspecified() => Some("unspecified"),
        _ if a.is_loopback() => Some("loopback"),
        _ if a.is_multicast() => Some("multicast"),
        IpAddr::V4(v) if v.is_broadcast() => Some("broadcast"),
        IpAddr::V4(v) if v.is_link_local() => Some("link-local"),
        IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80 => Some("link-local"),
        _ => None,
    }
}

/// Whether two rules' protocols share one (`both` meets either).
fn protocols_meet(a: Protocol, b: Protocol) -> bool {
    a == b || a == Protocol::Both || b == Protocol::Both
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_addresses_are_named() {
        let name = |s: &str| odd_address(s.parse().unwrap());
        assert_eq!(name("0.0.0.0"), Some("unspecified"));
        assert_eq!(name("::"), Some("unspecified"));
        assert_eq!(name("::1"), Some("loopback"));
        assert_eq!(name("ff02::1"), Some("multicast"));
        assert_eq!(name("fe80::1"), Some("link-local"));
        assert_eq!(name("198.18.0.100"), None);
        assert_eq!(name("2001:db8::1"), None);
    }

    #[test]
    fn both_meets_either_protocol() {
        assert!(protocols_meet(Protocol::Both, Protocol::Udp));
        assert!(protocols_meet(Protocol::Tcp, Protocol::Tcp));
        assert!(!protocols_meet(Protocol::Tcp, Protocol::Udp));
    }
}
