//! The xnlb agent: the IO shell around the protocol core (`xnlb-proto`) and
//! the XDP data plane (`ebpf/`), plus the command line that manages it.

pub mod dataplane;
pub mod flow;
