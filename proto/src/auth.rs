//! HMAC-SHA256 over whole datagrams with the cluster key.
//!
//! Authentication is what lets the rest of the protocol trust sender ids,
//! incarnations and sequence numbers: without the key nobody can make a
//! datagram the cluster accepts, and replays are caught by the sequence window
//! ([`crate::membership::ReplayWindow`]).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The first 8 bytes of SHA-256 of `bytes`: a short unkeyed digest for
/// telling states apart (the cluster state's digest, the state file's
/// checksum), not for authentication.
pub fn short_digest(bytes: &[u8]) -> [u8; 8] {
    use sha2::Digest;
    let d = Sha256::digest(bytes);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    b
}

/// Length of the MAC appended to every datagram.
pub const MAC_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A keyed MAC, ready to sign and verify (the key schedule is done once).
#[derive(Clone)]
pub struct Authenticator {
    mac: HmacSha256,
}

impl Authenticator {
    /// Prepares the key. HMAC accepts keys of any length.
    pub fn new(key: &[u8]) -> Authenticator {
        // `new_from_slice` only fails for fixed-size-key MACs; HMAC takes any.
        let mac = match HmacSha256::new_from_slice(key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        Authenticator { mac }
    }

    /// The MAC of `data`.
    pub fn sign(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let mut m = self.mac.clone();
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `data` (constant time).
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut m = self.mac.clone();
        m.update(data);
        m.verify_slice(tag).is_ok()
    }
}
