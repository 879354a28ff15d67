//! Helpers for the kernel tests: a loaded data plane in a private pin
//! directory, frames built with pnet, and network namespaces that clean up
//! after themselves.

pub mod cluster;
pub mod fixture;
pub mod frames;
pub mod netns;
pub mod peers;
pub mod raw;
pub mod tables;
pub mod traffic;

/// Panics with a clear message unless running as root: these tests load BPF
/// programs and create network namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test needs root (CAP_BPF, CAP_NET_ADMIN) and a BPF-capable kernel: \
             run `sudo cargo xtask test` (or `cargo xtask test --no-kernel` to skip it)"
        );
    }
}
