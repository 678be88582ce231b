//! imgate-conformance: black-box tests of the real `imgate` binary.
//!
//! [`Gateway`] builds (once) and starts `imgate serve` in a temp data dir
//! with every listener on port 0, reads the `listening <proto> <addr>`
//! lines and `ready` from its stdout, and kills it when dropped. Helpers
//! speak the signed admin API, the bearer-token client API and SSE over
//! real sockets; [`PbClient`] speaks the private binary protocol over TCP.
//! Scenarios live in `tests/`.

pub mod fake_http;
pub mod gateway;
pub mod http;
pub mod mqtt;
pub mod node;
pub mod pb;
pub mod private_rabbit;
pub mod rabbit_support;
pub mod sse;
pub mod tls;
pub mod ws;
pub mod xmpp;

pub use gateway::Gateway;
pub use http::{Admin, Client, Reply};
pub use pb::PbClient;
pub use sse::SseReader;

/// Bounded wait used for every "until it happens" in the tests.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A name unique to this test process and call, for users, groups, ids.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The Python interpreter of the conformance virtualenv (paho-mqtt,
/// slixmpp): `IMGATE_TEST_PYTHON`, else `<workspace>/.venv/bin/python`.
/// `scripts/test.sh` creates it; without it, tests that need it fail with
/// a message saying how to create it.
pub fn python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("IMGATE_TEST_PYTHON") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "the conformance virtualenv is missing: run `bash scripts/python-venv.sh` (scripts/test.sh does)"
    );
    venv
}

/// Directory of the Python conformance clients (`conformance/python`).
pub fn python_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}
