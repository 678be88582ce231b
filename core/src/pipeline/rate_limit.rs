//! Layer 4, rate limit: keyed token buckets per user and per device
//! (default 100 messages per 5 s, as the seeds' server). A rejection is
//! code 250 with the time until a token is available.

use std::collections::HashMap;
use std::future::{ready, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tower::{Layer, Service};

use super::{PolicyBook, SendAck, SendCommand};
use crate::{ErrorCode, ImError};

/// `messages` per `per`, for each user and for each device.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub messages: u32,
    pub per: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            messages: 100,
            per: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// The capacity this bucket was filled for; a changed limit (admin
    /// override) takes effect at once.
    capacity: f64,
}

impl RateLimitConfig {
    fn capacity(&self) -> f64 {
        f64::from(self.messages.max(1))
    }

    fn rate_per_sec(&self) -> f64 {
        f64::from(self.messages) / self.per.as_secs_f64().max(0.001)
    }
}

/// Shared keyed token buckets with a default limit. Idle buckets are
/// dropped now and then so memory follows the number of active senders.
#[derive(Debug, Clone, Default)]
pub struct RateLimiter {
    default: RateLimitConfig,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl RateLimiter {
    pub fn new(default: RateLimitConfig) -> Self {
        RateLimiter {
            default,
            buckets: Arc::default(),
        }
    }

    /// [`RateLimiter::try_acquire_each`] with the default limit for every key.
    pub fn try_acquire(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let keyed: Vec<(String, RateLimitConfig)> = keys
            .iter()
            .map(|k| (k.clone(), self.default.clone()))
            .collect();
        self.try_acquire_each(&keyed, now)
    }

    /// Take one token from every key's bucket (each with its own limit), or
    /// none if any is empty; on rejection, how long until the emptiest has
    /// a token again.
    pub fn try_acquire_each(
        &self,
        keys: &[(String, RateLimitConfig)],
        now: Instant,
    ) -> Result<(), Duration> {
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| now.duration_since(b.last) < Duration::from_secs(3600));
        }
        let mut wait = Duration::ZERO;
        for (key, config) in keys {
            let capacity = config.capacity();
            let rate = config.rate_per_sec();
            let b = buckets.entry(key.clone()).or_insert(Bucket {
                tokens: capacity,
                last: now,
                capacity,
            });
            if b.capacity != capacity {
                b.tokens = if capacity > b.capacity {
                    capacity
                } else {
                    b.tokens.min(capacity)
                };
                b.capacity = capacity;
            }
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate).min(capacity);
            b.last = now;
            if b.tokens < 1.0 {
                wait = wait.max(Duration::from_secs_f64((1.0 - b.tokens) / rate));
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        for (key, _) in keys {
            if let Some(b) = buckets.get_mut(key) {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }
}

/// Rate limits (default or the user's override from the [`PolicyBook`]).
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    policy: Arc<PolicyBook>,
}

impl RateLimitLayer {
    pub fn new(default: RateLimitConfig, policy: Arc<PolicyBook>) -> Self {
        RateLimitLayer {
            limiter: RateLimiter::new(default),
            policy,
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    layer: RateLimitLayer,
}

pub(super) fn over_frequency(wait: Duration, what: &str) -> ImError {
    ImError::new(
        ErrorCode::OverFrequency,
        format!(
            "over frequency ({what}): retry in {} ms",
            wait.as_millis().max(1)
        ),
    )
    .with_retry_after(wait)
}

impl<S> Service<SendCommand> for RateLimit<S>
where
    S: Service<SendCommand, Response = SendAck, Error = ImError>,
    S::Future: Send + 'static,
{
    type Response = SendAck;
    type Error = ImError;
    type Future = Pin<Box<dyn Future<Output = Result<SendAck, ImError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ImError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cmd: SendCommand) -> Self::Future {
        if cmd.principal.admin {
            return Box::pin(self.inner.call(cmd));
        }
        let p = &cmd.principal;
        let limit = self
            .layer
            .policy
            .rate_override(&p.user_id)
            .unwrap_or_else(|| self.layer.limiter.default.clone());
        let keys = [
            (format!("u\u{1f}{}", p.user_id), limit.clone()),
            (format!("d\u{1f}{}\u{1f}{}", p.user_id, p.device_id), limit),
        ];
        if let Err(wait) = self.layer.limiter.try_acquire_each(&keys, Instant::now()) {
            return Box::pin(ready(Err(over_frequency(wait, "rate limit"))));
        }
        Box::pin(self.inner.call(cmd))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cmd, Recorder};
    use super::*;
    use tower::ServiceExt;

    #[test]
    fn bucket_refills_over_time() {
        let rl = RateLimiter::new(RateLimitConfig {
            messages: 2,
            per: Duration::from_secs(2),
        });
        let k = vec!["u".to_string()];
        let t0 = Instant::now();
        assert!(rl.try_acquire(&k, t0).is_ok());
        assert!(rl.try_acquire(&k, t0).is_ok());
        let wait = rl.try_acquire(&k, t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(rl.try_acquire(&k, t0 + Duration::from_secs(1)).is_ok());
    }

    #[tokio::test]
    async fn third_message_in_window_gets_250_other_users_unaffected() {
        let rec = Recorder::default();
        let policy = Arc::new(PolicyBook::default());
        let limit = RateLimitConfig {
            messages: 2,
            per: Duration::from_secs(3600),
        };
        let svc = RateLimitLayer::new(limit, policy.clone()).layer(rec.clone());
        svc.clone().oneshot(cmd("alice", "bob", "1")).await.unwrap();
        svc.clone().oneshot(cmd("alice", "bob", "2")).await.unwrap();
        let e = svc
            .clone()
            .oneshot(cmd("alice", "bob", "3"))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::OverFrequency);
        assert!(e.retry_after.is_some());
        svc.clone().oneshot(cmd("carol", "bob", "1")).await.unwrap();
        assert_eq!(rec.count(), 3);
        // A per-user override lifts alice's limit at once.
        policy.set_rate_override("alice", Some((100, 1)));
        svc.clone().oneshot(cmd("alice", "bob", "4")).await.unwrap();
    }
}
