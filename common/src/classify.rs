//! Which rule a VIP packet falls under, and which slot decides its verdict.
//!
//! Shared by the XDP program (per packet) and the agent (`xnlb owner`), so
//! the answer the CLI gives is the one the kernel acts on.

use crate::hash::bucket_of;
use crate::layout::{affinity, ipproto, mode, proto_mask, single_slot_index, Vip, MAX_RULES};

/// The outcome of the rule scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    /// [`mode`] of the matching rule or of the VIP default.
    pub mode: u8,
    /// [`affinity`] the hash uses.
    pub affinity: u8,
    /// Single slot, meaningful for [`mode::SINGLE`].
    pub slot: u16,
}

impl RuleMatch {
    /// Index in [`crate::Table::state`] of this packet's slot.
    #[inline(always)]
    pub fn slot_index(&self, hash: u64, buckets: u32) -> usize {
        if self.mode == mode::SINGLE {
            single_slot_index(self.slot)
        } else {
            bucket_of(hash, buckets) as usize
        }
    }
}

/// Index of the first rule of `vip` matching `proto` and `dport` (host
/// order); `None` if the VIP's default applies. `xnlb explain` names it.
#[inline(always)]
pub fn rule_index(vip: &Vip, proto: u8, dport: u16) -> Option<usize> {
    let bit = if proto == ipproto::TCP {
        proto_mask::TCP
    } else if proto == ipproto::UDP {
        proto_mask::UDP
    } else {
        0
    };
    if bit != 0 {
        let n = vip.nrules as usize;
        for i in 0..MAX_RULES {
            if i >= n {
                break;
            }
            let r = &vip.rules[i];
            if r.proto_mask & bit != 0 && dport >= r.port_lo && dport <= r.port_hi {
                return Some(i);
            }
        }
    }
    None
}

/// First rule of `vip` matching `proto` and `dport` (host order), else the
/// VIP's default (affinity `none`: ICMP echo hashes on source and echo id).
#[inline(always)]
pub fn match_rule(vip: &Vip, proto: u8, dport: u16) -> RuleMatch {
    match rule_index(vip, proto, dport) {
        Some(i) if i < MAX_RULES => {
            let r = &vip.rules[i];
            RuleMatch {
                mode: r.mode,
                affinity: r.affinity,
                slot: r.slot,
            }
        }
        _ => RuleMatch {
            mode: vip.default_mode,
            affinity: affinity::NONE,
            slot: vip.default_slot,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Rule, MAX_BUCKETS};

    fn vip() -> Vip {
        let mut v = Vip {
            nrules: 2,
            default_mode: mode::SINGLE,
            default_slot: 7,
            ..Vip::default()
        };
        v.rules[0] = Rule {
            proto_mask: proto_mask::TCP,
            mode: mode::MULTIPLE,
            affinity: affinity::SINGLE,
            port_lo: 80,
            port_hi: 80,
            ..Rule::default()
        };
        v.rules[1] = Rule {
            proto_mask: proto_mask::TCP | proto_mask::UDP,
            mode: mode::DISABLED,
            port_lo: 8000,
            port_hi: 8100,
            ..Rule::default()
        };
        v
    }

    #[test]
    fn first_matching_rule_wins_and_default_catches_the_rest() {
        let v = vip();
        assert_eq!(match_rule(&v, ipproto::TCP, 80).mode, mode::MULTIPLE);
        assert_eq!(match_rule(&v, ipproto::TCP, 80).affinity, affinity::SINGLE);
        assert_eq!(match_rule(&v, ipproto::UDP, 80).mode, mode::SINGLE);
        assert_eq!(match_rule(&v, ipproto::UDP, 8100).mode, mode::DISABLED);
        assert_eq!(match_rule(&v, ipproto::TCP, 8101).mode, mode::SINGLE);
        assert_eq!(match_rule(&v, ipproto::ICMP, 0).slot, 7);
    }

    #[test]
    fn single_mode_uses_the_slot_after_the_buckets() {
        let m = match_rule(&vip(), ipproto::ICMP, 0);
        assert_eq!(m.slot_index(0, 4096), MAX_BUCKETS as usize + 7);
    }
}
