//! The review hook over HTTP (DESIGN §6 step 6).
//!
//! - `review`: POST the draft as JSON (the admin send body: sender, conv,
//!   payload, toUsers, clientMsgId) and read the verdict: 200 with an empty
//!   body = pass; 200 with a payload (`{"payload":{...}}` or the payload
//!   object itself) = replace; 403 = reject; anything else = error (the
//!   pipeline applies fail-open/closed and the timeout).
//! - `forward`: queue the stored message (the same JSON plus `messageUid`,
//!   `messageUidStr`, `timestamp`) on a bounded queue; worker tasks POST it
//!   with retries and exponential backoff. The sender never waits; a full
//!   queue drops the forward and counts it.
//!
//! Both are signed with the hook secret when one is configured
//! (`signature`: `X-Imgate-Timestamp` and `X-Imgate-Signature`).

pub(crate) mod client;
mod signature;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use imgate_core::model::MessagePayload;
use imgate_core::pipeline::{Draft, ReviewHook, SendAck, Verdict};
use imgate_core::store::BoxFuture;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};

use client::HttpClient;
pub use signature::HookSigner;

const WORKERS: usize = 4;
const ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// Forwarding counters (exported as metrics by the gateway).
#[derive(Debug, Default)]
pub struct ReviewStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
}

pub struct HttpReviewHook {
    client: HttpClient,
    queue: mpsc::Sender<Value>,
    pub stats: Arc<ReviewStats>,
}

impl HttpReviewHook {
    /// Forwards queued and not yet taken by a worker, and the bound.
    pub fn queue_depth(&self) -> (usize, usize) {
        let bound = self.queue.max_capacity();
        (bound - self.queue.capacity(), bound)
    }
}

fn draft_json(d: &Draft) -> Value {
    json!({
        "sender": d.sender,
        "conv": d.conversation,
        "payload": d.payload,
        "toUsers": d.to_users,
        "clientMsgId": d.client_msg_id,
    })
}

impl HttpReviewHook {
    /// Start the forward workers (call inside the tokio runtime); `signer`
    /// = the key that signs every request (`None`: unsigned).
    pub fn start(
        url: &str,
        queue_len: usize,
        signer: Option<HookSigner>,
    ) -> Result<Arc<Self>, String> {
        let client = HttpClient::new(url, signer)?;
        let (tx, rx) = mpsc::channel(queue_len.max(1));
        let stats = Arc::new(ReviewStats::default());
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WORKERS {
            let (rx, client, stats) = (rx.clone(), client.clone(), stats.clone());
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(body) = next else { break };
                    if deliver_with_retries(&client, &body).await {
                        stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        Ok(Arc::new(HttpReviewHook {
            client,
            queue: tx,
            stats,
        }))
    }
}

async fn deliver_with_retries(client: &HttpClient, body: &Value) -> bool {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, client.post_json(body)).await {
            Ok(Ok((status, _))) if (200..300).contains(&status) => return true,
            Ok(Ok((status, _))) => tracing::warn!(status, attempt, "review forward refused"),
            Ok(Err(e)) => tracing::warn!(error = %e, attempt, "review forward failed"),
            Err(_) => tracing::warn!(attempt, "review forward timed out"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
    false
}

/// Read a review answer (see the module docs).
fn verdict(status: u16, body: &[u8]) -> Result<Verdict, String> {
    match status {
        200 if body.iter().all(u8::is_ascii_whitespace) => Ok(Verdict::Pass),
        200 => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| format!("review reply is not JSON: {e}"))?;
            let payload = v.get("payload").cloned().unwrap_or(v);
            let p: MessagePayload = serde_json::from_value(payload)
                .map_err(|e| format!("review reply payload: {e}"))?;
            Ok(Verdict::Replace(p))
        }
        204 => Ok(Verdict::Pass),
        403 => Ok(Verdict::Reject(
            String::from_utf8_lossy(body).chars().take(200).collect(),
        )),
        other => Err(format!("review service answered HTTP {other}")),
    }
}

impl ReviewHook for HttpReviewHook {
    fn review<'a>(&'a self, draft: &'a Draft) -> BoxFuture<'a, Result<Verdict, String>> {
        Box::pin(async move {
            let (status, body) = self.client.post_json(&draft_json(draft)).await?;
            verdict(status, &body)
        })
    }

    fn forward(&self, draft: &Draft, ack: &SendAck) -> bool {
        let mut body = draft_json(draft);
        body["messageUid"] = json!(ack.message_id);
        body["messageUidStr"] = json!(ack.message_id.to_string());
        body["timestamp"] = json!(ack.server_ts);
        if self.queue.try_send(body).is_ok() {
            true
        } else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_from_status_and_body() {
        assert_eq!(verdict(200, b""), Ok(Verdict::Pass));
        assert_eq!(verdict(200, b" \n"), Ok(Verdict::Pass));
        assert_eq!(verdict(204, b""), Ok(Verdict::Pass));
        let Ok(Verdict::Replace(p)) = verdict(
            200,
            br#"{"payload":{"type":1,"searchableContent":"clean"}}"#,
        ) else {
            panic!("replace")
        };
        assert_eq!(p.searchable_content, "clean");
        let Ok(Verdict::Replace(p)) = verdict(200, br#"{"type":1,"searchableContent":"bare"}"#)
        else {
            panic!("replace with a bare payload")
        };
        assert_eq!(p.searchable_content, "bare");
        assert!(matches!(verdict(403, b"no"), Ok(Verdict::Reject(_))));
        assert!(verdict(500, b"").is_err());
        assert!(verdict(200, b"not json").is_err());
    }
}
