//! Login tokens: HMAC-SHA256-signed, expiring, bound to user, client (device)
//! id and platform (DESIGN §5.1). Format: `base64url(claims JSON) "."
//! base64url(mac)`.
//!
//! A token whose client id is [`ANY_DEVICE`] (`*`) is good for any device
//! of its user: the client's own id is the device id. Every token carries
//! its issue time (`i`, ms), so that an administrator can revoke all the
//! tokens of a user issued before an instant (see `device_secrets`);
//! tokens issued before `i` existed have none and stay valid until the
//! first such revocation for their user.
//!
//! The signing key is derived from the admin secret, so every node that
//! shares the secret accepts the same tokens, and rotating the secret
//! revokes every token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use imgate_core::{ErrorCode, ImError};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "u")]
    pub user_id: String,
    #[serde(rename = "c")]
    pub client_id: String,
    #[serde(rename = "p")]
    pub platform: i32,
    /// Expiry, Unix seconds.
    #[serde(rename = "e")]
    pub expires: i64,
    /// Issue time, Unix milliseconds (absent in tokens of older versions).
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub issued_ms: Option<i64>,
}

/// The client id of a token good for any device of its user.
pub const ANY_DEVICE: &str = "*";

impl Claims {
    /// The token is good for any device of its user.
    pub fn any_device(&self) -> bool {
        self.client_id == ANY_DEVICE
    }
}

#[derive(Clone)]
pub struct TokenIssuer {
    key: Vec<u8>,
    ttl_secs: i64,
}

impl TokenIssuer {
    pub fn new(admin_secret: &str, ttl_secs: u64) -> Self {
        let mut mac = hmac_with(admin_secret.as_bytes());
        mac.update(b"imgate token key v1");
        TokenIssuer {
            key: mac.finalize().into_bytes().to_vec(),
            ttl_secs: ttl_secs.min(i64::MAX as u64 / 2) as i64,
        }
    }

    fn mac(&self) -> HmacSha256 {
        hmac_with(&self.key)
    }

    /// A token for `client_id` ([`ANY_DEVICE`] for any device), issued at
    /// `now_ms`.
    pub fn issue(&self, user_id: &str, client_id: &str, platform: i32, now_ms: i64) -> String {
        let claims = Claims {
            user_id: user_id.to_string(),
            client_id: client_id.to_string(),
            platform,
            expires: (now_ms / 1000).saturating_add(self.ttl_secs),
            issued_ms: Some(now_ms),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{sig}")
    }

    /// Check signature and expiry; code 6 (token error) otherwise.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<Claims, ImError> {
        let bad = |why: &str| ImError::new(ErrorCode::TokenError, format!("token error: {why}"));
        let (body, sig) = token
            .trim()
            .rsplit_once('.')
            .ok_or_else(|| bad("malformed"))?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| bad("malformed"))?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&sig).map_err(|_| bad("bad signature"))?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad("malformed"))?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| bad("malformed"))?;
        if claims.expires <= now_secs {
            return Err(bad("expired"));
        }
        Ok(claims)
    }
}

fn hmac_with(key: &[u8]) -> HmacSha256 {
    // HMAC is defined for keys of every length; the key is ours, not a peer's.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

pub fn now_secs() -> i64 {
    imgate_core::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_expire_and_tamper() {
        let t = TokenIssuer::new("secret", 60);
        let tok = t.issue("alice", "phone", 2, 1_000_000);
        let c = t.verify(&tok, 1000).unwrap();
        assert_eq!(
            (c.user_id.as_str(), c.client_id.as_str(), c.platform),
            ("alice", "phone", 2)
        );
        assert_eq!(c.issued_ms, Some(1_000_000));
        assert!(!c.any_device());
        assert!(t
            .verify(&t.issue("alice", ANY_DEVICE, 0, 0), 10)
            .unwrap()
            .any_device());
        assert_eq!(
            t.verify(&tok, 1060).unwrap_err().code,
            ErrorCode::TokenError
        );
        // Another secret's token is refused.
        assert!(TokenIssuer::new("other", 60).verify(&tok, 1000).is_err());
        // Changing the claims breaks the signature.
        let (_, sig) = tok.rsplit_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"u":"root","c":"x","p":0,"e":99999999999}"#);
        assert!(t.verify(&format!("{forged}.{sig}"), 1000).is_err());
        assert!(t.verify("garbage", 1000).is_err());
        assert!(t.verify("", 1000).is_err());
    }

    #[test]
    fn tokens_without_issue_time_still_verify() {
        // A token of an older version: no `i` claim.
        let t = TokenIssuer::new("secret", 60);
        let body = URL_SAFE_NO_PAD.encode(br#"{"u":"old","c":"d","p":0,"e":2000}"#);
        let mut mac = t.mac();
        mac.update(body.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let c = t.verify(&format!("{body}.{sig}"), 1000).unwrap();
        assert_eq!(c.issued_ms, None);
    }
}
