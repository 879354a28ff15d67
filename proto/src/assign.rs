//! The replicated cluster state and the deterministic bucket assignment.
//!
//! Every node holds the same [`ClusterState`] for an epoch because every node
//! applies the same [`Op`]s, in order, with the same pure functions here. Only
//! the ops travel (a few bytes); the 4096..16384-slot map never needs to.
//!
//! Assignment rules (DESIGN 3, S4/S5):
//! * *Serving set*: active members in standing `Active`, plus as many standbys
//!   (lowest id first) as there are actives that are absent (failed, left or
//!   never joined): standbys stand in one-for-one for failed actives only.
//! * *Targets*: each serving member's count is `floor` or `ceil` of its
//!   weight-proportional share; among members whose share has a fraction,
//!   those already holding the larger count keep it first (stickiness).
//! * *Sticky moves*: members above target give up their highest buckets; the
//!   pool (those, plus buckets of members no longer serving) is dealt in
//!   ascending order to members below target. Nothing else moves, so a
//!   failure moves only the departed member's buckets and a join moves only
//!   the newcomer's share.
//! * `Rebalance` replaces this with the canonical layout (contiguous ranges in
//!   id order), the only operation that may move buckets between members that
//!   stay (besides weight changes, whose targets shift).
//! * A slot moving away from a member whose host may still hold connections
//!   in it (it participates, or it was fenced) adds it to the slot's `prev`
//!   set: that member keeps the connections its kernel holds (`RELEASING`)
//!   until it reports its sockets gone (or drain_timeout), and the owner
//!   accepts only connections its own kernel holds (`ACQUIRING`) until the
//!   set is empty. A set, not one id: a slot that moves again before the
//!   first handoff ended keeps every earlier holder (S6).

use crate::config::{Config, Role};
use crate::wire::Op;
use bincode::{Decode, Encode};

/// A member's standing in the replicated state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Standing {
    /// Never joined since the cluster formed.
    Absent,
    /// Declared failed by a quorum; must be admitted again.
    Fenced,
    /// Left gracefully (`stop`).
    Left,
    /// Participates and may own slots.
    Active,
    /// Participates, handing its slots off, then `Drained`.
    Draining,
    /// Participates and owns nothing.
    Drained,
    /// Participates, handing its slots off, then `Left`.
    Leaving,
}

impl Standing {
    /// Whether the member takes part in barriers (its data plane must confirm
    /// each epoch before others acquire slots).
    pub fn participates(self) -> bool {
        matches!(
            self,
            Standing::Active | Standing::Draining | Standing::Drained | Standing::Leaving
        )
    }
}

/// One member's replicated record.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct MemberRec {
    /// Member id.
    pub id: u8,
    /// Its role (from config; replicated so the state is self-contained).
    pub role: Role,
    /// Its standing.
    pub standing: Standing,
    /// Incarnation it was admitted with.
    pub incarnation: u64,
    /// Weight in use.
    pub weight: u32,
    /// Last rebalance request of this member already applied.
    pub rebalance_seen: u32,
    /// Whether it was ever admitted (for manual failback).
    pub ever_joined: bool,
}

/// The replicated state of one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ClusterState {
    /// The epoch number.
    pub epoch: u64,
    /// Members in config order.
    pub members: Vec<MemberRec>,
    /// Number of buckets (the first `buckets` entries of `owner`).
    pub buckets: u32,
    /// Owner id per slot (0 = nobody): buckets, then single slots.
    pub owner: Vec<u8>,
    /// Previous owners still handing the slot off, ascending ids (empty:
    /// none). The same for every node (replicated), so each holder knows to
    /// keep its connections and the owner knows to look its own up.
    pub prev: Vec<Vec<u8>>,
    /// Single-slot priority lists (from config).
    pub priorities: Vec<Vec<u8>>,
}

impl ClusterState {
    /// The state before any epoch: nobody participates, nothing is owned.
    pub fn genesis(cfg: &Config) -> ClusterState {
        let slots = cfg.slots();
        ClusterState {
            epoch: 0,
            members: cfg
                .members
                .iter()
                .map(|m| MemberRec {
                    id: m.id,
                    role: m.role,
                    standing: Standing::Absent,
                    incarnation: 0,
                    weight: m.weight,
                    rebalance_seen: 0,
                    ever_joined: false,
                })
                .collect(),
            buckets: cfg.buckets,
            owner: vec![0; slots],
            prev: vec![Vec::new(); slots],
            priorities: cfg.single_slots.clone(),
        }
    }

    /// Serialized form, for snapshots, digests and persistence.
    pub fn to_bytes(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    /// Parses [`Self::to_bytes`] output (from the network: never panics).
    pub fn from_bytes(bytes: &[u8]) -> Option<ClusterState> {
        let cfg = bincode::config::standard().with_limit::<{ 1 << 20 }>();
        let (s, used): (ClusterState, usize) = bincode::decode_from_slice(bytes, cfg).ok()?;
        (used == bytes.len() && s.owner.len() == s.prev.len()).then_some(s)
    }

    /// Whether `id` is a previous owner of any slot (its handoff is open).
    pub fn is_prev(&self, id: u8) -> bool {
        self.prev.iter().any(|p| p.contains(&id))
    }

    /// Whether any slot has a handoff open.
    pub fn any_prev(&self) -> bool {
        self.prev.iter().any(|p| !p.is_empty())
    }

    /// A short digest identifying this exact state: two nodes with equal
    /// (epoch, digest) have the same map.
    pub fn digest(&self) -> u64 {
        u64::from_le_bytes(crate::auth::short_digest(&self.to_bytes()))
    }

    /// The record of member `id`.
    pub fn member(&self, id: u8) -> Option<&MemberRec> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: u8) -> Option<&mut MemberRec> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    /// Whether `id` participates in this state.
    pub fn participates(&self, id: u8) -> bool {
        self.member(id).is_some_and(|m| m.standing.participates())
    }

    /// Buckets (not single slots) owned by `id`.
    pub fn buckets_of(&self, id: u8) -> usize {
        self.owner[..self.buckets as usize]
            .iter()
            .filter(|&&o| o == id)
            .count()
    }

    /// Applies one epoch's operations and returns the next state.
    pub fn apply(&self, ops: &[Op]) -> ClusterState {
        let mut next = self.clone();
        next.epoch += 1;
        let mut canonical = false;
        for op in ops {
            match *op {
                Op::Fence { id } => {
                    // Its buckets move, but its host may live on (only the
                    // agent died, froze or was cut off) with connections
                    // its kernel still serves: it stays the previous owner
                    // (`prev`) of what it held, so the new owners accept
                    // only connections their own kernels hold, until it
                    // rejoins and reports its sockets gone, or until the
                    // coordinator's drain_timeout (`Op::HandoffDone`).
                    if let Some(m) = next.member_mut(id) {
                        m.standing = Standing::Fenced;
                    }
                }
                Op::Admit {
                    id,
                    incarnation,
                    weight,
                    drained,
                } => {
                    if let Some(m) = next.member_mut(id) {
                        if m.standing.participates() {
                            // A member restarted while taking part: the
                            // record follows its new life (a node that lost
                            // its state serves only records of the life it
                            // runs, see `Node::self_participates`); nothing
                            // else changes, nothing moves.
                            m.incarnation = m.incarnation.max(incarnation);
                        } else {
                            m.standing = if drained || m.role == Role::Witness {
                                Standing::Drained
                            } else {
                                Standing::Active
                            };
                            m.incarnation = incarnation;
                            m.weight = weight;
                            m.ever_joined = true;
                        }
                    }
                }
                Op::Drain { id } => next.set_standing_if(id, Standing::Active, Standing::Draining),
                Op::Resume { id } => {
                    next.set_standing_if(id, Standing::Draining, Standing::Active);
                    next.set_standing_if(id, Standing::Drained, Standing::Active);
                }
                Op::Leave { id } => {
                    if next.participates(id) {
                        if let Some(m) = next.member_mut(id) {
                            m.standing = Standing::Leaving;
                        }
                    }
                }
                Op::HandoffDone { id } => {
                    for p in next.prev.iter_mut() {
                        p.retain(|&h| h != id);
                    }
                    next.set_standing_if(id, Standing::Draining, Standing::Drained);
                    next.set_standing_if(id, Standing::Leaving, Standing::Left);
                }
                Op::SetWeight { id, weight } => {
                    if let Some(m) = next.member_mut(id) {
                        m.weight = weight;
                    }
                }
                Op::Rebalance { id, request } => {
                    if let Some(m) = next.member_mut(id) {
                        m.rebalance_seen = m.rebalance_seen.max(request);
                    }
                    canonical = true;
                }
            }
        }
        next.assign(canonical);
        next
    }

    fn set_standing_if(&mut self, id: u8, from: Standing, to: Standing) {
        if let Some(m) = self.member_mut(id) {
            if m.standing == from {
                m.standing = to;
            }
        }
    }

    /// Members that serve buckets, with their weights, in id order.
    pub fn serving(&self) -> Vec<(u8, u32)> {
        let mut out: Vec<(u8, u32)> = self
            .members
            .iter()
            .filter(|m| m.role == Role::Active && m.standing == Standing::Active)
            .map(|m| (m.id, m.weight))
            .collect();
        let mut standbys: Vec<&MemberRec> = self
            .members
            .iter()
            .filter(|m| m.role == Role::Standby && m.standing == Standing::Active)
            .collect();
        standbys.sort_by_key(|m| m.id);
        // One-for-one: the k-th standby stands in for the k-th failed active
        // with that active's weight, so nobody else's share changes.
        let mut failed: Vec<&MemberRec> = self
            .members
            .iter()
            .filter(|m| {
                m.role == Role::Active
                    && matches!(
                        m.standing,
                        Standing::Absent | Standing::Fenced | Standing::Left
                    )
            })
            .collect();
        failed.sort_by_key(|m| m.id);
        out.extend(
            standbys
                .iter()
                .zip(failed.iter())
                .map(|(s, f)| (s.id, f.weight)),
        );
        out.sort_by_key(|&(id, _)| id);
        out
    }

    /// Whether member `id`'s host may still hold connections: it takes
    /// part, or it was fenced (its agent is gone, its host may not be).
    pub fn may_hold_connections(&self, id: u8) -> bool {
        self.member(id)
            .is_some_and(|m| m.standing.participates() || m.standing == Standing::Fenced)
    }

    /// Moves slot `s` to `new`, adding the old owner to the slot's previous
    /// owners if it may still hold connections in it. Earlier holders stay
    /// (their connections are as alive as before this move); the new owner
    /// leaves the set (as owner it accepts its own connections anyway).
    fn move_slot(&mut self, s: usize, new: u8) {
        let old = self.owner[s];
        if old == new {
            return;
        }
        let mut prev = std::mem::take(&mut self.prev[s]);
        if old != 0 && self.may_hold_connections(old) && !prev.contains(&old) {
            prev.push(old);
        }
        prev.retain(|&h| h != new && self.may_hold_connections(h));
        prev.sort_unstable();
        self.prev[s] = prev;
        self.owner[s] = new;
    }

    fn assign(&mut self, canonical: bool) {
        let n = self.buckets as usize;
        let serving = self.serving();
        let targets = targets(n, &serving, |id| self.buckets_of(id), canonical);
        if canonical {
            let mut b = 0;
            for (&(id, _), &t) in serving.iter().zip(&targets) {
                for _ in 0..t {
                    self.move_slot(b, id);
                    b += 1;
                }
            }
            for s in b..n {
                self.move_slot(s, 0);
            }
        } else {
            let mut counts: Vec<usize> =
                serving.iter().map(|&(id, _)| self.buckets_of(id)).collect();
            let index = |id: u8| serving.iter().position(|&(m, _)| m == id);
            let mut pool = Vec::new();
            // Members above target give up their highest buckets.
            for s in (0..n).rev() {
                match index(self.owner[s]) {
                    Some(i) if counts[i] > targets[i] => {
                        counts[i] -= 1;
                        pool.push(s);
                    }
                    Some(_) => {}
                    None => pool.push(s),
                }
            }
            pool.sort_unstable();
            let mut next = pool.into_iter();
            for (i, &(id, _)) in serving.iter().enumerate() {
                while counts[i] < targets[i] {
                    match next.next() {
                        Some(s) => {
                            self.move_slot(s, id);
                            counts[i] += 1;
                        }
                        None => break,
                    }
                }
            }
            for s in next {
                self.move_slot(s, 0);
            }
        }
        // Single slots: first member of the priority list that is Active.
        for (i, list) in self.priorities.clone().iter().enumerate() {
            let owner = list
                .iter()
                .copied()
                .find(|&id| {
                    self.member(id)
                        .is_some_and(|m| m.role != Role::Witness && m.standing == Standing::Active)
                })
                .unwrap_or(0);
            self.move_slot(n + i, owner);
        }
    }
}

/// Per-member bucket targets: `floor` or `ceil` of the weight share, summing
/// to `n`. With `canonical` the extra buckets go by largest remainder then
/// id; otherwise members already holding the `ceil` count keep it first.
pub fn targets(
    n: usize,
    serving: &[(u8, u32)],
    current: impl Fn(u8) -> usize,
    canonical: bool,
) -> Vec<usize> {
    let total: u64 = serving.iter().map(|&(_, w)| w as u64).sum();
    if total == 0 {
        return vec![0; serving.len()];
    }
    let mut t: Vec<usize> = serving
        .iter()
        .map(|&(_, w)| (n as u64 * w as u64 / total) as usize)
        .collect();
    let extra = n - t.iter().sum::<usize>();
    let mut cand: Vec<(bool, u64, u8, usize)> = serving
        .iter()
        .enumerate()
        .filter_map(|(i, &(id, w))| {
            let rem = n as u64 * w as u64 % total;
            (rem > 0).then(|| (!canonical && current(id) > t[i], rem, id, i))
        })
        .collect();
    cand.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    for c in cand.iter().take(extra) {
        t[c.3] += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemberConfig;

    fn cfg(roles: &[Role], buckets: u32) -> Config {
        let members = roles
            .iter()
            .enumerate()
            .map(|(i, &role)| MemberConfig {
                id: i as u8 + 1,
                role,
                weight: 100,
                addrs: 1,
            })
            .collect();
        let mut c = Config::with_defaults(1, members);
        c.buckets = buckets;
        c
    }

    fn admit(id: u8) -> Op {
        Op::Admit {
            id,
            incarnation: 1,
            weight: 100,
            drained: false,
        }
    }

    fn moved(a: &ClusterState, b: &ClusterState) -> Vec<(usize, u8, u8)> {
        (0..a.buckets as usize)
            .filter(|&s| a.owner[s] != b.owner[s])
            .map(|s| (s, a.owner[s], b.owner[s]))
            .collect()
    }

    fn assert_balanced(s: &ClusterState) {
        let serving = s.serving();
        let total: u64 = serving.iter().map(|&(_, w)| w as u64).sum();
        for &(id, w) in &serving {
            let share = s.buckets as f64 * w as f64 / total as f64;
            let c = s.buckets_of(id) as f64;
            assert!(
                (c - share).abs() < 1.0,
                "member {id} owns {c}, share {share}"
            );
        }
        assert!(s.owner[..s.buckets as usize].iter().all(|&o| o != 0));
    }

    #[test]
    fn failure_moves_only_the_departed_members_buckets() {
        let c = cfg(&[Role::Active; 5], 4096);
        let s = ClusterState::genesis(&c).apply(&(1..=5).map(admit).collect::<Vec<_>>());
        assert_balanced(&s);
        let after = s.apply(&[Op::Fence { id: 3 }]);
        assert_balanced(&after);
        for (_, from, to) in moved(&s, &after) {
            assert_eq!(from, 3, "only member 3's buckets may move");
            assert_ne!(to, 3);
        }
        assert_eq!(moved(&s, &after).len(), s.buckets_of(3));
        // Its host may still hold connections: the new owners acquire
        // (accept only what their own kernels hold) until it is done.
        for (b, _, _) in moved(&s, &after) {
            assert_eq!(after.prev[b], [3], "bucket {b}");
        }
        let done = after.apply(&[Op::HandoffDone { id: 3 }]);
        assert!(!done.any_prev());
        assert_eq!(done.member(3).map(|m| m.standing), Some(Standing::Fenced));
    }

    #[test]
    fn join_moves_only_what_the_newcomer_needs() {
        let c = cfg(&[Role::Active; 4], 4096);
        let s = ClusterState::genesis(&c).apply(&(1..=3).map(admit).collect::<Vec<_>>());
        let after = s.apply(&[admit(4)]);
        assert_balanced(&after);
        let m = moved(&s, &after);
        assert!(m.iter().all(|&(_, _, to)| to == 4));
        assert_eq!(m.len(), after.buckets_of(4));
        assert!(
            m.iter().all(|&(b, from, _)| after.prev[b] == [from]),
            "graceful moves hand off"
        );
    }

    #[test]
    fn uneven_weights_are_within_one_bucket_and_sticky() {
        let mut c = cfg(&[Role::Active; 6], 1000);
        for (i, m) in c.members.iter_mut().enumerate() {
            m.weight = [1, 7, 13, 100, 333, 10_000][i];
        }
        let mut s = ClusterState::genesis(&c);
        let ops: Vec<Op> = c
            .members
            .iter()
            .map(|m| Op::Admit {
                id: m.id,
                incarnation: 1,
                weight: m.weight,
                drained: false,
            })
            .collect();
        s = s.apply(&ops);
        assert_balanced(&s);
        for victim in [6, 2, 4] {
            let after = s.apply(&[Op::Fence { id: victim }]);
            assert_balanced(&after);
            assert!(moved(&s, &after).iter().all(|&(_, from, _)| from == victim));
            s = after;
        }
    }

    #[test]
    fn standby_replaces_a_failed_active_one_for_one_and_gives_back() {
        let c = cfg(
            &[Role::Active, Role::Active, Role::Standby, Role::Witness],
            4096,
        );
        let s = ClusterState::genesis(&c).apply(&(1..=4).map(admit).collect::<Vec<_>>());
        assert_eq!(s.buckets_of(3), 0, "standby idle while actives are up");
        assert_eq!(s.buckets_of(4), 0, "witness owns nothing");
        let failed = s.apply(&[Op::Fence { id: 2 }]);
        let m = moved(&s, &failed);
        assert!(m.iter().all(|&(_, from, to)| from == 2 && to == 3));
        assert_eq!(failed.buckets_of(3), s.buckets_of(2));
        let back = failed.apply(&[admit(2)]);
        let m = moved(&failed, &back);
        assert!(m.iter().all(|&(_, from, to)| from == 3 && to == 2));
        assert_eq!(back.buckets_of(3), 0);
    }

    #[test]
    fn rebalance_produces_the_canonical_layout_with_handoffs() {
        let c = cfg(&[Role::Active; 3], 12);
        let s = ClusterState::genesis(&c)
            .apply(&[admit(1)])
            .apply(&[admit(2)])
            .apply(&[admit(3)]);
        let r = s.apply(&[Op::Rebalance { id: 1, request: 1 }]);
        assert_eq!(&r.owner[..], &[1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
        for b in 0..12 {
            if s.owner[b] != r.owner[b] {
                // Joins before left holders of their own: they stay too.
                assert!(r.prev[b].contains(&s.owner[b]), "bucket {b}");
            }
        }
    }

    #[test]
    fn drain_hands_off_then_owns_nothing() {
        let c = cfg(&[Role::Active; 3], 30);
        let s = ClusterState::genesis(&c).apply(&(1..=3).map(admit).collect::<Vec<_>>());
        let d = s.apply(&[Op::Drain { id: 2 }]);
        assert_eq!(d.buckets_of(2), 0);
        assert_eq!(d.prev.iter().filter(|p| p.contains(&2)).count(), 10);
        let done = d.apply(&[Op::HandoffDone { id: 2 }]);
        assert!(!done.any_prev());
        assert_eq!(done.member(2).map(|m| m.standing), Some(Standing::Drained));
    }

    #[test]
    fn single_slot_goes_to_first_live_member_of_its_priority() {
        let mut c = cfg(&[Role::Active; 3], 8);
        c.single_slots = vec![vec![2, 1], vec![]];
        let s = ClusterState::genesis(&c).apply(&(1..=3).map(admit).collect::<Vec<_>>());
        assert_eq!(s.owner[8], 2);
        assert_eq!(s.owner[9], 0);
        let f = s.apply(&[Op::Fence { id: 2 }]);
        assert_eq!(f.owner[8], 1);
        assert_eq!(
            f.prev[8],
            [2],
            "the fenced member may still hold connections"
        );
    }

    #[test]
    fn admitting_a_member_that_takes_part_only_records_its_new_life() {
        let c = cfg(&[Role::Active; 3], 12);
        let s = ClusterState::genesis(&c).apply(&(1..=3).map(admit).collect::<Vec<_>>());
        let again = s.apply(&[Op::Admit {
            id: 2,
            incarnation: 9,
            weight: 5,
            drained: true,
        }]);
        assert_eq!(again.owner, s.owner, "nothing moves");
        let m = again.member(2).expect("member 2");
        assert_eq!(
            (m.incarnation, m.weight, m.standing),
            (9, 100, Standing::Active)
        );
    }

    #[test]
    fn a_slot_moved_twice_before_its_handoff_ended_keeps_every_earlier_holder() {
        // 1 owns everything; 2 joins (1 -> 2 hands off), then 2 drains
        // before 1 reported its sockets gone: both may hold connections.
        let c = cfg(&[Role::Active; 2], 8);
        let s = ClusterState::genesis(&c).apply(&[admit(1)]);
        let joined = s.apply(&[admit(2)]);
        let moved_to_2: Vec<usize> = (0..8).filter(|&b| joined.owner[b] == 2).collect();
        assert!(!moved_to_2.is_empty());
        let drained = joined.apply(&[Op::Drain { id: 2 }]);
        for &b in &moved_to_2 {
            assert_eq!(drained.owner[b], 1);
            // 1 owns it again (its own connections are its own), 2 holds.
            assert_eq!(drained.prev[b], [2], "bucket {b}");
        }
        // A third member takes them: 1 and 2 both keep theirs.
        let c3 = cfg(&[Role::Active; 3], 8);
        let s = ClusterState::genesis(&c3).apply(&[admit(1), admit(2)]);
        let a = s.apply(&[Op::Fence { id: 2 }]);
        let b = a.apply(&[admit(3)]);
        let both: Vec<usize> = (0..8)
            .filter(|&x| s.owner[x] == 2 && b.owner[x] == 3)
            .collect();
        assert!(!both.is_empty(), "some of 2's buckets went 2 -> 1 -> 3");
        for &x in &both {
            assert_eq!(b.prev[x], [1, 2], "bucket {x}");
        }
        let done = b.apply(&[Op::HandoffDone { id: 1 }]);
        for &x in &both {
            assert_eq!(done.prev[x], [2], "bucket {x}: only 1 reported done");
        }
        let done = done.apply(&[Op::HandoffDone { id: 2 }]);
        assert!(!done.any_prev());
    }

    #[test]
    fn state_bytes_roundtrip_and_digest_is_stable() {
        let c = cfg(&[Role::Active; 3], 4096);
        let s = ClusterState::genesis(&c).apply(&[admit(1)]);
        let back = ClusterState::from_bytes(&s.to_bytes()).expect("decodes");
        assert_eq!(back, s);
        assert_eq!(back.digest(), s.digest());
        assert!(ClusterState::from_bytes(&[1, 2, 3]).is_none());
    }
}
