//! `cargo xtask`: the project's build and test entry points.
//!
//! Builds the eBPF object with whichever toolchain this machine has (Debian's
//! rustc-web route or a rustup nightly with rust-src) and says which, then
//! runs the test suites, the simulator and the benchmarks.

mod package;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "xnlb build, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the XDP program into target/bpf/xnlb.bpf.o.
    BuildEbpf {
        /// Optimised build (always used by the agent and the tests).
        #[arg(long)]
        release: bool,
        /// Cargo features of the eBPF crate: variants with parts of the
        /// data plane switched off, for `bench peers --variant` (never
        /// loaded by the agent).
        #[arg(long)]
        features: Option<String>,
        /// Where to write the object (default target/bpf/xnlb.bpf.o).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Build everything and run every test suite (kernel tests need root).
    Test {
        /// Skip the tests that need root and a BPF-capable kernel.
        #[arg(long)]
        no_kernel: bool,
    },
    /// Build the Debian package target/debian/xnlb_<version>_<arch>.deb
    /// (release agent with the XDP object, unit, example config, man
    /// pages, completions, guides).
    Package,
    /// Run the deterministic cluster simulator.
    Sim {
        /// Number of seeds to run.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        /// Cluster size (0: mixed sizes).
        #[arg(long, default_value_t = 0)]
        nodes: usize,
        /// Replay a single seed.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run a benchmark: dataplane | converge | failover | peers.
    Bench {
        /// Which benchmark.
        which: String,
        /// Passed on to the benchmark (e.g. `bench peers -- --runs 7`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a 3-node cluster under load with every CPU saturated and report
    /// membership changes no fault caused.
    Soak {
        /// How long.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.cmd {
        Cmd::BuildEbpf {
            release,
            features,
            out,
        } => {
            build_ebpf_with(&root, release, features.as_deref(), out.as_deref())?;
        }
        Cmd::Test { no_kernel } => test(&root, no_kernel)?,
        Cmd::Package => {
            build_ebpf(&root, true)?;
            build_agent(&root)?;
            package::build(&root)?;
        }
        Cmd::Sim { seeds, nodes, seed } => {
            let mut args = vec!["--seeds".to_string(), seeds.to_string()];
            args.extend(["--nodes".to_string(), nodes.to_string()]);
            if let Some(s) = seed {
                args.extend(["--seed".to_string(), s.to_string()]);
            }
            sim(&root, &args)?
        }
        Cmd::Bench { which, args } => match which.as_str() {
            "dataplane" => {
                build_ebpf(&root, true)?;
                run_bin(&root, "bench-dataplane", &args)?
            }
            "converge" => sim(&root, &["--bench-converge".to_string()])?,
            "failover" | "peers" => {
                build_ebpf(&root, true)?;
                build_agent(&root)?;
                run_bin(&root, &format!("bench-{which}"), &args)?
            }
            other => bail!(
                "unknown benchmark {other:?}: expected dataplane, converge, failover or peers"
            ),
        },
        Cmd::Soak { minutes } => {
            build_ebpf(&root, true)?;
            build_agent(&root)?;
            run_bin(
                &root,
                "soak",
                &["--minutes".to_string(), minutes.to_string()],
            )?
        }
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Builds the eBPF crate and copies the object to `target/bpf/xnlb.bpf.o`
/// (and the benchmarks' reference filter to `target/bpf/xnlb-minimal.bpf.o`).
fn build_ebpf(root: &Path, release: bool) -> Result<PathBuf> {
    build_ebpf_with(root, release, None, None)
}

/// [`build_ebpf`] with eBPF crate `features`, the object written to `out`.
fn build_ebpf_with(
    root: &Path,
    release: bool,
    features: Option<&str>,
    out: Option<&Path>,
) -> Result<PathBuf> {
    let tc = toolchain::find()?;
    eprintln!("xtask: building the XDP program with {}", tc.describe());
    let ebpf_dir = root.join("ebpf");
    let mut cmd = tc.cargo_build(&ebpf_dir, release);
    if let Some(f) = features {
        cmd.args(["--features", f]);
    }
    run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    let built = ebpf_dir.join("target/bpfel-unknown-none").join(profile);
    let out_dir = root.join("target/bpf");
    std::fs::create_dir_all(&out_dir)?;
    let out = out.map_or_else(|| out_dir.join("xnlb.bpf.o"), Path::to_path_buf);
    copy_if_changed(&built.join("xnlb"), &out)?;
    copy_if_changed(
        &built.join("xnlb-minimal"),
        &out_dir.join("xnlb-minimal.bpf.o"),
    )?;
    eprintln!("xtask: XDP object at {}", out.display());
    Ok(out)
}

/// Copies `from` to `to` unless `to` already holds the same bytes, so cargo
/// does not rebuild the agent (which embeds the object) for nothing.
fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let new = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, &new)?;
    }
    Ok(())
}

/// `cargo run --release` of binary `bin` of `package` (with `features`).
fn run_release_bin(
    root: &Path,
    package: &str,
    features: &[&str],
    bin: &str,
    args: &[String],
) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["run", "--release", "-q", "-p", package]);
    for f in features {
        cmd.args(["--features", f]);
    }
    run(cmd.args(["--bin", bin, "--"]).args(args))
}

/// Runs one of the `xnlb-tests` programs (benchmarks, soak) in release.
fn run_bin(root: &Path, bin: &str, args: &[String]) -> Result<()> {
    run_release_bin(root, "xnlb-tests", &[], bin, args)
}

/// Builds the release agent binary (the cluster tests and benches run it).
fn build_agent(root: &Path) -> Result<()> {
    run(Command::new("cargo")
        .current_dir(root)
        .args(["build", "--release", "-q", "-p", "xnlb"]))
}

fn sim(root: &Path, args: &[String]) -> Result<()> {
    run_release_bin(root, "xnlb-proto", &["sim"], "xnlb-sim", args)
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false)
}

fn test(root: &Path, no_kernel: bool) -> Result<()> {
    build_ebpf(root, true)?;
    eprintln!("xtask: unit tests and the simulator");
    run(Command::new("cargo").current_dir(root).args([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "xnlb-tests",
        "--all-features",
    ]))?;
    if no_kernel {
        eprintln!("xtask: --no-kernel: skipping the kernel and namespace tests");
        return Ok(());
    }
    if !is_root() {
        bail!("the kernel tests need root (CAP_BPF, CAP_NET_ADMIN): run `cargo xtask test` as root, or `cargo xtask test --no-kernel` for the rest");
    }
    eprintln!("xtask: kernel tests (BPF_PROG_TEST_RUN, veth, namespaces, real agents)");
    // The cluster tests run the agent binary itself; the package test
    // unpacks the package built from it.
    build_agent(root)?;
    package::build(root)?;
    run(Command::new("cargo").current_dir(root).args([
        "test",
        "--release",
        "-p",
        "xnlb-tests",
        "--",
        "--test-threads=1",
    ]))
}
