//! The xnlb agent: the IO shell around the protocol core (`xnlb-proto`) and
//! the XDP data plane (`ebpf/`), plus the command line that manages it.

pub mod admission;
pub mod announce;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod doctor;
pub mod explain;
pub mod flood_probe;
pub mod flow;
pub mod forwarding;
pub mod health;
pub mod host;
pub mod key;
pub mod liveness;
pub mod lock;
pub mod metrics;
pub mod netlink;
pub mod plan;
pub mod prefilter;
pub mod runtime;
pub mod sockets;
pub mod state_file;
pub mod status;
