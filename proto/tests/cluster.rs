//! Small deterministic clusters driven by hand (no simulator feature): the
//! agent-facing behaviour of `Node`.

use xnlb_common::slot_state::{NOT_OWNED, OWNED};
use xnlb_proto::{Config, Event, MemberConfig, Node, NodeState, Role, Time};

const MS: u64 = 1_000_000;

struct Cluster {
    nodes: Vec<Option<Node>>,
    now: u64,
    states: Vec<Vec<u8>>,
    leases: Vec<u64>,
}

impl Cluster {
    fn new(roles: &[Role], buckets: u32) -> Cluster {
        let members: Vec<MemberConfig> = roles
            .iter()
            .enumerate()
            .map(|(i, &role)| MemberConfig {
                id: i as u8 + 1,
                role,
                weight: 100,
                addrs: 1,
            })
            .collect();
        let nodes = (0..roles.len())
            .map(|i| {
                let mut c = Config::with_defaults(i as u8 + 1, members.clone());
                c.buckets = buckets;
                Some(Node::new(c, Time(0), 1).expect("valid config"))
            })
            .collect();
        Cluster {
            nodes,
            now: 0,
            states: vec![vec![NOT_OWNED; buckets as usize]; roles.len()],
            leases: vec![0; roles.len()],
        }
    }

    /// Runs in 1 ms steps with instant delivery.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += MS;
            let now = Time(self.now);
            let mut mail = Vec::new();
            for (i, n) in self.nodes.iter_mut().enumerate() {
                let Some(n) = n else { continue };
                if n.poll_timeout().is_some_and(|t| t <= now) {
                    n.handle_timeout(now);
                }
                // The data plane reports its releasing slots empty at once.
                if self.states[i].contains(&xnlb_common::slot_state::RELEASING) {
                    n.report_tracked_flows(now, 0);
                }
                while let Some(e) = n.poll_event() {
                    match e {
                        Event::Install { states, .. } => self.states[i] = states,
                        Event::Lease { until } => self.leases[i] = until.0,
                        _ => {}
                    }
                }
                while let Some(t) = n.poll_transmit() {
                    mail.push(t);
                }
            }
            for t in mail {
                if let Some(Some(n)) = self.nodes.get_mut(t.to as usize - 1) {
                    n.handle_datagram(now, t.link, &t.bytes);
                }
            }
        }
    }

    fn owners(&self, bucket: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.states[i][bucket] == OWNED && self.leases[i] > self.now)
            .collect()
    }
}

#[test]
fn three_nodes_form_a_cluster_and_split_the_buckets() {
    let mut c = Cluster::new(&[Role::Active; 3], 4096);
    c.run(1000);
    for b in 0..4096 {
        assert_eq!(c.owners(b).len(), 1, "bucket {b}");
    }
    let s = c.nodes[0]
        .as_ref()
        .map(|n| n.status(Time(c.now)))
        .expect("running");
    assert_eq!(s.state, NodeState::Active);
    assert!(s.converged);
    assert!(s.quorum.has);
    assert!((1365..=1366).contains(&s.buckets_owned));
    assert!(s.to_json().contains("\"state\": \"active\""));
}

#[test]
fn a_crashed_node_is_replaced_within_dead_after_plus_two_heartbeats() {
    let mut c = Cluster::new(&[Role::Active; 3], 1024);
    c.run(1000);
    let owners_before: Vec<Vec<usize>> = (0..1024).map(|b| c.owners(b)).collect();
    c.nodes[1] = None;
    c.states[1] = vec![NOT_OWNED; 1024];
    let before = c.now;
    while c.now < before + 400 * MS {
        c.run(1);
        if (0..1024).all(|b| c.owners(b).len() == 1) {
            break;
        }
    }
    assert!(
        c.now - before <= 350 * MS,
        "took {} ms",
        (c.now - before) / MS
    );
    c.run(500);
    for (b, owner) in owners_before.iter().enumerate() {
        if owner != &vec![1] {
            assert_eq!(&c.owners(b), owner, "bucket {b} of a survivor moved");
        }
    }
}

#[test]
fn a_witness_votes_but_owns_nothing() {
    let mut c = Cluster::new(&[Role::Active, Role::Active, Role::Witness], 256);
    c.run(1000);
    assert!((0..256).all(|b| !c.owners(b).contains(&2)));
    c.nodes[1] = None;
    c.states[1] = vec![NOT_OWNED; 256];
    c.run(1000);
    assert!(
        (0..256).all(|b| c.owners(b) == vec![0]),
        "node 1 serves alone with the witness's vote"
    );
}

#[test]
fn a_lone_node_without_quorum_never_serves() {
    let mut c = Cluster::new(&[Role::Active; 3], 64);
    c.nodes[1] = None;
    c.nodes[2] = None;
    c.run(2000);
    assert!((0..64).all(|b| c.owners(b).is_empty()));
    let s = c.nodes[0]
        .as_ref()
        .map(|n| n.status(Time(c.now)))
        .expect("running");
    assert!(!s.quorum.has);
}

#[test]
fn drain_then_resume_moves_buckets_away_and_back() {
    let mut c = Cluster::new(&[Role::Active; 3], 300);
    c.run(1000);
    let t = Time(c.now);
    if let Some(n) = c.nodes[2].as_mut() {
        n.drain(t, Some(0));
    }
    c.run(1000);
    assert!((0..300).all(|b| c.owners(b).len() == 1 && c.owners(b)[0] != 2));
    let s = c.nodes[2]
        .as_ref()
        .map(|n| n.status(Time(c.now)))
        .expect("running");
    assert_eq!(s.state, NodeState::Drained);
    let t = Time(c.now);
    if let Some(n) = c.nodes[2].as_mut() {
        n.resume(t);
    }
    c.run(1000);
    let s = c.nodes[2]
        .as_ref()
        .map(|n| n.status(Time(c.now)))
        .expect("running");
    let owned = (0..300).filter(|&b| c.owners(b) == vec![2]).count();
    assert_eq!(owned, 100, "{s:?}");
}
