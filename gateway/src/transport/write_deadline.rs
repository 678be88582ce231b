//! A bound on how long one write to a client may wait (issue 11 row 7): a
//! peer that logs in and stops reading fills its socket buffers, and the
//! write that would block is given up after `write_timeout_secs`; the
//! session then ends as if the peer had gone. Without it such a write
//! waits forever, and with it the session's idle and heartbeat timers
//! (which cannot fire while the session is stuck in a write).
//!
//! Buffered bytes stay bounded too: the session driver (`driver`) flushes
//! after every step, and a step writes a bounded amount (one answer or
//! delivery; MQTT's queue pump stops at 8 KiB and continues after the
//! flush; the XMPP session writes batches of at most 64
//! stanzas), so a stuck peer holds at most that plus one frame (frames
//! are bounded by the protocols' size limits).
//!
//! The limit is process-wide, set once at start ([`set_limit`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static LIMIT_MS: AtomicU64 = AtomicU64::new(30_000);

/// Set the write deadline (at start, from the configuration).
pub fn set_limit(limit: Duration) {
    let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1);
    LIMIT_MS.store(ms, Ordering::Relaxed);
}

pub fn limit() -> Duration {
    Duration::from_millis(LIMIT_MS.load(Ordering::Relaxed))
}

/// Why a bounded write failed.
#[derive(Debug)]
pub enum WriteFailed<E> {
    /// The write itself failed (the peer is gone, a codec error).
    Write(E),
    /// The peer did not read within the deadline.
    Stalled,
}

/// Run one write (`send`, `feed`, `flush`, `write_all`) within the
/// deadline.
pub async fn bounded<T, E, F>(write: F) -> Result<T, WriteFailed<E>>
where
    F: Future<Output = Result<T, E>>,
{
    match tokio::time::timeout(limit(), write).await {
        Ok(r) => r.map_err(WriteFailed::Write),
        Err(_) => {
            tracing::debug!(
                limit_ms = LIMIT_MS.load(Ordering::Relaxed),
                "a client did not read in time; closing its connection"
            );
            Err(WriteFailed::Stalled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_to_a_peer_that_never_reads_fails_at_the_deadline() {
        set_limit(Duration::from_millis(300));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _peer = std::net::TcpStream::connect(addr).unwrap(); // never reads
        let (mut server, _) = listener.accept().await.unwrap();
        let chunk = vec![0u8; 1 << 20];
        let mut stalled = false;
        // Socket buffers hold a few MiB at most: well before 256 MiB a
        // write blocks, and the deadline ends it.
        for _ in 0..256 {
            match bounded(server.write_all(&chunk)).await {
                Ok(()) => continue,
                Err(e) => {
                    stalled = matches!(e, WriteFailed::Stalled);
                    break;
                }
            }
        }
        assert!(stalled, "the write was given up at the deadline");
    }
}
