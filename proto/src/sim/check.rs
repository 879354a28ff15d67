//! Invariant checks (DESIGN 3), run by the simulator after every step that
//! can make a node start serving, and in steady state.

use super::{accepts_new, Action, World};
use crate::assign::Standing;
use crate::config::Role;
use crate::quorum;
use crate::time::MS;
use xnlb_common::slot_state::{NOT_OWNED, OWNED};

/// S1 (and S3, since crashed and frozen nodes keep their last data plane):
/// a node that may have just started accepting new flows of some slot must
/// be the only one accepting it. Acceptance only begins at an `Install` or at
/// a `Lease` that revives an expired one, so checking there covers every
/// instant.
pub fn s1_node(w: &mut World, i: usize) {
    let now = w.now;
    if w.nodes[i].lease <= w.local(i, now) {
        return;
    }
    let others: Vec<usize> = (0..w.nodes.len())
        .filter(|&j| j != i && w.nodes[j].lease > w.local(j, now))
        .collect();
    for s in 0..w.nodes[i].dp.len() {
        if !accepts_new(w.nodes[i].dp[s]) {
            continue;
        }
        for &j in &others {
            if accepts_new(w.nodes[j].dp[s]) {
                let msg = format!(
                    "S1 violated: slot {s} accepts new flows at nodes {} (state {}) and {} (state {})",
                    i + 1,
                    w.nodes[i].dp[s],
                    j + 1,
                    w.nodes[j].dp[s]
                );
                w.fail(msg);
                return;
            }
        }
    }
}

/// S2 oracle: a lease until `until` (node `i`'s clock) is justified only if a
/// quorum of voters (i included) demonstrably received one of i's datagrams
/// sent no earlier than `until - L` and got an answer back to i.
pub fn s2_lease(w: &mut World, i: usize, until: u64) {
    // Vouchers size the lease by their own promise horizons; allow the
    // largest any node runs with (the S1 check is the exact one).
    let dead_after = w.max_horizon_seen;
    let lease = quorum::lease_ns(dead_after) as i128;
    let ppm = w.nodes[i].ppm as i128;
    let lease_real = (lease * 1_000_000 / (1_000_000 + ppm)) as u64;
    let threshold = w.real_of(i, until).saturating_sub(lease_real + 2);
    let n = w.nodes.len();
    let count = 1
        + (0..n)
            .filter(|&j| j != i && w.rt[i][j] >= threshold)
            .count();
    if count < quorum::needed(n) {
        let msg = format!(
            "S2 violated: node {} extended its lease with only {count} voters in contact",
            i + 1
        );
        w.fail(msg);
    }
}

/// S4 in steady state: one epoch and map everywhere, every bucket served by
/// exactly its owner, no open handoffs, balance within one bucket of the
/// weight share, standbys idle unless an active is missing.
pub fn steady(w: &World, exclude: &[usize]) -> Result<(), String> {
    let running: Vec<usize> = (0..w.nodes.len())
        .filter(|i| !exclude.contains(i) && w.nodes[*i].node.is_some())
        .collect();
    let Some(first) = running.first() else {
        return Err("nothing running".into());
    };
    let Some(n0) = w.nodes[*first].node.as_ref() else {
        return Err("gone".into());
    };
    let st = n0.cluster_state();
    let digest = n0.digest();
    for &i in &running {
        let Some(n) = w.nodes[i].node.as_ref() else {
            continue;
        };
        if n.cluster_state().epoch != st.epoch || n.digest() != digest {
            return Err(format!(
                "node {} at epoch {} while node {} at epoch {}",
                i + 1,
                n.cluster_state().epoch,
                first + 1,
                st.epoch
            ));
        }
        let id = i as u8 + 1;
        let status = n.status(crate::time::Time(w.local(i, w.now)));
        if !status.converged {
            return Err(format!("node {id} not converged"));
        }
        if !st.participates(id) {
            return Err(format!(
                "node {id} not participating: {:?}",
                st.member(id).map(|m| m.standing)
            ));
        }
        if st.member(id).map(|m| m.standing) != Some(Standing::Active) {
            return Err(format!(
                "node {id} is {:?}",
                st.member(id).map(|m| m.standing)
            ));
        }
        if w.nodes[i].lease <= w.local(i, w.now) && w.scenario.roles[i] != Role::Witness {
            return Err(format!("node {id} has no lease"));
        }
        for s in 0..st.owner.len() {
            let want = if st.owner[s] == id { OWNED } else { NOT_OWNED };
            if w.nodes[i].dp[s] != want {
                return Err(format!(
                    "node {id} slot {s} state {} want {want}",
                    w.nodes[i].dp[s]
                ));
            }
        }
    }
    if st.any_prev() {
        return Err("handoffs still open".into());
    }
    let serving = st.serving();
    let total: u64 = serving.iter().map(|&(_, w)| w as u64).sum();
    if !serving.is_empty() && st.owner[..st.buckets as usize].contains(&0) {
        return Err("unowned bucket".into());
    }
    for &(id, weight) in &serving {
        let share = st.buckets as f64 * weight as f64 / total as f64;
        let c = st.buckets_of(id) as f64;
        if (c - share).abs() >= 1.0 {
            return Err(format!(
                "S4 balance: member {id} owns {c}, share {share:.2}"
            ));
        }
    }
    let actives_missing = st
        .members
        .iter()
        .any(|m| m.role == Role::Active && m.standing != Standing::Active);
    if !actives_missing
        && st
            .members
            .iter()
            .any(|m| m.role == Role::Standby && st.buckets_of(m.id) > 0)
    {
        return Err("standby owns buckets while all actives are up".into());
    }
    Ok(())
}

/// Crashes one active member of a converged cluster and checks S7 (every
/// bucket served again by a survivor within `dead_after + 2 heartbeats`) and
/// S5 (only its buckets move). Returns the failover time.
pub fn clean_crash(w: &mut World) -> Result<Option<u64>, String> {
    let n = w.nodes.len();
    let before = w.some_state(&[]).ok_or("no state")?;
    let victim =
        (0..n).find(|&i| w.scenario.roles[i] == Role::Active && before.buckets_of(i as u8 + 1) > 0);
    let Some(victim) = victim else {
        return Ok(None);
    };
    let cfg = w.scenario.config(0);
    let bound = cfg.dead_after_ns + 2 * cfg.heartbeat_interval_ns;
    // Let the crash fall at a random point of the heartbeat cycle.
    let t = w.now + w.rng.range(0, cfg.heartbeat_interval_ns);
    w.run_until(t);
    let t_crash = w.now;
    w.apply(Action::Crash(victim));
    let buckets = w.scenario.buckets as usize;
    let served_at = loop {
        let all = (0..buckets).all(|s| (0..n).any(|i| i != victim && w.serving(i, s)));
        if all {
            break w.now;
        }
        if w.now > t_crash + 3 * bound {
            break w.now;
        }
        if let Some(v) = &w.violation {
            return Err(v.clone());
        }
        let next = w.now + MS / 2;
        w.run_until(next);
    };
    let failover = served_at - t_crash;
    // Skew may stretch dead_after by 1%; the network adds a few delays.
    let slack = cfg.dead_after_ns / 100 + 5 * MS;
    if failover > bound + slack {
        if w.trace {
            w.dump();
        }
        return Err(format!(
            "S7 violated: buckets of crashed node {} served again after {} ms (bound {} ms)",
            victim + 1,
            failover / MS,
            bound / MS
        ));
    }
    let deadline = w.now + 5000 * MS;
    w.converge(deadline, &[victim])?;
    let after = w.some_state(&[victim]).ok_or("no state")?;
    s5_after_crash(&before, &after, victim as u8 + 1, buckets)?;
    Ok(Some(failover))
}

/// S5 after member `gone` crashed: only its buckets move. With unequal
/// weights the balance bound (S4: every member within one bucket of its
/// share) can need more buckets than the departed one freed (shares grow
/// by different amounts, and several survivors' floors rise past their
/// counts); then, and only then, a survivor above its new range hands the
/// missing ones over, at most one bucket each.
fn s5_after_crash(
    before: &crate::assign::ClusterState,
    after: &crate::assign::ClusterState,
    gone: u8,
    buckets: usize,
) -> Result<(), String> {
    // The least the survivors must gain to reach the floor of their new
    // weight share; what the departed member freed covers part of it.
    let freed = before.buckets_of(gone);
    let serving: Vec<(u8, u64)> = after
        .members
        .iter()
        .filter(|m| m.id != gone && after.buckets_of(m.id) > 0)
        .map(|m| (m.id, m.weight as u64))
        .collect();
    let total: u64 = serving.iter().map(|&(_, w)| w).sum::<u64>().max(1);
    let needed: usize = serving
        .iter()
        .map(|&(id, w)| {
            let floor = (buckets as u64 * w / total) as usize;
            floor.saturating_sub(before.buckets_of(id))
        })
        .sum();
    let forced = needed.saturating_sub(freed);
    let mut lost: std::collections::BTreeMap<u8, usize> = Default::default();
    for b in 0..buckets {
        if before.owner[b] != after.owner[b] && before.owner[b] != gone && before.owner[b] != 0 {
            *lost.entry(before.owner[b]).or_default() += 1;
        }
    }
    let moved: usize = lost.values().sum();
    if moved > forced || lost.values().any(|&n| n > 1) {
        let (b, from, to) = (0..buckets)
            .find(|&b| {
                before.owner[b] != after.owner[b] && before.owner[b] != gone && before.owner[b] != 0
            })
            .map(|b| (b, before.owner[b], after.owner[b]))
            .unwrap_or_default();
        return Err(format!(
            "S5 violated: bucket {b} moved from surviving {from} to {to} when {gone} crashed ({moved} moved between survivors, {forced} forced by balance)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::s5_after_crash;
    use crate::assign::{ClusterState, MemberRec, Standing};
    use crate::config::Role;

    fn state(owner: &[u8], weights: &[u32]) -> ClusterState {
        ClusterState {
            epoch: 1,
            members: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| MemberRec {
                    id: i as u8 + 1,
                    role: Role::Active,
                    standing: Standing::Active,
                    incarnation: 1,
                    weight,
                    rebalance_seen: 0,
                    ever_joined: true,
                })
                .collect(),
            buckets: owner.len() as u32,
            owner: owner.to_vec(),
            prev: vec![Vec::new(); owner.len()],
            priorities: Vec::new(),
        }
    }

    #[test]
    fn s5_allows_only_the_moves_balance_forces() {
        // Equal weights: member 3's buckets go to 1 and 2, nothing else moves.
        let before = state(&[1, 1, 2, 2, 3, 3], &[1, 1, 1]);
        let after = state(&[1, 1, 2, 2, 1, 2], &[1, 1, 1]);
        assert!(s5_after_crash(&before, &after, 3, 6).is_ok());
        // The same failure, but a survivor's bucket moved too: refused.
        let needless = state(&[1, 2, 2, 2, 1, 1], &[1, 1, 1]);
        assert!(s5_after_crash(&before, &needless, 3, 6).is_err());
        // Weights 3:1:1 over 5 buckets, member 2 (one bucket) fails: member
        // 1's floor rises from 3 to 3 (5*3/4), member 3's from 1 to 1; the
        // one freed bucket covers it and nothing else may move.
        let before = state(&[1, 1, 1, 2, 3], &[3, 1, 1]);
        let forced_none = state(&[1, 1, 1, 3, 3], &[3, 1, 1]);
        assert!(s5_after_crash(&before, &forced_none, 2, 5).is_ok());
        let stolen = state(&[1, 1, 3, 1, 3], &[3, 1, 1]);
        assert!(s5_after_crash(&before, &stolen, 2, 5).is_err());
    }
}
