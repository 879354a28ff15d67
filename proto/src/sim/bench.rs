//! `--bench-converge`: failover time and protocol traffic at 3..64 nodes.

use super::{Action, Scenario, World};
use crate::config::{Failback, Role};
use crate::time::{Time, MS};
use std::io::Write;

fn clean_scenario(seed: u64, nodes: usize) -> Scenario {
    Scenario {
        seed,
        nodes,
        buckets: 4096,
        singles: 0,
        links: 1,
        roles: vec![Role::Active; nodes],
        weights: vec![100; nodes],
        failback: vec![Failback::Auto; nodes],
        chaos_ns: 0,
        skew_ppm: crate::quorum::MAX_CLOCK_SKEW_PPM * 9 / 10,
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

/// Prints, per cluster size, crash-to-new-epoch-installed-everywhere and
/// crash-to-all-buckets-served p50/p99 (default timers) and steady-state
/// bytes and datagrams sent per node per second.
pub fn converge(out: &mut impl Write) {
    converge_sizes(out, &[3, 5, 9, 17, 33, 64], 0);
}

/// [`converge`] for chosen sizes; `trials = 0` picks a default per size.
pub fn converge_sizes(out: &mut impl Write, sizes: &[usize], trials: u64) {
    let _ = writeln!(
        out,
        "nodes  trials  installed p50/p99 ms  served p50/p99 ms  bytes/node/s  datagrams/node/s"
    );
    for &n in sizes {
        let trials = match (trials, n) {
            (t, _) if t > 0 => t,
            (_, 0..=9) => 40,
            (_, 10..=17) => 20,
            (_, 18..=33) => 8,
            _ => 4,
        };
        let mut installed = Vec::new();
        let mut served = Vec::new();
        let mut rate_b = 0.0;
        let mut rate_d = 0.0;
        for trial in 0..trials {
            let mut w = World::new(clean_scenario(1000 + trial, n));
            let Ok(t0) = w.converge(5000 * MS, &[]) else {
                let _ = writeln!(out, "{n}: did not converge");
                continue;
            };
            let sent = |w: &World| -> (u64, u64) {
                w.nodes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.node.as_ref().map(|n| n.status(Time(w.local(i, w.now)))))
                    .fold((0, 0), |a, s| (a.0 + s.sent_bytes, a.1 + s.sent_datagrams))
            };
            if trial == 0 {
                w.run_until(t0 + 200 * MS);
                let (b0, d0) = sent(&w);
                w.run_until(t0 + 1200 * MS);
                let (b1, d1) = sent(&w);
                rate_b = (b1 - b0) as f64 / n as f64;
                rate_d = (d1 - d0) as f64 / n as f64;
            }
            let start = w.now + w.rng.range(0, 50 * MS);
            w.run_until(start);
            let victim = w.rng.range(0, n as u64) as usize;
            let epoch0 = w.some_state(&[]).map_or(0, |s| s.epoch);
            w.apply(Action::Crash(victim));
            let t_crash = w.now;
            let mut got_served = None;
            let mut got_installed = None;
            while w.now < t_crash + 2000 * MS && (got_served.is_none() || got_installed.is_none()) {
                let next = w.now + MS / 4;
                w.run_until(next);
                if got_installed.is_none()
                    && (0..n).filter(|&i| i != victim).all(|i| {
                        w.nodes[i]
                            .node
                            .as_ref()
                            .is_some_and(|nd| nd.cluster_state().epoch > epoch0)
                    })
                {
                    got_installed = Some(w.now - t_crash);
                }
                if got_served.is_none()
                    && (0..4096).all(|s| (0..n).any(|i| i != victim && w.serving(i, s)))
                {
                    got_served = Some(w.now - t_crash);
                }
            }
            installed.extend(got_installed);
            served.extend(got_served);
        }
        let _ = writeln!(
            out,
            "{n:>5}  {trials:>6}  {:>9} / {:<9}  {:>7} / {:<7}  {rate_b:>12.0}  {rate_d:>16.0}",
            pct(&mut installed, 0.5) / MS,
            pct(&mut installed, 0.99) / MS,
            pct(&mut served, 0.5) / MS,
            pct(&mut served, 0.99) / MS,
        );
    }
}
