//! Everything the XDP program and userspace must agree on, defined once.
//!
//! This crate is `no_std` and dependency-free so that the very same source is
//! compiled into the eBPF object and into the agent: the map layout
//! ([`layout`]), the flow hash ([`hash`]), the rule lookup ([`classify`])
//! and the protocol numbers both sides read or write ([`wire`]).
//! Golden vectors in the tests pin the hash so that nodes built from
//! different versions keep agreeing, and an integration test proves the
//! compiled eBPF code computes the same values through `BPF_PROG_TEST_RUN`.
#![no_std]

pub mod bench;
pub mod classify;
pub mod forward;
pub mod hash;
pub mod layout;
pub mod lease_clock;
pub mod verdict;
pub mod wire;

pub use classify::{compile_rules, match_rule, rule_index, scan_rules, RuleMatch};
pub use forward::{forward_target, instead_of_straight_back, MAX_HOPS};
pub use hash::{bucket_of, flow_hash, seed_from_name, FlowWords};
pub use layout::*;
pub use verdict::{holding_verdict, slot_verdict, standing, PacketKind, SlotVerdict, Standing};
pub use wire::*;
