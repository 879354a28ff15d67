//! Embeds the XDP object built by `cargo xtask build-ebpf` into the binary,
//! so an operator installs one file. Without it the agent still builds (for
//! `cargo clippy`, witnesses and the CLI) and says how to fix it when asked to
//! load the data plane.
use std::path::PathBuf;

fn main() {
    git_commit();
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

/// The git commit the binary is built from, for `xnlb --version`: a bug
/// report then names the exact source. `XNLB_GIT_COMMIT` (set by a
/// packager building from a tarball) wins; without git it is left unset
/// and the binary says "unknown".
fn git_commit() {
    println!("cargo::rerun-if-env-changed=XNLB_GIT_COMMIT");
    if std::env::var_os("XNLB_GIT_COMMIT").is_some() {
        return;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    // Rebuild when HEAD moves (a commit appends to the reflog; a checkout
    // rewrites HEAD), also in a worktree, whose git dir is not `.git`.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo::rerun-if-changed={dir}/HEAD");
        println!("cargo::rerun-if-changed={dir}/logs/HEAD");
    }
    // No "-dirty" mark: the script reruns only when HEAD moves, so an
    // edit to the work tree would not refresh it and the mark would lie.
    println!("cargo::rustc-env=XNLB_GIT_COMMIT={commit}");
}
