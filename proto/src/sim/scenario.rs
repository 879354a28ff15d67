//! What a simulated run is made of: node count, buckets, roles, weights,
//! failback, link count and clock skew, all derived from one seed.

use crate::config::{Config, Failback, MemberConfig, Role};
use crate::quorum;
use crate::time::MS;

use super::net::Rng;

/// What a run is made of.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Seed.
    pub seed: u64,
    /// Node count.
    pub nodes: usize,
    /// Buckets.
    pub buckets: u32,
    /// Single slots.
    pub singles: usize,
    /// Links per node.
    pub links: usize,
    /// Roles by index.
    pub roles: Vec<Role>,
    /// Weights by index.
    pub weights: Vec<u32>,
    /// Failback by index.
    pub failback: Vec<Failback>,
    /// Length of the random-fault phase (ns).
    pub chaos_ns: u64,
    /// Largest clock-rate error of any node (ppm). Within the protocol's
    /// assumed bound ([`quorum::MAX_CLOCK_SKEW_PPM`]) by default; a test
    /// raises it past the bound to show the checks then catch overlaps.
    pub skew_ppm: u64,
}

impl Scenario {
    /// The scenario a seed stands for (node count fixed by the caller).
    pub fn generate(seed: u64, nodes: usize) -> Scenario {
        let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(nodes as u64));
        let nodes = nodes.clamp(3, 64);
        let buckets = match (nodes, rng.range(0, 4)) {
            (n, _) if n > 17 => [256u32, 1024][rng.range(0, 2) as usize],
            (_, 0) => 4096,
            (_, 1) => 1024,
            (_, 2) => 64,
            _ => 256,
        };
        let mut roles = vec![Role::Active; nodes];
        if nodes >= 4 && rng.chance(0.3) {
            roles[nodes - 1] = Role::Standby;
        }
        if nodes >= 3 && rng.chance(0.25) {
            roles[nodes - 2] = Role::Witness;
        }
        let weights = if rng.chance(0.3) {
            (0..nodes).map(|_| rng.range(1, 10) as u32).collect()
        } else {
            vec![100; nodes]
        };
        let failback = (0..nodes)
            .map(|_| {
                if rng.chance(0.1) {
                    Failback::Manual
                } else {
                    Failback::Auto
                }
            })
            .collect();
        let chaos_ns = if nodes > 17 {
            1500 * MS
        } else {
            rng.range(1000, 4000) * MS
        };
        Scenario {
            seed,
            nodes,
            buckets,
            singles: rng.range(0, 3) as usize,
            links: rng.range(1, 3) as usize,
            roles,
            weights,
            failback,
            chaos_ns,
            skew_ppm: quorum::MAX_CLOCK_SKEW_PPM * 9 / 10,
        }
    }

    /// The config of member index `i`.
    pub fn config(&self, i: usize) -> Config {
        let members: Vec<MemberConfig> = (0..self.nodes)
            .map(|k| MemberConfig {
                id: k as u8 + 1,
                role: self.roles[k],
                weight: self.weights[k],
                addrs: self.links,
            })
            .collect();
        let mut c = Config::with_defaults(i as u8 + 1, members);
        c.buckets = self.buckets;
        let servers: Vec<u8> = (0..self.nodes)
            .filter(|&k| self.roles[k] != Role::Witness)
            .map(|k| k as u8 + 1)
            .collect();
        c.single_slots = (0..self.singles)
            .map(|s| {
                let mut l = servers.clone();
                let k = s % l.len().max(1);
                l.rotate_left(k);
                l
            })
            .collect();
        c.drain_timeout_ns = 1000 * MS;
        c.hold_cap_ns = 1500 * MS;
        c.failback = self.failback[i];
        c
    }
}
