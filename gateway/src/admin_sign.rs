//! Admin API request signatures, as the seeds' IM server signs them
//! (DESIGN §5.1): headers `nonce`, `timestamp` (ms) and
//! `sign = sha1_hex(nonce + "|" + secret + "|" + timestamp)`.
//! Missing → 239, older than 2 hours (or `admin_sign_window_secs`) → 243,
//! wrong → 244; a signature used before → 244 (see [`crate::admin_nonces`]).

use imgate_core::{ErrorCode, ImError};
use sha1::{Digest, Sha1};

/// How far a timestamp may be from now by default (the seeds' window).
pub const MAX_SKEW_MS: i64 = 2 * 3600 * 1000;

pub fn sign(nonce: &str, secret: &str, timestamp: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce.as_bytes());
    h.update(b"|");
    h.update(secret.as_bytes());
    h.update(b"|");
    h.update(timestamp.as_bytes());
    hex::encode(h.finalize())
}

/// Check one request's signature headers with the seeds' 2-hour window.
#[cfg(test)]
pub fn verify(
    nonce: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    secret: &str,
    now_ms: i64,
) -> Result<i64, ImError> {
    verify_within(nonce, timestamp, signature, secret, now_ms, MAX_SKEW_MS)
}

/// Check one request's signature headers, the timestamp within `window_ms`
/// of now; the timestamp (ms) when it holds.
pub fn verify_within(
    nonce: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    secret: &str,
    now_ms: i64,
    window_ms: i64,
) -> Result<i64, ImError> {
    let (Some(nonce), Some(ts), Some(sig)) = (nonce, timestamp, signature) else {
        return Err(ImError::new(
            ErrorCode::ApiNotSigned,
            "api not signed: headers nonce, timestamp and sign are required",
        ));
    };
    if nonce.is_empty() || sig.is_empty() {
        return Err(ImError::new(
            ErrorCode::ApiNotSigned,
            "api not signed: empty nonce or sign",
        ));
    }
    let ts_ms: i64 = ts
        .trim()
        .parse()
        .map_err(|_| ImError::new(ErrorCode::AuthFailure, "timestamp must be milliseconds"))?;
    if (now_ms - ts_ms).abs() > window_ms {
        return Err(ImError::new(
            ErrorCode::SignExpired,
            "sign expired: timestamp too old",
        ));
    }
    let expected = sign(nonce, secret, ts);
    if !constant_time_eq(
        expected.as_bytes(),
        sig.trim().to_ascii_lowercase().as_bytes(),
    ) {
        return Err(ImError::new(
            ErrorCode::AuthFailure,
            "auth failure: wrong signature",
        ));
    }
    Ok(ts_ms)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_failure_codes() {
        // sha1("n|s|1") computed independently.
        assert_eq!(
            sign("n", "s", "1"),
            "69800e9006d2e28ecbe8cbba76a6b878d484961d"
        );
        let now = 10_000_000_000;
        let ts = now.to_string();
        let good = sign("abc", "secret", &ts);
        assert!(verify(Some("abc"), Some(&ts), Some(&good), "secret", now).is_ok());
        assert!(verify(
            Some("abc"),
            Some(&ts),
            Some(&good.to_uppercase()),
            "secret",
            now
        )
        .is_ok());
        let code = |r: Result<i64, ImError>| r.unwrap_err().code;
        assert_eq!(
            code(verify(None, Some(&ts), Some(&good), "secret", now)),
            ErrorCode::ApiNotSigned
        );
        assert_eq!(
            code(verify(Some("abc"), Some(&ts), None, "secret", now)),
            ErrorCode::ApiNotSigned
        );
        assert_eq!(
            code(verify(Some("abc"), Some(&ts), Some(&good), "other", now)),
            ErrorCode::AuthFailure
        );
        let old = (now - MAX_SKEW_MS - 1).to_string();
        let old_sig = sign("abc", "secret", &old);
        assert_eq!(
            code(verify(
                Some("abc"),
                Some(&old),
                Some(&old_sig),
                "secret",
                now
            )),
            ErrorCode::SignExpired
        );
    }
}
