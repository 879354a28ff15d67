//! The flow hash: which bucket a packet belongs to.
//!
//! Every node must map a flow to the same bucket, whatever its CPU, compiler
//! or xnlb version, so this is a fixed algorithm over explicit little-endian
//! words (not `ahash`, whose output is randomised per process).
//!
//! # Definition (version 1)
//!
//! The flow is six 32-bit words, each the little-endian reading of bytes as
//! they appear on the wire (so the XDP program loads them without swapping):
//!
//! | word | content |
//! |------|---------|
//! | 0..4 | source address, 16 bytes; IPv4 uses word 0 and zeros |
//! | 4    | bytes `[sport_hi, sport_lo, dport_hi, dport_lo]` (network order ports) |
//! | 5    | `proto | family << 8` |
//!
//! Affinity then clears what the rule does not distinguish: `single` zeroes
//! words 4 and the protocol; `network` also keeps only the first 3 bytes of
//! an IPv4 source (/24) or the first 6 bytes of an IPv6 source (/48). ICMP echo
//! uses the echo identifier as the source port and 0 as the destination port.
//!
//! `h = seed ^ SALT`, then for each word `h = (h ^ w) * K; h ^= h >> 32`, then
//! the MurmurHash3 64-bit finaliser. The bucket is `((h >> 32) * buckets) >> 32`
//! (a multiply-shift range reduction: no division in the data plane). The seed
//! is [`seed_from_name`] of the cluster name, so two clusters on one network
//! spread the same clients differently.

use crate::layout::{affinity, family};

/// Mixed into every seed; changes if the definition ever changes.
pub const HASH_SALT: u64 = 0x786e_6c62_0000_0001;
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// The six input words of the hash, already reduced by affinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowWords(pub [u32; 6]);

impl FlowWords {
    /// Builds the words from wire-order loads, applying `affinity`.
    ///
    /// `src` are the address bytes read as little-endian `u32`s (IPv4: word 0
    /// only), `ports` the 4 port bytes read as one little-endian `u32`.
    #[inline(always)]
    pub fn new(fam: u8, src: [u32; 4], ports: u32, proto: u8, aff: u8) -> FlowWords {
        let mut w = [src[0], src[1], src[2], src[3], ports, 0];
        let mut proto = proto;
        if aff == affinity::SINGLE || aff == affinity::NETWORK {
            w[4] = 0;
            proto = 0;
        }
        if aff == affinity::NETWORK {
            if fam == family::V4 {
                w[0] &= 0x00ff_ffff;
            } else {
                w[1] &= 0x0000_ffff;
                w[2] = 0;
                w[3] = 0;
            }
        }
        w[5] = proto as u32 | (fam as u32) << 8;
        FlowWords(w)
    }

    /// Convenience for userspace: address bytes and host-order ports.
    pub fn from_parts(
        fam: u8,
        src: &[u8; 16],
        sport: u16,
        dport: u16,
        proto: u8,
        aff: u8,
    ) -> FlowWords {
        let word = |i: usize| u32::from_le_bytes([src[i], src[i + 1], src[i + 2], src[i + 3]]);
        let (s, d) = (sport.to_be_bytes(), dport.to_be_bytes());
        let ports = u32::from_le_bytes([s[0], s[1], d[0], d[1]]);
        FlowWords::new(
            fam,
            [word(0), word(4), word(8), word(12)],
            ports,
            proto,
            aff,
        )
    }
}

#[inline(always)]
fn round(h: u64, w: u32) -> u64 {
    let h = (h ^ w as u64).wrapping_mul(K);
    h ^ (h >> 32)
}

#[inline(always)]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The 64-bit flow hash (see the module documentation for the definition).
#[inline(always)]
pub fn flow_hash(seed: u64, w: &FlowWords) -> u64 {
    let w = &w.0;
    let mut h = seed ^ HASH_SALT;
    h = round(h, w[0]);
    h = round(h, w[1]);
    h = round(h, w[2]);
    h = round(h, w[3]);
    h = round(h, w[4]);
    h = round(h, w[5]);
    fmix64(h)
}

/// The bucket of a hash among `buckets` (multiply-shift, no division).
#[inline(always)]
pub fn bucket_of(hash: u64, buckets: u32) -> u32 {
    (((hash >> 32) * buckets as u64) >> 32) as u32
}

/// The cluster's hash seed: FNV-1a of the name, finalised.
pub fn seed_from_name(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h ^ HASH_SALT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ipproto;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    /// Golden vectors: these numbers are the hash's definition. If this test
    /// fails, nodes of this build would disagree with every earlier build.
    #[test]
    fn golden_vectors_are_unchanged() {
        let seed = seed_from_name(b"web");
        assert_eq!(seed, GOLDEN_SEED_WEB, "seed of \"web\"");
        let cases: [(FlowWords, u64); 4] = [
            (
                FlowWords::from_parts(
                    family::V4,
                    &v4([198, 18, 0, 1]),
                    40000,
                    80,
                    ipproto::TCP,
                    affinity::NONE,
                ),
                GOLDEN[0],
            ),
            (
                FlowWords::from_parts(
                    family::V4,
                    &v4([198, 18, 0, 1]),
                    40000,
                    80,
                    ipproto::TCP,
                    affinity::SINGLE,
                ),
                GOLDEN[1],
            ),
            (
                FlowWords::from_parts(
                    family::V4,
                    &v4([198, 18, 0, 1]),
                    1,
                    2,
                    ipproto::UDP,
                    affinity::NETWORK,
                ),
                GOLDEN[2],
            ),
            (
                FlowWords::from_parts(
                    family::V6,
                    &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
                    53000,
                    53,
                    ipproto::UDP,
                    affinity::NONE,
                ),
                GOLDEN[3],
            ),
        ];
        for (i, (w, want)) in cases.iter().enumerate() {
            assert_eq!(flow_hash(seed, w), *want, "golden vector {i}: {w:?}");
        }
        assert_eq!(bucket_of(GOLDEN[0], 4096), GOLDEN_BUCKET0_4096);
    }

    const GOLDEN_SEED_WEB: u64 = 0x8afd_0ec4_dfe6_f41d;
    const GOLDEN: [u64; 4] = [
        0x6ab7_4f74_480c_37fe,
        0x7f7c_5a96_9ae6_21ae,
        0x9004_bdef_bbeb_8f05,
        0x9450_f4ee_8069_5d00,
    ];
    const GOLDEN_BUCKET0_4096: u32 = 0x6ab;

    #[test]
    fn affinity_single_ignores_ports_and_protocol() {
        let a = FlowWords::from_parts(
            family::V4,
            &v4([1, 2, 3, 4]),
            1000,
            80,
            ipproto::TCP,
            affinity::SINGLE,
        );
        let b = FlowWords::from_parts(
            family::V4,
            &v4([1, 2, 3, 4]),
            2000,
            443,
            ipproto::UDP,
            affinity::SINGLE,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn affinity_network_groups_a_slash_24_and_a_slash_48() {
        let a = FlowWords::from_parts(
            family::V4,
            &v4([1, 2, 3, 4]),
            1,
            80,
            ipproto::TCP,
            affinity::NETWORK,
        );
        let b = FlowWords::from_parts(
            family::V4,
            &v4([1, 2, 3, 200]),
            9,
            80,
            ipproto::TCP,
            affinity::NETWORK,
        );
        let c = FlowWords::from_parts(
            family::V4,
            &v4([1, 2, 4, 4]),
            1,
            80,
            ipproto::TCP,
            affinity::NETWORK,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut x = [0u8; 16];
        x[..6].copy_from_slice(&[0xfd, 0, 1, 2, 3, 4]);
        let mut y = x;
        y[6] = 0xff;
        y[15] = 7;
        let mut z = x;
        z[5] = 5;
        let f = |s: &[u8; 16]| {
            FlowWords::from_parts(family::V6, s, 1, 1, ipproto::TCP, affinity::NETWORK)
        };
        assert_eq!(f(&x), f(&y));
        assert_ne!(f(&x), f(&z));
    }

    /// A chi-square test over 4096 buckets: a badly mixing hash would put
    /// sequential clients (the common case) into few buckets.
    #[test]
    fn sequential_flows_spread_evenly_over_buckets() {
        const B: usize = 1024;
        const N: u32 = 200_000;
        let mut counts = [0u32; B];
        let seed = seed_from_name(b"web");
        for i in 0..N {
            let ip = (0xc612_0000u32 + (i >> 6)).to_be_bytes();
            let w = FlowWords::from_parts(
                family::V4,
                &v4(ip),
                30000 + (i & 63) as u16,
                80,
                ipproto::TCP,
                affinity::NONE,
            );
            counts[bucket_of(flow_hash(seed, &w), B as u32) as usize] += 1;
        }
        let expect = N as f64 / B as f64;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expect).powi(2) / expect)
            .sum();
        // 1023 degrees of freedom: mean 1023, sd ~45; 1250 is ~5 sd.
        assert!(
            chi2 < 1250.0,
            "chi-square {chi2:.0} over {B} buckets is not uniform"
        );
    }

    #[test]
    fn bucket_of_is_in_range() {
        for b in [1u32, 2, 3, 4096, 16384] {
            for h in [0u64, u64::MAX, 1 << 63, 0x1234_5678_9abc_def0] {
                assert!(bucket_of(h, b) < b);
            }
        }
    }
}
