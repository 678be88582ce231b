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

use super::{SendAck, SendCommand};
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
}

/// Shared keyed token buckets. Idle (full) buckets are dropped now and then
/// so memory follows the number of active senders.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimiter {
            config,
            buckets: Arc::default(),
        }
    }

    fn rate_per_sec(&self) -> f64 {
        f64::from(self.config.messages) / self.config.per.as_secs_f64().max(0.001)
    }

    /// Take one token from every key, or none if any bucket is empty; on
    /// rejection, how long until the emptiest has a token again.
    pub fn try_acquire(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.config.messages.max(1));
        let rate = self.rate_per_sec();
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() > 100_000 {
            let per = self.config.per;
            buckets.retain(|_, b| now.duration_since(b.last) < per);
        }
        let mut wait = Duration::ZERO;
        for key in keys {
            let b = buckets.entry(key.clone()).or_insert(Bucket {
                tokens: capacity,
                last: now,
            });
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
        for key in keys {
            if let Some(b) = buckets.get_mut(key) {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
}

impl RateLimitLayer {
    pub fn new(limiter: RateLimiter) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: RateLimiter,
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
        let keys = [
            format!("u\u{1f}{}", p.user_id),
            format!("d\u{1f}{}\u{1f}{}", p.user_id, p.device_id),
        ];
        match self.limiter.try_acquire(&keys, Instant::now()) {
            Ok(()) => Box::pin(self.inner.call(cmd)),
            Err(wait) => Box::pin(ready(Err(ImError::new(
                ErrorCode::OverFrequency,
                format!("over frequency: retry in {} ms", wait.as_millis().max(1)),
            )
            .with_retry_after(wait)))),
        }
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
        let svc = RateLimitLayer::new(RateLimiter::new(RateLimitConfig {
            messages: 2,
            per: Duration::from_secs(3600),
        }))
        .layer(rec.clone());
        svc.clone().oneshot(cmd("alice", "bob", "1")).await.unwrap();
        svc.clone().oneshot(cmd("alice", "bob", "2")).await.unwrap();
        let e = svc
            .clone()
            .oneshot(cmd("alice", "bob", "3"))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::OverFrequency);
        assert!(e.retry_after.is_some());
        svc.oneshot(cmd("carol", "bob", "1")).await.unwrap();
        assert_eq!(rec.count(), 3);
    }
}
