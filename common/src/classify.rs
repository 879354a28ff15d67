//! Which rule a VIP packet falls under, and which slot decides its verdict.
//!
//! Shared by the XDP program (per packet) and the agent (`xnlb owner`), so
//! the answer the CLI gives is the one the kernel acts on.

use crate::hash::bucket_of;
use crate::layout::{
    affinity, ipproto, mode, port_map, proto_mask, single_slot_index, PortMap, Vip, MAX_RULES,
    PORT_BLOCK, PORT_BLOCKS,
};

/// The outcome of the rule lookup.
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
///
/// A compiled VIP answers from `map`, its [`PortMap`] ([`compile_rules`]):
/// one load, two for a port in a 256-port range that rules split. An
/// uncompiled one scans its rules ([`scan_rules`]); both give the same
/// answer.
#[inline(always)]
pub fn rule_index(vip: &Vip, map: &PortMap, proto: u8, dport: u16) -> Option<usize> {
    if vip.compiled != 1 {
        return scan_rules(vip, proto, dport);
    }
    let p = port_map::proto_index(proto)?;
    let mut e = map.ports[p][(dport >> 8) as usize];
    if e & port_map::BLOCK != 0 {
        e = map.blocks[(e & port_map::BLOCK_MASK) as usize][(dport & 0xff) as usize];
    }
    // `DEFAULT`, or anything no compiler writes, is the default.
    if e < vip.nrules && (e as usize) < MAX_RULES {
        Some(e as usize)
    } else {
        None
    }
}

/// [`rule_index`] by scanning the rules in order: the definition of first
/// match, and what an uncompiled VIP does.
#[inline(always)]
pub fn scan_rules(vip: &Vip, proto: u8, dport: u16) -> Option<usize> {
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

/// Compiles `vip`'s rules into `map` (its [`PortMap`], the one with its
/// index in [`crate::Table::port_maps`]) from [`scan_rules`] itself, port
/// by port, so the map cannot disagree with first match, and marks the VIP
/// compiled. Identical blocks are shared. Returns false, and leaves the VIP
/// uncompiled (scanned), if its rules split more 256-port ranges than
/// [`PORT_BLOCKS`] hold. Call it again after changing the rules (a VIP
/// built from [`Vip::default`] and never compiled is scanned).
pub fn compile_rules(vip: &mut Vip, map: &mut PortMap) -> bool {
    vip.compiled = 0;
    *map = PortMap::default();
    let mut used = 0;
    for (ports, proto) in map.ports.iter_mut().zip([ipproto::TCP, ipproto::UDP]) {
        for (hi, entry) in ports.iter_mut().enumerate() {
            let mut block = [port_map::DEFAULT; PORT_BLOCK];
            for (lo, e) in block.iter_mut().enumerate() {
                let port = (hi << 8 | lo) as u16;
                *e = scan_rules(vip, proto, port).map_or(port_map::DEFAULT, |i| i as u8);
            }
            if block.iter().all(|&e| e == block[0]) {
                *entry = block[0];
                continue;
            }
            let n = match map.blocks[..used].iter().position(|b| *b == block) {
                Some(n) => n,
                None if used < PORT_BLOCKS => {
                    map.blocks[used] = block;
                    used += 1;
                    used - 1
                }
                None => return false,
            };
            *entry = port_map::BLOCK | n as u8;
        }
    }
    vip.compiled = 1;
    true
}

/// First rule of `vip` matching `proto` and `dport` (host order; `map` is
/// its [`PortMap`]), else the VIP's default (affinity `none`: ICMP echo hashes on source and echo id).
#[inline(always)]
pub fn match_rule(vip: &Vip, map: &PortMap, proto: u8, dport: u16) -> RuleMatch {
    match rule_index(vip, map, proto, dport) {
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
        let mut v = vip();
        let mut m = PortMap::default();
        for compiled in [false, true] {
            if compiled {
                assert!(compile_rules(&mut v, &mut m));
            }
            assert_eq!(match_rule(&v, &m, ipproto::TCP, 80).mode, mode::MULTIPLE);
            assert_eq!(
                match_rule(&v, &m, ipproto::TCP, 80).affinity,
                affinity::SINGLE
            );
            assert_eq!(match_rule(&v, &m, ipproto::UDP, 80).mode, mode::SINGLE);
            assert_eq!(match_rule(&v, &m, ipproto::UDP, 8100).mode, mode::DISABLED);
            assert_eq!(match_rule(&v, &m, ipproto::TCP, 8101).mode, mode::SINGLE);
            assert_eq!(match_rule(&v, &m, ipproto::ICMP, 0).slot, 7);
        }
    }

    #[test]
    fn compiled_lookup_is_first_match_for_every_port() {
        // Rule sets: the test VIP, the kernel tests' six rules, overlapping
        // ranges, port 0 and 65535 edges, one rule per protocol, none.
        let r = |proto_mask, lo, hi, mode| Rule {
            proto_mask,
            mode,
            port_lo: lo,
            port_hi: hi,
            ..Rule::default()
        };
        let both = proto_mask::TCP | proto_mask::UDP;
        let sets: [&[Rule]; 5] = [
            &[
                r(proto_mask::TCP, 80, 80, mode::MULTIPLE),
                r(proto_mask::UDP, 53, 53, mode::MULTIPLE),
                r(proto_mask::TCP, 443, 443, mode::MULTIPLE),
                r(both, 8000, 8100, mode::SINGLE),
                r(both, 9000, 9000, mode::DISABLED),
                r(both, 1, 65535, mode::MULTIPLE),
            ],
            &[
                r(both, 100, 300, mode::SINGLE),
                r(proto_mask::TCP, 0, 200, mode::DISABLED),
                r(proto_mask::UDP, 250, 65535, mode::MULTIPLE),
                r(both, 65535, 65535, mode::SINGLE),
            ],
            &[r(proto_mask::UDP, 0, 65535, mode::MULTIPLE)],
            &[],
            &[
                r(proto_mask::TCP, 22, 22, mode::SINGLE),
                r(proto_mask::TCP, 25, 25, mode::SINGLE),
                r(proto_mask::TCP, 1000, 1000, mode::SINGLE),
                r(proto_mask::TCP, 2000, 2000, mode::SINGLE),
                r(proto_mask::TCP, 3000, 3000, mode::SINGLE),
                r(proto_mask::TCP, 4000, 4000, mode::SINGLE),
            ],
        ];
        for rules in sets {
            let mut v = Vip::default();
            v.rules[..rules.len()].copy_from_slice(rules);
            v.nrules = rules.len() as u8;
            let mut m = PortMap::default();
            assert!(compile_rules(&mut v, &mut m));
            assert_eq!(v.compiled, 1);
            for proto in [ipproto::TCP, ipproto::UDP, ipproto::ICMP, 0] {
                for port in 0..=u16::MAX {
                    assert_eq!(
                        rule_index(&v, &m, proto, port),
                        scan_rules(&v, proto, port),
                        "{rules:?}: proto {proto} port {port}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_vip_splitting_too_many_ranges_is_scanned() {
        let mut v = Vip::default();
        for i in 0..MAX_RULES {
            v.rules[i] = Rule {
                proto_mask: if i % 2 == 0 {
                    proto_mask::TCP
                } else {
                    proto_mask::UDP
                },
                port_lo: (i * 1000 + 7) as u16,
                port_hi: (i * 1000 + 7) as u16,
                ..Rule::default()
            };
        }
        v.nrules = MAX_RULES as u8;
        let mut m = PortMap::default();
        assert!(!compile_rules(&mut v, &mut m));
        assert_eq!(v.compiled, 0);
        assert_eq!(rule_index(&v, &m, ipproto::UDP, 1007), Some(1));
        assert_eq!(rule_index(&v, &m, ipproto::TCP, 1007), None);
        // Fewer rules fit again, and recompiling takes them.
        v.nrules = 4;
        assert!(compile_rules(&mut v, &mut m));
        assert_eq!(v.compiled, 1);
        assert_eq!(rule_index(&v, &m, ipproto::UDP, 1007), Some(1));
        assert_eq!(rule_index(&v, &m, ipproto::UDP, 5007), None);
    }

    #[test]
    fn single_mode_uses_the_slot_after_the_buckets() {
        let m = match_rule(&vip(), &PortMap::default(), ipproto::ICMP, 0);
        assert_eq!(m.slot_index(0, 4096), MAX_BUCKETS as usize + 7);
    }
}
