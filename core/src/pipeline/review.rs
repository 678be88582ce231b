//! Layer 6, review hook (DESIGN §6): `forward` hands every accepted message
//! to an asynchronous forwarder after it is stored (never blocking the
//! sender); `review` asks synchronously before storing, within a timeout:
//! pass, replace the payload, or reject (242); on timeout or error the
//! message passes (fail-open) or is refused (fail-closed) by config.
//! Both can be limited to some content types.
//!
//! The HTTP client behind [`ReviewHook`] lives in the adapters crate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::{Draft, SendAck, SendCommand};
use crate::model::MessagePayload;
use crate::store::BoxFuture;
use crate::{ErrorCode, ImError};

/// A review service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Replace(MessagePayload),
    Reject(String),
}

/// The review service, as the pipeline sees it.
pub trait ReviewHook: Send + Sync + 'static {
    /// Ask for a verdict (the layer applies the timeout). Err = the service
    /// failed or answered something unusable.
    fn review<'a>(&'a self, draft: &'a Draft) -> BoxFuture<'a, Result<Verdict, String>>;

    /// Queue an accepted message for forwarding; must not block. False if
    /// the queue was full and the message was dropped (counted).
    fn forward(&self, draft: &Draft, ack: &SendAck) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewMode {
    Forward,
    Review,
}

#[derive(Debug, Clone)]
pub struct ReviewConfig {
    pub mode: ReviewMode,
    pub timeout: Duration,
    /// On timeout/error: true = let the message pass.
    pub fail_open: bool,
    /// Only these content types are reviewed/forwarded (empty = all).
    pub content_types: Vec<i32>,
}

/// The layer; without a hook it passes everything through unchanged.
#[derive(Clone)]
pub struct ReviewLayer {
    hook: Option<(Arc<dyn ReviewHook>, Arc<ReviewConfig>)>,
}

impl ReviewLayer {
    pub fn new(hook: Arc<dyn ReviewHook>, config: ReviewConfig) -> Self {
        ReviewLayer {
            hook: Some((hook, Arc::new(config))),
        }
    }

    pub fn optional(hook: Option<(Arc<dyn ReviewHook>, ReviewConfig)>) -> Self {
        ReviewLayer {
            hook: hook.map(|(h, c)| (h, Arc::new(c))),
        }
    }
}

impl<S> Layer<S> for ReviewLayer {
    type Service = Review<S>;
    fn layer(&self, inner: S) -> Review<S> {
        Review {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Review<S> {
    inner: S,
    layer: ReviewLayer,
}

impl<S> Service<SendCommand> for Review<S>
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

    fn call(&mut self, mut cmd: SendCommand) -> Self::Future {
        let Some((hook, config)) = self.layer.hook.clone() else {
            return Box::pin(self.inner.call(cmd));
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let applies = config.content_types.is_empty()
                || config
                    .content_types
                    .contains(&cmd.draft.payload.content_type);
            if !applies {
                return inner.call(cmd).await;
            }
            match config.mode {
                ReviewMode::Review => {
                    let verdict =
                        tokio::time::timeout(config.timeout, hook.review(&cmd.draft)).await;
                    match verdict {
                        Ok(Ok(Verdict::Pass)) => {}
                        Ok(Ok(Verdict::Replace(payload))) => cmd.draft.payload = payload,
                        Ok(Ok(Verdict::Reject(why))) => {
                            return Err(ImError::new(
                                ErrorCode::SensitiveWord,
                                format!("rejected by review: {why}"),
                            ))
                        }
                        Ok(Err(e)) if !config.fail_open => {
                            return Err(ImError::server(format!("review service failed: {e}")))
                        }
                        Err(_) if !config.fail_open => {
                            return Err(ImError::new(
                                ErrorCode::Timeout,
                                "review service timed out",
                            ))
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "review failed; passing (fail-open)")
                        }
                        Err(_) => tracing::warn!("review timed out; passing (fail-open)"),
                    }
                    inner.call(cmd).await
                }
                ReviewMode::Forward => {
                    let draft = cmd.draft.clone();
                    let ack = inner.call(cmd).await?;
                    if !ack.duplicate && ack.message_id != 0 {
                        hook.forward(&draft, &ack);
                    }
                    Ok(ack)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cmd, Recorder};
    use super::*;
    use std::sync::Mutex;
    use tower::ServiceExt;

    struct Fixed {
        verdict: Option<Verdict>,
        forwarded: Mutex<Vec<u64>>,
    }
    impl ReviewHook for Fixed {
        fn review<'a>(&'a self, _d: &'a Draft) -> BoxFuture<'a, Result<Verdict, String>> {
            Box::pin(async move {
                match &self.verdict {
                    Some(v) => Ok(v.clone()),
                    None => std::future::pending().await,
                }
            })
        }
        fn forward(&self, _d: &Draft, ack: &SendAck) -> bool {
            self.forwarded.lock().unwrap().push(ack.message_id);
            true
        }
    }

    fn svc(
        verdict: Option<Verdict>,
        mode: ReviewMode,
        fail_open: bool,
    ) -> (Review<Recorder>, Arc<Fixed>, Recorder) {
        let hook = Arc::new(Fixed {
            verdict,
            forwarded: Mutex::default(),
        });
        let rec = Recorder::default();
        let l = ReviewLayer::new(
            hook.clone(),
            ReviewConfig {
                mode,
                timeout: Duration::from_millis(50),
                fail_open,
                content_types: vec![],
            },
        );
        (l.layer(rec.clone()), hook, rec)
    }

    #[tokio::test]
    async fn verdicts_and_failure_modes() {
        let (s, _, rec) = svc(Some(Verdict::Pass), ReviewMode::Review, false);
        s.oneshot(cmd("a", "b", "1")).await.unwrap();
        assert_eq!(rec.count(), 1);
        let (s, _, rec) = svc(Some(Verdict::Reject("no".into())), ReviewMode::Review, true);
        assert_eq!(
            s.oneshot(cmd("a", "b", "1")).await.unwrap_err().code,
            ErrorCode::SensitiveWord
        );
        assert_eq!(rec.count(), 0);
        let (s, _, _) = svc(None, ReviewMode::Review, false);
        assert_eq!(
            s.oneshot(cmd("a", "b", "1")).await.unwrap_err().code,
            ErrorCode::Timeout
        );
        let (s, _, rec) = svc(None, ReviewMode::Review, true);
        s.oneshot(cmd("a", "b", "1")).await.unwrap();
        assert_eq!(rec.count(), 1, "fail-open passes on timeout");
    }

    #[tokio::test]
    async fn forward_after_store_only() {
        let (s, hook, _) = svc(None, ReviewMode::Forward, false);
        let ack = s.oneshot(cmd("a", "b", "1")).await.unwrap();
        assert_eq!(*hook.forwarded.lock().unwrap(), vec![ack.message_id]);
    }
}
