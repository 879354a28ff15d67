//! The simulated network and the deterministic random source.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// SplitMix64: tiny, fast, and fixed forever, so a seed replays identically
/// on every platform and every future build.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`lo` if empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }

    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// A datagram in flight.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flight {
    /// Real delivery time.
    pub at: u64,
    /// Tie-breaker: send order.
    pub order: u64,
    /// Sender index.
    pub from: usize,
    /// Receiver index.
    pub to: usize,
    /// Link index (same at both ends).
    pub link: usize,
    /// Real send time.
    pub sent: u64,
    /// What the receiver had heard from the sender when the sender sent it
    /// (for the S2 oracle): latest real send time of a datagram from `to`
    /// delivered at `from`.
    pub heard_back: u64,
    /// Bytes.
    pub bytes: Vec<u8>,
}

/// Network conditions and in-flight datagrams.
pub struct Net {
    /// Pending deliveries.
    pub queue: BinaryHeap<Reverse<Flight>>,
    order: u64,
    /// `cut[a][b]`: datagrams from a to b are lost.
    pub cut: Vec<Vec<bool>>,
    /// `link_down[n][l]`: link l of node n is down.
    pub link_down: Vec<Vec<bool>>,
    /// Loss probability.
    pub loss: f64,
    /// Duplication probability.
    pub dup: f64,
    /// Base one-way delay (ns).
    pub delay: u64,
    /// Extra random delay (ns): reorders.
    pub jitter: u64,
}

impl Net {
    /// A clean network for `n` nodes with `links` links each.
    pub fn new(n: usize, links: usize) -> Net {
        Net {
            queue: BinaryHeap::new(),
            order: 0,
            cut: vec![vec![false; n]; n],
            link_down: vec![vec![false; links]; n],
            loss: 0.0,
            dup: 0.0,
            delay: 200_000,
            jitter: 300_000,
        }
    }

    /// Sends, subject to cuts, link failures, loss, duplication and delay.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        rng: &mut Rng,
        now: u64,
        from: usize,
        to: usize,
        link: usize,
        heard_back: u64,
        bytes: Vec<u8>,
    ) {
        if self.cut[from][to]
            || self.link_down[from].get(link).copied().unwrap_or(true)
            || self.link_down[to].get(link).copied().unwrap_or(true)
        {
            return;
        }
        let copies = if rng.chance(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            if rng.chance(self.loss) {
                continue;
            }
            let at = now + self.delay + rng.range(0, self.jitter + 1);
            self.order += 1;
            self.queue.push(Reverse(Flight {
                at,
                order: self.order,
                from,
                to,
                link,
                sent: now,
                heard_back,
                bytes: bytes.clone(),
            }));
        }
    }

    /// Heals every partition and link.
    pub fn heal(&mut self) {
        for row in &mut self.cut {
            row.iter_mut().for_each(|c| *c = false);
        }
        for row in &mut self.link_down {
            row.iter_mut().for_each(|c| *c = false);
        }
    }
}
