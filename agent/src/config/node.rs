//! `[node]`: who this node is and how it runs (id, role, weight, interface,
//! XDP mode, failback, scheduling priority, state and pin directories).

use std::path::{Path, PathBuf};

use super::context::Ctx;
use super::raw::RawNode;
use super::{ConfigError, Failback, Role, XdpMode, ROLES};

/// `[node]` validated, except its directories (see [`dirs`]).
pub(super) struct Node {
    pub id: u8,
    pub interface: Option<String>,
    pub role: Role,
    pub weight: u32,
    pub xdp_mode: XdpMode,
    pub failback: Failback,
    pub heartbeat_priority: u8,
}

pub(super) fn parse(cx: &Ctx, n: &RawNode) -> Result<Node, ConfigError> {
    let id = cx.member_id(*n.id.get_ref(), n.id.span(), "node.id")?;
    let role = cx.choice(&n.role, "node.role", &ROLES)?;
    let weight = cx.in_range(&n.weight, 1..=10_000, "node.weight")?;
    let xdp_mode = cx.choice(
        &n.xdp_mode,
        "node.xdp_mode",
        &[
            ("auto", XdpMode::Auto),
            ("native", XdpMode::Native),
            ("generic", XdpMode::Generic),
        ],
    )?;
    let failback = cx.choice(
        &n.failback,
        "node.failback",
        &[("auto", Failback::Auto), ("manual", Failback::Manual)],
    )?;
    let interface = match &n.interface {
        Some(i) if i.get_ref().is_empty() || i.get_ref().len() > 15 => {
            return cx.err(i.span(), "node.interface", "is not an interface name")
        }
        Some(i) => Some(i.get_ref().clone()),
        None if role != Role::Witness => {
            return cx.err(
                n.id.span(),
                "node.interface",
                "missing: an active or standby node needs the interface VIP traffic arrives on",
            )
        }
        None => None,
    };
    let heartbeat_priority = match *n.heartbeat_priority.get_ref() {
        p @ 0..=99 => p as u8,
        _ => {
            return cx.err(
                n.heartbeat_priority.span(),
                "node.heartbeat_priority",
                "is not a SCHED_FIFO priority in 0..=99",
            )
        }
    };
    Ok(Node {
        id,
        interface,
        role,
        weight,
        xdp_mode,
        failback,
        heartbeat_priority,
    })
}

/// `node.state_dir` and `node.pin_dir` (checked after the other sections,
/// as they always were, so a file with several errors reports the same
/// first one).
pub(super) fn dirs(cx: &Ctx, n: &RawNode, id: u8) -> Result<(PathBuf, PathBuf), ConfigError> {
    let pin_dir = match &n.pin_dir {
        Some(p) if !p.get_ref().starts_with("/sys/fs/bpf/") => {
            return cx.err(
                p.span(),
                "node.pin_dir",
                "must be a directory under /sys/fs/bpf/",
            )
        }
        Some(p) => PathBuf::from(p.get_ref()),
        None => Path::new(xnlb_common::PIN_DIR).join(format!("node{id}")),
    };
    Ok((PathBuf::from(n.state_dir.get_ref()), pin_dir))
}
