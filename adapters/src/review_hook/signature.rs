//! Signatures on review-hook requests, so that the review service can tell
//! the gateway's requests from anyone else's and refuse replays.
//!
//! Every request carries `X-Imgate-Timestamp: <unix ms>` and
//! `X-Imgate-Signature: sha256=<hex>`, the HMAC-SHA256 keyed by the
//! configured `hook_secret` over `timestamp + "." + body` (the exact bytes
//! sent). A receiver recomputes it over the body it received, compares in
//! constant time and refuses timestamps far from its clock
//! (docs/security.md shows how).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const TIMESTAMP_HEADER: &str = "x-imgate-timestamp";
pub const SIGNATURE_HEADER: &str = "x-imgate-signature";
/// Prefix of the signature header's value: names the algorithm so that it
/// can change without a new header.
const SCHEME: &str = "sha256=";

/// The key that signs hook requests.
#[derive(Clone)]
pub struct HookSigner {
    key: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for HookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookSigner(..)")
    }
}

impl HookSigner {
    /// `None` for an empty secret: requests then go unsigned.
    pub fn new(secret: &str) -> Option<HookSigner> {
        let secret = secret.trim();
        (!secret.is_empty()).then(|| HookSigner {
            key: secret.as_bytes().into(),
        })
    }

    /// The signature header's value for `body` sent at `timestamp_ms`.
    pub fn sign(&self, timestamp_ms: i64, body: &[u8]) -> String {
        let mut mac =
            <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(timestamp_ms.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("{SCHEME}{}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_timestamp_dot_body() {
        let s = HookSigner::new("hook-secret").unwrap();
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"hook-secret",
        //   b"1700000000000.{\"a\":1}",hashlib.sha256).hexdigest())'
        assert_eq!(
            s.sign(1_700_000_000_000, br#"{"a":1}"#),
            "sha256=9318bdc20fb95d76c653fd206fb8eeadfcc3fbf0ccf69579cb003f6d84f8eb64"
        );
        assert_ne!(
            s.sign(1_700_000_000_001, br#"{"a":1}"#),
            s.sign(1_700_000_000_000, br#"{"a":1}"#)
        );
        assert_ne!(
            s.sign(1_700_000_000_000, br#"{"a":2}"#),
            s.sign(1_700_000_000_000, br#"{"a":1}"#)
        );
        assert!(HookSigner::new("  ").is_none());
    }
}
