//! The daily quota: at most N stored messages per user per UTC day.
//!
//! The count is the store's ([`crate::Store::sent_on_day`]), kept in the
//! same transaction as each message: a restart does not reset it, every
//! node of a shared store sees the same count, and only stored messages
//! count (a resend answered from dedupe, a rate-limited or filtered
//! message does not). Messages of the user still on their way to the
//! store on this node count too, so concurrent sends cannot overshoot
//! here; sends racing on two nodes at once can exceed it by the few
//! still in flight (the count reaches the other node with the log).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::rate_limit::over_frequency;
use super::{SendAck, SendCommand};
use crate::store::{BoxFuture, StoreResult};
use crate::{now_ms, utc_day, ImError, DAY_MS};

/// Reads a user's count for a day: `(user, day) → messages stored`.
pub type SentCounter =
    Arc<dyn Fn(String, i64) -> BoxFuture<'static, StoreResult<u64>> + Send + Sync>;

/// The quota layer; `limit` 0 = no quota (no store reads at all).
#[derive(Clone)]
pub struct QuotaLayer {
    limit: u32,
    counter: SentCounter,
    in_flight: Arc<Mutex<HashMap<String, u64>>>,
}

impl QuotaLayer {
    pub fn new(limit: u32, counter: SentCounter) -> Self {
        QuotaLayer {
            limit,
            counter,
            in_flight: Arc::default(),
        }
    }
}

impl<S> Layer<S> for QuotaLayer {
    type Service = Quota<S>;
    fn layer(&self, inner: S) -> Quota<S> {
        Quota {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Quota<S> {
    inner: S,
    layer: QuotaLayer,
}

/// One of the user's messages on its way to the store on this node;
/// leaves the count when dropped (stored, rejected further on, or the
/// caller gave up).
struct InFlight {
    map: Arc<Mutex<HashMap<String, u64>>>,
    user: String,
}

fn lock(m: &Mutex<HashMap<String, u64>>) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = lock(&self.map);
        if let Some(n) = map.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.user);
            }
        }
    }
}

impl<S> Service<SendCommand> for Quota<S>
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
        let limit = u64::from(self.layer.limit);
        if limit == 0 || cmd.principal.admin {
            return Box::pin(self.inner.call(cmd));
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let user = cmd.principal.user_id.clone();
            let now = now_ms();
            let stored = (layer.counter)(user.clone(), utc_day(now))
                .await
                .map_err(ImError::from)?;
            let _in_flight = {
                let mut map = lock(&layer.in_flight);
                let pending = map.get(&user).copied().unwrap_or(0);
                if stored + pending >= limit {
                    let until_midnight = (utc_day(now) + 1) * DAY_MS - now;
                    let wait = Duration::from_millis(until_midnight.max(1) as u64);
                    return Err(over_frequency(wait, "daily quota used up"));
                }
                map.insert(user.clone(), pending + 1);
                InFlight {
                    map: layer.in_flight.clone(),
                    user,
                }
            };
            inner.call(cmd).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cmd, Recorder};
    use super::*;
    use crate::ErrorCode;
    use tower::ServiceExt;

    /// A counter that counts what reached the recorder, like a store.
    fn counting(rec: &Recorder) -> SentCounter {
        let rec = rec.clone();
        Arc::new(move |_user, _day| {
            let n = rec.count();
            Box::pin(async move { Ok(n) })
        })
    }

    #[tokio::test]
    async fn stored_messages_use_up_the_quota_and_admins_are_exempt() {
        let rec = Recorder::default();
        let svc = QuotaLayer::new(2, counting(&rec)).layer(rec.clone());
        svc.clone().oneshot(cmd("dave", "bob", "1")).await.unwrap();
        svc.clone().oneshot(cmd("dave", "bob", "2")).await.unwrap();
        let e = svc
            .clone()
            .oneshot(cmd("dave", "bob", "3"))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::OverFrequency);
        assert!(e.message.contains("quota"));
        let wait = e.retry_after.expect("retry after midnight");
        assert!(wait <= Duration::from_millis(DAY_MS as u64));
        let mut admin = cmd("dave", "bob", "4");
        admin.principal.admin = true;
        svc.clone().oneshot(admin).await.unwrap();
        assert_eq!(rec.count(), 3);
    }

    #[tokio::test]
    async fn messages_in_flight_count_and_leave_the_count_when_done() {
        // The store has counted nothing yet.
        let nothing: SentCounter = Arc::new(|_, _| Box::pin(async { Ok(0) }));
        let layer = QuotaLayer::new(1, nothing);
        let svc = layer.layer(tower::service_fn(|c: SendCommand| async move {
            tokio::task::yield_now().await;
            Ok::<_, ImError>(SendAck {
                message_id: 1,
                server_ts: 1,
                client_msg_id: c.draft.client_msg_id,
                duplicate: false,
            })
        }));
        let first = svc.clone().oneshot(cmd("erin", "bob", "1"));
        let second = svc.clone().oneshot(cmd("erin", "bob", "2"));
        let (a, b) = tokio::join!(first, second);
        assert!(
            a.is_ok() != b.is_ok(),
            "exactly one of two concurrent sends fits a quota of 1"
        );
        assert!(lock(&layer.in_flight).is_empty(), "nothing left in flight");
        // Done, and the store (here) never counted it: room again.
        svc.clone().oneshot(cmd("erin", "bob", "3")).await.unwrap();
    }

    #[tokio::test]
    async fn a_store_failure_is_a_server_error_not_a_pass() {
        let rec = Recorder::default();
        let failing: SentCounter =
            Arc::new(|_, _| Box::pin(async { Err(crate::StoreError::Unavailable("down".into())) }));
        let svc = QuotaLayer::new(5, failing).layer(rec.clone());
        let e = svc.oneshot(cmd("dave", "bob", "1")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::ServerError);
        assert_eq!(rec.count(), 0);
    }
}
