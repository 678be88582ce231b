//! Layer 3, dedupe: a resend with the same `(sender, client_msg_id)` within
//! the window gets the original ack and stores nothing new (DESIGN §3.3).
//!
//! This in-memory cache answers fast and makes concurrent duplicates wait
//! for the first one instead of racing; the store recognises resends
//! itself (from its rows), so a resend after a restart, or one this
//! bounded cache has forgotten, is also answered with the original ack.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tower::{Layer, Service};

use super::{SendAck, SendCommand};
use crate::ImError;

type Key = (String, String);
type Slot = watch::Receiver<Option<SendAck>>;

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, (Instant, Slot)>,
    order: VecDeque<(Instant, Key)>,
}

/// Keys the cache holds at most (the oldest go first beyond it; the store
/// still answers their resends).
pub const DEDUPE_CACHE_ENTRIES: usize = 65_536;

impl Cache {
    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < window && self.order.len() < DEDUPE_CACHE_ENTRIES {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                if self.entries.get(&key).is_some_and(|(t, _)| *t == at) {
                    self.entries.remove(&key);
                }
            }
        }
    }
}

#[derive(Clone)]
pub struct DedupeLayer {
    window: Duration,
    cache: Arc<Mutex<Cache>>,
}

impl DedupeLayer {
    pub fn new(window: Duration) -> Self {
        DedupeLayer {
            window,
            cache: Arc::default(),
        }
    }
}

impl<S> Layer<S> for DedupeLayer {
    type Service = Dedupe<S>;
    fn layer(&self, inner: S) -> Dedupe<S> {
        Dedupe {
            inner,
            window: self.window,
            cache: self.cache.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Dedupe<S> {
    inner: S,
    window: Duration,
    cache: Arc<Mutex<Cache>>,
}

enum Claim {
    /// We are first: run the send and publish the ack here.
    Owner(watch::Sender<Option<SendAck>>),
    /// Someone sent it (or is sending it): wait for their ack.
    Follower(Slot),
    /// No key: nothing to dedupe.
    None,
}

impl<S> Dedupe<S> {
    fn claim(&self, key: &Key) -> Claim {
        if key.1.is_empty() {
            return Claim::None;
        }
        let now = Instant::now();
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        cache.prune(now, self.window);
        if let Some((_, slot)) = cache.entries.get(key) {
            return Claim::Follower(slot.clone());
        }
        let (tx, rx) = watch::channel(None);
        cache.entries.insert(key.clone(), (now, rx));
        cache.order.push_back((now, key.clone()));
        Claim::Owner(tx)
    }

    fn forget(cache: &Mutex<Cache>, key: &Key) {
        let mut cache = match cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        cache.entries.remove(key);
    }
}

impl<S> Service<SendCommand> for Dedupe<S>
where
    S: Service<SendCommand, Response = SendAck, Error = ImError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = SendAck;
    type Error = ImError;
    type Future = Pin<Box<dyn Future<Output = Result<SendAck, ImError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ImError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cmd: SendCommand) -> Self::Future {
        let key = (cmd.draft.sender.clone(), cmd.draft.client_msg_id.clone());
        let claim = self.claim(&key);
        // `inner` was made ready by poll_ready; keep that one, leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let cache = self.cache.clone();
        Box::pin(async move {
            match claim {
                Claim::None => inner.call(cmd).await,
                Claim::Owner(tx) => {
                    let result = inner.call(cmd).await;
                    match &result {
                        Ok(ack) => {
                            let _ = tx.send(Some(ack.clone()));
                        }
                        // A failed send is not remembered: a retry may pass.
                        Err(_) => Self::forget(&cache, &key),
                    }
                    result
                }
                Claim::Follower(mut slot) => {
                    let seen = slot
                        .wait_for(|v| v.is_some())
                        .await
                        .ok()
                        .and_then(|v| v.clone());
                    match seen {
                        Some(mut ack) => {
                            ack.duplicate = true;
                            Ok(ack)
                        }
                        // The first attempt failed or was abandoned: the
                        // store's own idempotency makes a retry safe.
                        None => inner.call(cmd).await,
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cmd, Recorder};
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn resend_returns_original_ack_without_calling_inner() {
        let rec = Recorder::default();
        let svc = DedupeLayer::new(Duration::from_secs(600)).layer(rec.clone());
        let a = svc
            .clone()
            .oneshot(cmd("alice", "bob", "m1"))
            .await
            .unwrap();
        let b = svc
            .clone()
            .oneshot(cmd("alice", "bob", "m1"))
            .await
            .unwrap();
        assert_eq!(a.message_id, b.message_id);
        assert!(!a.duplicate && b.duplicate);
        assert_eq!(rec.count(), 1);
        // Same client id from another sender is a different message.
        let c = svc
            .clone()
            .oneshot(cmd("carol", "bob", "m1"))
            .await
            .unwrap();
        assert_ne!(c.message_id, a.message_id);
        // No client id: never deduped.
        svc.clone().oneshot(cmd("alice", "bob", "")).await.unwrap();
        svc.oneshot(cmd("alice", "bob", "")).await.unwrap();
        assert_eq!(rec.count(), 4);
    }

    #[tokio::test]
    async fn entries_expire_after_the_window() {
        let rec = Recorder::default();
        let svc = DedupeLayer::new(Duration::from_millis(0)).layer(rec.clone());
        svc.clone()
            .oneshot(cmd("alice", "bob", "m1"))
            .await
            .unwrap();
        svc.oneshot(cmd("alice", "bob", "m1")).await.unwrap();
        assert_eq!(rec.count(), 2);
    }

    #[tokio::test]
    async fn the_cache_is_bounded_oldest_first() {
        let rec = Recorder::default();
        let layer = DedupeLayer::new(Duration::from_secs(600));
        let svc = layer.clone().layer(rec.clone());
        for i in 0..DEDUPE_CACHE_ENTRIES + 10 {
            svc.clone()
                .oneshot(cmd("alice", "bob", &format!("m{i}")))
                .await
                .unwrap();
        }
        let held = layer.cache.lock().map(|c| c.entries.len()).unwrap_or(0);
        assert!(held <= DEDUPE_CACHE_ENTRIES, "{held}");
        // The newest is still answered here; the oldest goes to the store.
        let last = format!("m{}", DEDUPE_CACHE_ENTRIES + 9);
        let n = rec.count();
        svc.clone()
            .oneshot(cmd("alice", "bob", &last))
            .await
            .unwrap();
        assert_eq!(rec.count(), n);
        svc.oneshot(cmd("alice", "bob", "m0")).await.unwrap();
        assert_eq!(rec.count(), n + 1);
    }
}
