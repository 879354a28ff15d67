//! Embeds the XDP object built by `cargo xtask build-ebpf` into the binary,
//! so an operator installs one file. Without it the agent still builds (for
//! `cargo clippy`, witnesses and the CLI) and says how to fix it when asked to
//! load the data plane.
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(xnlb_bpf_embedded)");
    println!("cargo::rerun-if-env-changed=XNLB_BPF_OBJ");
    let obj = std::env::var_os("XNLB_BPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest =
                PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            manifest.join("../target/bpf/xnlb.bpf.o")
        });
    println!("cargo::rerun-if-changed={}", obj.display());
    if obj.is_file() {
        println!("cargo::rustc-cfg=xnlb_bpf_embedded");
        println!("cargo::rustc-env=XNLB_BPF_EMBED={}", obj.display());
    }
}
