//! The event webhooks' HTTP sender: JSON events (sessions connected and
//! disconnected, deliveries acked, conversations read; the gateway builds
//! them) POSTed to one URL from a bounded queue by a few worker tasks,
//! with retries and exponential backoff, each attempt signed like the
//! review hook (`review_hook::HookSigner`: `X-Imgate-Timestamp`,
//! `X-Imgate-Signature: sha256=<hmac of timestamp.body>`).
//!
//! [`EventHook::emit`] never waits: a full queue drops the event and
//! counts it, so a slow or dead receiver never slows a session down.
//! Events are at least once (a reply lost after a 2xx means a retry) and
//! may arrive out of order across workers: each carries its own `time`
//! and `id` for the receiver to order and deduplicate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, Mutex};

use crate::review_hook::client::HttpClient;
use crate::review_hook::HookSigner;

/// Concurrent deliveries to the receiver.
const WORKERS: usize = 4;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How events are sent.
#[derive(Debug, Clone)]
pub struct EventHookConfig {
    /// `http://` URL every event is POSTed to.
    pub url: String,
    /// Events waiting at most; beyond it they are dropped and counted.
    pub queue: usize,
    /// Attempts after the first one failed (non-2xx, error, timeout).
    pub retries: u32,
    /// Wait before the first retry; doubled at each one (up to 30 s).
    pub backoff: Duration,
    /// Time one attempt has for the receiver's reply.
    pub timeout: Duration,
    /// Signs every request; `None`: unsigned.
    pub signer: Option<HookSigner>,
}

/// Counters of the sender (exported as metrics by the gateway).
#[derive(Debug, Default)]
pub struct EventHookStats {
    /// Accepted by the receiver (2xx).
    pub delivered: AtomicU64,
    /// Dropped at once: the queue was full.
    pub dropped: AtomicU64,
    /// Dropped after the last retry failed.
    pub failed: AtomicU64,
    /// Attempts that failed and were tried again.
    pub retried: AtomicU64,
}

pub struct EventHook {
    queue: mpsc::Sender<Value>,
    pub stats: Arc<EventHookStats>,
}

impl EventHook {
    /// Start the workers (inside the tokio runtime).
    pub fn start(config: EventHookConfig) -> Result<Arc<Self>, String> {
        let client = HttpClient::new(&config.url, config.signer.clone())?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let stats = Arc::new(EventHookStats::default());
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WORKERS {
            let (rx, client, stats, config) =
                (rx.clone(), client.clone(), stats.clone(), config.clone());
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(event) = next else { break };
                    if send_with_retries(&client, &config, &stats, &event).await {
                        stats.delivered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        Ok(Arc::new(EventHook { queue: tx, stats }))
    }

    /// Queue one event; false (and counted) if the queue is full.
    pub fn emit(&self, event: Value) -> bool {
        if self.queue.try_send(event).is_ok() {
            true
        } else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Events queued and not yet taken by a worker, and the bound.
    pub fn queue_depth(&self) -> (usize, usize) {
        let bound = self.queue.max_capacity();
        (bound - self.queue.capacity(), bound)
    }
}

async fn send_with_retries(
    client: &HttpClient,
    config: &EventHookConfig,
    stats: &EventHookStats,
    event: &Value,
) -> bool {
    let mut backoff = config.backoff;
    let event_name = event["event"].as_str().unwrap_or("");
    for attempt in 0..=config.retries {
        match tokio::time::timeout(config.timeout, client.post_json(event)).await {
            Ok(Ok((status, _))) if (200..300).contains(&status) => return true,
            Ok(Ok((status, _))) => {
                tracing::debug!(status, attempt, event = event_name, "webhook refused")
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, attempt, event = event_name, "webhook failed")
            }
            Err(_) => tracing::debug!(attempt, event = event_name, "webhook timed out"),
        }
        if attempt < config.retries {
            stats.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    tracing::warn!(
        event = event_name,
        attempts = config.retries + 1,
        "webhook event dropped after its retries"
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn config(url: String, queue: usize, retries: u32) -> EventHookConfig {
        EventHookConfig {
            url,
            queue,
            retries,
            backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
            signer: None,
        }
    }

    /// A receiver answering `statuses` in turn (then 200), one request
    /// per connection; the count of requests it answered.
    async fn receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<u16>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut statuses = statuses.into_iter();
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                // Headers, then the body of content-length bytes.
                loop {
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let status = statuses.next().unwrap_or(200);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = tx.send(status).await;
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn a_refused_event_is_retried_until_accepted() {
        let (url, mut answered) = receiver(vec![500, 503]).await;
        let hook = EventHook::start(config(url, 8, 3)).unwrap();
        assert!(hook.emit(serde_json::json!({"event": "connected"})));
        for want in [500, 503, 200] {
            let got = tokio::time::timeout(Duration::from_secs(10), answered.recv())
                .await
                .unwrap();
            assert_eq!(got, Some(want));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while hook.stats.delivered.load(Ordering::Relaxed) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never counted");
            tokio::task::yield_now().await;
        }
        assert_eq!(hook.stats.retried.load(Ordering::Relaxed), 2);
        assert_eq!(hook.stats.failed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        // Nobody listens: every attempt fails, workers stay busy retrying.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut c = config(format!("http://127.0.0.1:{port}/x"), 2, 1000);
        c.backoff = Duration::from_secs(30);
        let hook = EventHook::start(c).unwrap();
        let accepted = (0..50)
            .filter(|i| hook.emit(serde_json::json!({"event": "connected", "n": i})))
            .count();
        assert!(accepted <= WORKERS + 2, "{accepted} accepted");
        assert_eq!(
            hook.stats.dropped.load(Ordering::Relaxed) as usize,
            50 - accepted
        );
        let (depth, bound) = hook.queue_depth();
        assert_eq!(bound, 2);
        assert!(depth <= 2);
    }
}
