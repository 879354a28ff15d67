//! `[control]`: where the agent is managed from (the owner-only control
//! socket) and where it is observed (the Prometheus endpoint, `""` to turn
//! it off).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::context::Ctx;
use super::raw::RawControl;
use super::ConfigError;

/// `[control]` validated.
pub(super) struct Control {
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
}

pub(super) fn parse(cx: &Ctx, c: &RawControl) -> Result<Control, ConfigError> {
    let metrics = match c.metrics.get_ref().as_str() {
        "" => None,
        m => Some(m.parse().or_else(|_| {
            cx.err(
                c.metrics.span(),
                "control.metrics",
                format!("{m:?} is not an IP:port address"),
            )
        })?),
    };
    Ok(Control {
        socket: PathBuf::from(c.socket.get_ref()),
        metrics,
    })
}
