//! Runs the deterministic simulator: many seeds, one replayed seed, or the
//! convergence benchmark. Called by `cargo xtask sim`.
//!
//! ```text
//! xnlb-sim --seeds N [--nodes K] [--first S]   run N seeds (node count from the seed unless K)
//! xnlb-sim --seed S --nodes K                  replay one seed
//! xnlb-sim --bench-converge                    failover p50/p99 and traffic per node
//! ```

use std::process::ExitCode;
use std::time::Instant;
use xnlb_proto::sim::{bench, run_seed, seed_nodes};

fn arg(args: &[String], name: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: xnlb-sim [--seeds N] [--nodes K] [--first S] | --seed S --nodes K | --bench-converge");
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--bench-converge") {
        bench::converge(&mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    // 0 (what `cargo xtask sim` passes by default) means mixed sizes, as
    // no flag does: every seed picks its own.
    let nodes = arg(&args, "--nodes").filter(|&n| n > 0).map(|n| n as usize);
    if let Some(seed) = arg(&args, "--seed") {
        let k = nodes.unwrap_or_else(|| seed_nodes(seed));
        return match run_seed(seed, k) {
            Ok(o) => {
                println!(
                    "seed {seed} nodes {k}: ok ({} steps, failover {:?} ms)",
                    o.steps,
                    o.failover_ns.map(|n| n / 1_000_000)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("seed {seed} nodes {k}: FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let seeds = arg(&args, "--seeds").unwrap_or(100);
    let first = arg(&args, "--first").unwrap_or(0);
    let start = Instant::now();
    let mut failed = 0;
    let (mut opened, mut cut, mut stalled) = (0, 0, 0);
    for seed in first..first + seeds {
        let k = nodes.unwrap_or_else(|| seed_nodes(seed));
        let outcome = run_seed(seed, k);
        if let Ok(o) = &outcome {
            opened += o.conns_opened;
            cut += o.conns_cut;
            stalled += o.stalled_sweeps;
        }
        if let Err(e) = outcome {
            failed += 1;
            println!("FAILED seed {seed} nodes {k}: {e}");
            println!("  replay: cargo xtask sim --seed {seed} --nodes {k}");
            if failed >= 5 {
                break;
            }
        }
    }
    println!(
        "{seeds} seeds, {failed} failed, {:.1}s; socket model: {opened} connections, \
         {cut} ended by the cluster after their windows, {stalled} sweeps saw a stall",
        start.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
