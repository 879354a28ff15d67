//! Per-node socket tables: the connections each host's kernel holds, and
//! the connection rule checked against them (S6).
//!
//! A connection is opened by a SYN that exactly one node's data plane
//! accepts as new (its slot `OWNED` or `ACQUIRING`, lease valid), and from
//! then on lives in that node's kernel (its *holder*) until it closes. A
//! later packet of the connection is passed by a node's data plane when:
//!
//! | node's plane                   | holder          | any other node |
//! |--------------------------------|-----------------|----------------|
//! | lease valid, `OWNED`           | passes          | passes (its stack resets the connection) |
//! | lease valid, `ACQUIRING`/`RELEASING` | passes (socket lookup) | drops |
//! | lease lapsed, held delivery on, slot not `NOT_OWNED` | passes | drops |
//! | otherwise                      | drops (stall)   | drops          |
//!
//! Checked after every data-plane change and every few milliseconds:
//! * **S6 (no overlap)**: never do the holder and another node both pass a
//!   connection's packets. A non-holder passes only in `OWNED`, so this
//!   says the owner looks its sockets up while the holder may serve it.
//! * **No early cut**: a connection ends other than by its client (another
//!   node passes its packets and resets it, or its holder, running, taking
//!   part and holding a lease, marks its slot `NOT_OWNED`) only once every
//!   preservation window it was promised ran out: it is at least the
//!   held-delivery window old (handoffs and orphans last longer), unless
//!   the operator stopped its holder (`stop` leaves at once) or its holder
//!   lost its state file (it starts from nothing). Stalls (a
//!   frozen or crashed agent past its held delivery) are counted, not
//!   failed: TCP retransmits through them.
//!
//! The holder's agent reports how many connections it still holds in its
//! `RELEASING` slots, as the real agent does from `sock_diag`, which ends
//! handoffs.

use crate::quorum;
use crate::time::{Time, MS};
use xnlb_common::slot_state::{NOT_OWNED, OWNED, RELEASING};

use super::World;

/// Live connections the model keeps at most (bounded work per step).
const MAX_CONNS: usize = 48;

/// How often the model opens connections and sweeps the rule (real ns).
const SWEEP_NS: u64 = 10 * MS;

/// One connection held by one node's kernel.
#[derive(Clone, Debug)]
pub struct Conn {
    /// Slot its flow hashes to.
    pub slot: usize,
    /// Index of the node whose kernel holds it.
    pub holder: usize,
    /// Real time the SYN was accepted.
    pub opened: u64,
    /// Real time the client closes it (`u64::MAX`: never).
    pub closes: u64,
    /// Its holder lost its state file since (the documented recovery
    /// starts from nothing: its connections may be cut).
    pub state_lost: bool,
}

/// The connections of every node, and what happened to them.
#[derive(Default)]
pub struct Sockets {
    /// Live connections.
    pub conns: Vec<Conn>,
    /// Next sweep (real).
    pub next_sweep: u64,
    /// Connections opened.
    pub opened: u64,
    /// Connections closed by their clients.
    pub closed: u64,
    /// Connections ended by their holder after their windows ran out.
    pub cut: u64,
    /// Real time every connection is promised at least: held delivery (the
    /// shortest window; handoffs and orphans last longer) on the slowest
    /// clock. Set by [`Sockets::for_config`].
    pub window: u64,
    /// Sweeps that found a connection its holder did not pass.
    pub stalled_sweeps: u64,
}

impl Sockets {
    /// No connections yet, promising what `cfg`'s held delivery promises.
    pub fn for_config(cfg: &crate::config::Config) -> Sockets {
        let hold = quorum::hold_ns(cfg.drain_timeout_ns, cfg.hold_cap_ns);
        Sockets {
            window: hold - hold / 50,
            ..Sockets::default()
        }
    }
}

impl World {
    /// Whether node `i`'s data plane passes a packet of `c` now.
    fn passes(&self, i: usize, c: &Conn) -> bool {
        let sn = &self.nodes[i];
        let state = sn.dp[c.slot];
        let local = self.local(i, self.now);
        let lease = sn.lease > local;
        let mine = c.holder == i;
        if lease {
            state == OWNED || (mine && state != NOT_OWNED)
        } else {
            mine && state != NOT_OWNED && local < sn.hold
        }
    }

    /// Checks every live connection against node `i`'s data plane (after
    /// it changed): S6 for a non-holder, an early cut for the holder.
    pub(super) fn check_conns_at(&mut self, i: usize) {
        let mut k = 0;
        while k < self.sockets.conns.len() {
            let c = self.sockets.conns[k].clone();
            let other_passes = c.holder != i && self.passes(i, &c);
            if other_passes && self.passes(c.holder, &c) {
                let msg = format!(
                    "S6 violated: nodes {} (state {}) and {} (holder, state {}) both pass a connection in slot {}",
                    i + 1,
                    self.nodes[i].dp[c.slot],
                    c.holder + 1,
                    self.nodes[c.holder].dp[c.slot],
                    c.slot
                );
                self.fail(msg);
                return;
            }
            // Another node's stack resets it, or its holder dropped it for
            // good: either way it ends here, and only once every window it
            // was promised ran out.
            if other_passes || (c.holder == i && self.cut_for_good(i, &c)) {
                self.sockets.conns.swap_remove(k);
                let how = if other_passes {
                    format!("node {} passes it", i + 1)
                } else {
                    "its holder dropped it".to_string()
                };
                if !self.end_conn(&c, &how) {
                    return;
                }
                continue;
            }
            k += 1;
        }
    }

    /// Counts `c` (already removed) as ended by the cluster, `how`; false
    /// (and the run failed) if that came before every window it was
    /// promised ran out, unless an operator `stop` or a lost state file
    /// excuses it.
    fn end_conn(&mut self, c: &Conn, how: &str) -> bool {
        self.sockets.cut += 1;
        let age = self.now - c.opened;
        let window = self.sockets.window;
        if age >= window || self.nodes[c.holder].stop_requested || c.state_lost {
            return true;
        }
        let msg = format!(
            "connection cut early: {how} after {} ms (promised {} ms): slot {}, holder node {}",
            age / MS,
            window / MS,
            c.slot,
            c.holder + 1
        );
        self.fail(msg);
        false
    }

    /// The holder stops serving `c` deliberately: its agent runs, takes
    /// part, holds a lease, and its plane marks the slot `NOT_OWNED`.
    fn cut_for_good(&self, i: usize, c: &Conn) -> bool {
        let sn = &self.nodes[i];
        let Some(node) = sn.node.as_ref() else {
            return false;
        };
        sn.dp[c.slot] == NOT_OWNED
            && sn.lease > self.local(i, self.now)
            && node.cluster_state().participates(sn.id)
    }

    /// Opens and closes connections, sweeps the rule on every node, and
    /// schedules the next sweep.
    pub(super) fn sweep_sockets(&mut self) {
        let now = self.now;
        let before = self.sockets.conns.len();
        self.sockets.conns.retain(|c| c.closes > now);
        self.sockets.closed += (before - self.sockets.conns.len()) as u64;
        // A member that left (stop) ended its connections when its handoff
        // finished or timed out; its host serves the VIP no more.
        let (left, kept): (Vec<Conn>, Vec<Conn>) = std::mem::take(&mut self.sockets.conns)
            .into_iter()
            .partition(|c| self.nodes[c.holder].stopped);
        self.sockets.conns = kept;
        for c in &left {
            if !self.end_conn(c, "its holder left") {
                return;
            }
        }
        if self.sockets.conns.len() < MAX_CONNS && self.rng.chance(0.5) {
            self.open_conn();
        }
        for i in 0..self.nodes.len() {
            if self.violation.is_some() {
                return;
            }
            self.check_conns_at(i);
        }
        let stalled = (0..self.sockets.conns.len()).any(|k| {
            let c = &self.sockets.conns[k];
            !self.passes(c.holder, c)
        });
        if stalled {
            self.sockets.stalled_sweeps += 1;
        }
        self.sockets.next_sweep = now + SWEEP_NS;
    }

    /// A client sends a SYN to a random slot: the one node accepting new
    /// flows there (if any) holds the connection from now on.
    fn open_conn(&mut self) {
        let slots = self.nodes[0].dp.len() as u64;
        if slots == 0 {
            return;
        }
        let slot = self.rng.range(0, slots) as usize;
        let takers: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| self.serving(j, slot))
            .collect();
        let [holder] = takers[..] else {
            return; // none (a gap) or several (S1 reports that)
        };
        let life = match self.rng.range(0, 10) {
            0..=3 => self.rng.range(1, 300) * MS,
            4..=7 => self.rng.range(300, 3000) * MS,
            _ => u64::MAX - self.now,
        };
        self.sockets.opened += 1;
        self.sockets.conns.push(Conn {
            slot,
            holder,
            opened: self.now,
            closes: self.now + life,
            state_lost: false,
        });
    }

    /// Connections node `i`'s kernel still holds in its `RELEASING` slots
    /// (what the agent reads from `sock_diag`).
    pub(super) fn held_releasing(&self, i: usize) -> u64 {
        self.sockets
            .conns
            .iter()
            .filter(|c| c.holder == i && self.nodes[i].dp[c.slot] == RELEASING)
            .count() as u64
    }

    /// The agent of node `i` reports its held connections; it keeps
    /// reporting while it releases anything.
    pub(super) fn report_sockets(&mut self, i: usize) {
        self.nodes[i].flows_at = None;
        let held = self.held_releasing(i);
        if self.trace {
            println!(
                "{:>9.3} n{} reports {held} connections held in releasing slots",
                self.now as f64 / 1e6,
                i + 1
            );
        }
        let now = Time(self.local(i, self.now));
        if let Some(n) = self.nodes[i].node.as_mut() {
            n.report_tracked_flows(now, held);
        }
        self.drive(i);
        if self.nodes[i].dp.contains(&RELEASING) && self.nodes[i].flows_at.is_none() {
            self.nodes[i].flows_at = Some(self.now + self.rng.range(50, 250) * MS);
        }
    }
}
