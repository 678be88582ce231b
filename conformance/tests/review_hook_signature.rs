//! Review-hook requests are signed (issue 11): with `hook_secret` set,
//! every POST to the review URL, forward and review alike, carries
//! `X-Imgate-Timestamp` and `X-Imgate-Signature: sha256=<hex>` over
//! `timestamp + "." + body`; a receiver recomputing it over the body it
//! received accepts it, and rejects any other body or timestamp.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use imgate_conformance::fake_http::{FakeHttp, RawRequest};
use imgate_conformance::{Gateway, WAIT};
use sha2::Sha256;

const SECRET: &str = "test-hook-secret";

/// What a receiver does (docs/security.md): recompute and compare in
/// constant time.
fn verifies(secret: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn assert_signed(req: &RawRequest) {
    let ts = req.header("x-imgate-timestamp").expect("timestamp header");
    let sig = req.header("x-imgate-signature").expect("signature header");
    let ts_ms: u128 = ts.parse().expect("timestamp in ms");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(
        now_ms.abs_diff(ts_ms) < 60_000,
        "timestamp {ts_ms} near {now_ms}"
    );
    assert!(verifies(SECRET, ts, &req.body, sig), "{req:?}");
    // A tampered body, another timestamp or another key do not verify.
    let mut tampered = req.body.clone();
    let at = tampered
        .iter()
        .position(|&b| b == b'h')
        .expect("an h in the body");
    tampered[at] = b'H';
    assert!(!verifies(SECRET, ts, &tampered, sig));
    assert!(!verifies(SECRET, &(ts_ms + 1).to_string(), &req.body, sig));
    assert!(!verifies("another-secret", ts, &req.body, sig));
}

#[test]
fn forward_requests_are_signed_over_the_exact_body() {
    let hook = FakeHttp::start(true, |_| (200, String::new()));
    let g = Gateway::start_with(&[
        ("IMGATE_REVIEW_URL", &hook.url),
        ("IMGATE_REVIEW_MODE", "forward"),
        ("IMGATE_HOOK_SECRET", SECRET),
    ]);
    let r = g.client("alice", "web").send_text("bob", "hello", "f1");
    assert_eq!(r.code(), 0);
    let got = hook.wait_for_raw(1, WAIT);
    assert_eq!(got.len(), 1);
    assert_signed(&got[0]);
}

#[test]
fn review_requests_are_signed_and_unsigned_without_a_secret() {
    let hook = FakeHttp::start(true, |_| (200, String::new()));
    let g = Gateway::start_with(&[
        ("IMGATE_REVIEW_URL", &hook.url),
        ("IMGATE_REVIEW_MODE", "review"),
        ("IMGATE_HOOK_SECRET", SECRET),
    ]);
    assert_eq!(
        g.client("alice", "web").send_text("bob", "hi", "r1").code(),
        0
    );
    let got = hook.wait_for_raw(1, Duration::from_secs(1));
    assert_eq!(got.len(), 1, "review mode answers before the ack");
    assert_signed(&got[0]);
    drop(g);

    let plain = FakeHttp::start(true, |_| (200, String::new()));
    let g = Gateway::start_with(&[
        ("IMGATE_REVIEW_URL", &plain.url),
        ("IMGATE_REVIEW_MODE", "review"),
    ]);
    assert_eq!(
        g.client("alice", "web").send_text("bob", "hi", "r2").code(),
        0
    );
    let got = plain.wait_for_raw(1, Duration::from_secs(1));
    assert_eq!(got.len(), 1);
    assert!(
        got[0].header("x-imgate-signature").is_none(),
        "{:?}",
        got[0]
    );
}
