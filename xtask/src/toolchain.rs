//! Finding a toolchain that can build `core` for `bpfel-unknown-none`.
//!
//! Two routes work on these machines, tried in this order:
//! 1. Debian: `rustc-web` (`/usr/bin/rustc`, 1.96, LLVM 22) with its std
//!    source from `rust-web-src`, driven by the default cargo with
//!    `RUSTC_BOOTSTRAP=1` so `-Z build-std=core` is allowed.
//! 2. rustup: a `nightly` toolchain with the `rust-src` component.
//!
//! Both need `bpf-linker` (built against LLVM 22 by `scripts/setup.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

/// A usable eBPF toolchain.
pub enum Toolchain {
    /// Debian's rustc-web with rust-web-src.
    Debian { rustc: PathBuf, version: String },
    /// `cargo +nightly` with rust-src.
    Nightly { version: String },
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn bpf_linker() -> Option<PathBuf> {
    if let Some(p) = output(Command::new("which").arg("bpf-linker")) {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let p = home.join(".cargo/bin/bpf-linker");
    p.is_file().then_some(p)
}

/// Finds a toolchain, or explains exactly what to install.
pub fn find() -> Result<Toolchain> {
    let Some(linker) = bpf_linker() else {
        bail!(
            "bpf-linker not found on PATH or in ~/.cargo/bin: run scripts/setup.sh, or \
             `LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker@0.13.0 \
             --no-default-features --features llvm-22` (needs Debian package llvm-22-dev)"
        );
    };
    let _ = linker;
    let debian_rustc = Path::new("/usr/bin/rustc");
    let debian_src = Path::new("/usr/lib/rustlib/src/rust/library/core");
    if debian_rustc.is_file() && debian_src.is_dir() {
        if let Some(v) = output(Command::new(debian_rustc).arg("--version")) {
            return Ok(Toolchain::Debian {
                rustc: debian_rustc.to_path_buf(),
                version: v,
            });
        }
    }
    if let Some(list) = output(Command::new("rustup").args(["toolchain", "list"])) {
        if list.lines().any(|l| l.starts_with("nightly")) {
            let comps = output(Command::new("rustup").args([
                "component",
                "list",
                "--toolchain",
                "nightly",
                "--installed",
            ]))
            .unwrap_or_default();
            if comps.lines().any(|l| l.starts_with("rust-src")) {
                let v = output(Command::new("rustc").args(["+nightly", "--version"]))
                    .unwrap_or_else(|| "nightly".into());
                return Ok(Toolchain::Nightly { version: v });
            }
        }
    }
    let mut missing = Vec::new();
    if !debian_rustc.is_file() {
        missing.push("rustc-web");
    }
    if !debian_src.is_dir() {
        missing.push("rust-web-src");
    }
    bail!(
        "no eBPF toolchain: missing Debian package(s) {} (run scripts/setup.sh), \
         and no rustup nightly with rust-src",
        missing.join(", ")
    )
}

impl Toolchain {
    /// One line naming the toolchain, for the build log.
    pub fn describe(&self) -> String {
        match self {
            Toolchain::Debian { rustc, version } => {
                format!("Debian {version} ({}, RUSTC_BOOTSTRAP=1)", rustc.display())
            }
            Toolchain::Nightly { version } => format!("rustup {version}"),
        }
    }

    /// The `cargo build` of the eBPF crate in `dir`.
    pub fn cargo_build(&self, dir: &Path, release: bool) -> Command {
        let mut cmd = Command::new("cargo");
        if let Toolchain::Nightly { .. } = self {
            cmd.arg("+nightly");
        }
        cmd.current_dir(dir).args([
            "build",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
        ]);
        if release {
            cmd.arg("--release");
        }
        if let Toolchain::Debian { rustc, .. } = self {
            cmd.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
        }
        // bpf-linker is built against LLVM 22; make sure its tools win.
        let path = std::env::var("PATH").unwrap_or_default();
        let home = std::env::var("HOME").unwrap_or_default();
        cmd.env(
            "PATH",
            format!("/usr/lib/llvm-22/bin:{home}/.cargo/bin:{path}"),
        );
        // Do not inherit the outer cargo's target settings (xtask runs under cargo).
        cmd.env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET");
        cmd
    }
}
