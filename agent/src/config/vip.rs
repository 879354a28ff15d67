//! `[[vip]]`, `[[vip.rule]]` and `[vip.health]`: the cluster addresses,
//! how each one's traffic is split, and the check that drains this node
//! while its service is down. Also the limits the data plane's table sets
//! (VIPs, rules per VIP, single-mode slots).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::Range;

use toml::Spanned;

use super::context::Ctx;
use super::raw::{given_or, RawHealth, RawRule, RawVip};
use super::{
    Affinity, ConfigError, Health, HealthProbe, MacMode, Member, Mode, PortRule, Protocol, Role,
    Vip, VipMode, MAX_HEALTH_MS,
};

const MODES: [(&str, Mode); 3] = [
    ("multiple", Mode::Multiple),
    ("single", Mode::Single),
    ("disabled", Mode::Disabled),
];

const PROTOCOLS: [(&str, Protocol); 3] = [
    ("tcp", Protocol::Tcp),
    ("udp", Protocol::Udp),
    ("both", Protocol::Both),
];

const AFFINITIES: [(&str, Affinity); 3] = [
    ("none", Affinity::None),
    ("single", Affinity::Single),
    ("network", Affinity::Network),
];

/// Every `[[vip]]`, in file order.
pub(super) fn parse(cx: &Ctx, raw: &[RawVip], members: &[Member]) -> Result<Vec<Vip>, ConfigError> {
    let mut vips = Vec::new();
    let mut seen = BTreeSet::new();
    let mut single_slots = 0usize;
    for (i, v) in raw.iter().enumerate() {
        let key = format!("vip[{i}]");
        let address: IpAddr = v.address.get_ref().parse().or_else(|_| {
            cx.err(
                v.address.span(),
                format!("{key}.address"),
                format!("{:?} is not an IP address", v.address.get_ref()),
            )
        })?;
        if !seen.insert(address) {
            return cx.err(
                v.address.span(),
                format!("{key}.address"),
                format!("{address} is listed twice"),
            );
        }
        let mode = cx.choice(
            &v.mode,
            &format!("{key}.mode"),
            &[("flood", VipMode::Flood), ("routed", VipMode::Routed)],
        )?;
        let mac_mode = cx.choice(
            &v.mac_mode,
            &format!("{key}.mac_mode"),
            &[
                ("multicast", MacMode::Multicast),
                ("unicast", MacMode::Unicast),
            ],
        )?;
        let default = cx.choice(&v.default, &format!("{key}.default"), &MODES)?;
        let default_priority = priority(cx, &v.priority, &format!("{key}.priority"), members)?;
        single_slots += (default == Mode::Single) as usize;
        if v.rule.len() > xnlb_common::MAX_RULES {
            return cx.err(
                v.address.span(),
                format!("{key}.rule"),
                format!("{} rules; at most {}", v.rule.len(), xnlb_common::MAX_RULES),
            );
        }
        let mut rules = Vec::new();
        for (j, r) in v.rule.iter().enumerate() {
            let rule = rule(cx, r, &format!("{key}.rule[{j}]"), members)?;
            single_slots += (rule.mode == Mode::Single) as usize;
            rules.push(rule);
        }
        let health = match &v.health {
            None => None,
            Some(h) => Some(health(cx, h, &format!("{key}.health"), v.address.span())?),
        };
        vips.push(Vip {
            address,
            mode,
            mac_mode,
            default,
            default_priority,
            rules,
            health,
        });
    }
    if vips.len() > xnlb_common::MAX_VIPS {
        return cx.err(
            raw[xnlb_common::MAX_VIPS].address.span(),
            "vip",
            format!("at most {} VIPs", xnlb_common::MAX_VIPS),
        );
    }
    if single_slots > xnlb_common::MAX_SINGLE_SLOTS as usize {
        return cx.err(
            raw.last().map_or(0..0, |v| v.address.span()),
            "vip",
            format!(
                "{single_slots} single-mode rules and defaults; at most {}",
                xnlb_common::MAX_SINGLE_SLOTS
            ),
        );
    }
    Ok(vips)
}

/// One `[[vip.rule]]`; `key` is its dotted name.
fn rule(cx: &Ctx, r: &RawRule, key: &str, members: &[Member]) -> Result<PortRule, ConfigError> {
    let protocol = cx.choice(&r.protocol, &format!("{key}.protocol"), &PROTOCOLS)?;
    let Some((port_lo, port_hi)) = parse_ports(r.ports.get_ref()) else {
        return cx.err(
            r.ports.span(),
            format!("{key}.ports"),
            format!(
                "{:?} is not a port or range like \"80\" or \"8000-8100\"",
                r.ports.get_ref()
            ),
        );
    };
    let mode = cx.choice(&r.mode, &format!("{key}.mode"), &MODES)?;
    let affinity = cx.choice(&r.affinity, &format!("{key}.affinity"), &AFFINITIES)?;
    if let (Some(p), false) = (&r.priority, mode == Mode::Single) {
        return cx.err(
            p.span(),
            format!("{key}.priority"),
            "only applies to mode = \"single\"",
        );
    }
    let priority = priority(cx, &r.priority, &format!("{key}.priority"), members)?;
    Ok(PortRule {
        protocol,
        port_lo,
        port_hi,
        mode,
        affinity,
        priority,
    })
}

/// `[vip.health]`; `at` is the VIP's address, where an error about a
/// defaulted value points.
fn health(cx: &Ctx, h: &RawHealth, key: &str, at: Range<usize>) -> Result<Health, ConfigError> {
    let probe = match (&h.tcp, &h.command) {
        (Some(t), None) => HealthProbe::Tcp(t.get_ref().parse().or_else(|_| {
            cx.err(
                t.span(),
                format!("{key}.tcp"),
                format!("{:?} is not an IP:port address", t.get_ref()),
            )
        })?),
        (None, Some(c)) if !c.get_ref().trim().is_empty() => {
            HealthProbe::Command(c.get_ref().clone())
        }
        (None, Some(c)) => return cx.err(c.span(), format!("{key}.command"), "is empty"),
        _ => return cx.err(at, key.to_string(), "needs exactly one of tcp or command"),
    };
    let interval_ms = cx.in_range(
        &h.interval_ms,
        1..=MAX_HEALTH_MS,
        format!("{key}.interval_ms"),
    )?;
    let timeout_ms = cx.in_range(
        &h.timeout_ms,
        1..=MAX_HEALTH_MS,
        format!("{key}.timeout_ms"),
    )?;
    if timeout_ms > interval_ms {
        return cx.err(
            given_or(&h.timeout_ms, at),
            format!("{key}.timeout_ms"),
            format!("{timeout_ms} is longer than interval_ms {interval_ms}"),
        );
    }
    Ok(Health {
        probe,
        interval_ms,
        timeout_ms,
        fall: cx.in_range(&h.fall, 1..=100, format!("{key}.fall"))?,
        rise: cx.in_range(&h.rise, 1..=100, format!("{key}.rise"))?,
    })
}

/// A `single`-mode priority list: members that serve, each once; absent,
/// [`default_priority`].
fn priority(
    cx: &Ctx,
    v: &Option<Spanned<Vec<i64>>>,
    key: &str,
    members: &[Member],
) -> Result<Vec<u8>, ConfigError> {
    let Some(v) = v else {
        return Ok(default_priority(members));
    };
    let mut out = Vec::new();
    for id in v.get_ref() {
        let id = cx.member_id(*id, v.span(), key)?;
        match members.iter().find(|m| m.id == id) {
            None => {
                return cx.err(
                    v.span(),
                    key,
                    format!("member {id} is not in [[cluster.member]]"),
                )
            }
            Some(m) if m.role == Role::Witness => {
                return cx.err(
                    v.span(),
                    key,
                    format!("member {id} is a witness and serves nothing"),
                )
            }
            Some(_) => {}
        }
        if out.contains(&id) {
            return cx.err(v.span(), key, format!("member {id} is listed twice"));
        }
        out.push(id);
    }
    if out.is_empty() {
        return cx.err(v.span(), key, "needs at least one member");
    }
    Ok(out)
}

/// Actives by ascending id, then standbys: the order DESIGN gives for
/// `single` mode when no priority is configured.
pub fn default_priority(members: &[Member]) -> Vec<u8> {
    let mut ids: Vec<(bool, u8)> = members
        .iter()
        .filter(|m| m.role != Role::Witness)
        .map(|m| (m.role == Role::Standby, m.id))
        .collect();
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

/// `"80"` or `"8000-8100"`: a non-empty range of non-zero ports.
fn parse_ports(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let p = s.trim().parse().ok()?;
            (p, p)
        }
    };
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}
