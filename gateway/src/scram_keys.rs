//! The keys a server keeps for a SCRAM password (RFC 5802 §3, RFC 7677):
//! derived when a device secret is issued (`crate::device_secrets`) and
//! checked by XMPP's SASL exchange (`crate::xmpp::scram`). A leaf: the
//! credential store and the protocol both use it, neither through the
//! other.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// PBKDF2 rounds (RFC 7677's minimum recommendation).
pub const ITERATIONS: u32 = 4096;
/// The two hashes imgate offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    pub fn mechanism(self) -> &'static str {
        match self {
            Hash::Sha1 => "SCRAM-SHA-1",
            Hash::Sha256 => "SCRAM-SHA-256",
        }
    }

    pub fn from_mechanism(m: &str) -> Option<Hash> {
        match m {
            "SCRAM-SHA-1" => Some(Hash::Sha1),
            "SCRAM-SHA-256" => Some(Hash::Sha256),
            _ => None,
        }
    }

    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => {
                let mut m = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Hash::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// RFC 5802 `Hi()`: PBKDF2 with HMAC of this hash, one block.
    pub(crate) fn hi(self, password: &[u8], salt: &[u8], rounds: u32) -> Vec<u8> {
        let mut first = salt.to_vec();
        first.extend_from_slice(&1u32.to_be_bytes());
        let mut u = self.hmac(password, &first);
        let mut out = u.clone();
        for _ in 1..rounds {
            u = self.hmac(password, &u);
            for (o, x) in out.iter_mut().zip(&u) {
                *o ^= x;
            }
        }
        out
    }
}

/// What the server keeps for one password and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// The per-user salt.
pub fn salt_for(user: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"imgate scram salt\0");
    h.update(user.as_bytes());
    h.finalize()[..16].to_vec()
}

/// The keys of `password` for `user` (the server side of RFC 5802 §3).
pub fn derive(hash: Hash, user: &str, password: &str) -> Keys {
    let salted = hash.hi(password.as_bytes(), &salt_for(user), ITERATIONS);
    let client_key = hash.hmac(&salted, b"Client Key");
    Keys {
        stored_key: hash.digest(&client_key),
        server_key: hash.hmac(&salted, b"Server Key"),
    }
}
