//! Layer 1, auth: the session's principal may send as the draft's sender.
//!
//! Token checks happen once at connect (the gateway); this layer makes sure
//! a logged-in client cannot forge another sender. User status (muted,
//! forbidden) joins here with the login-rules work.

use std::future::{ready, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{SendAck, SendCommand};
use crate::{ErrorCode, ImError};

#[derive(Debug, Clone, Default)]
pub struct AuthLayer;

impl AuthLayer {
    pub fn new() -> Self {
        AuthLayer
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
}

/// The check alone, for tests and for protocols that pre-check.
pub fn authorize(cmd: &SendCommand) -> Result<(), ImError> {
    let p = &cmd.principal;
    if cmd.draft.sender.is_empty() {
        return Err(ImError::invalid_parameter("sender is empty"));
    }
    if !p.admin && p.user_id != cmd.draft.sender {
        return Err(ImError::new(
            ErrorCode::NoRight,
            format!("{} may not send as {}", p.user_id, cmd.draft.sender),
        ));
    }
    Ok(())
}

impl<S> Service<SendCommand> for Auth<S>
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
        match authorize(&cmd) {
            Ok(()) => Box::pin(self.inner.call(cmd)),
            Err(e) => Box::pin(ready(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cmd, Recorder};
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn forged_sender_is_rejected_and_never_reaches_inner() {
        let rec = Recorder::default();
        let svc = AuthLayer::new().layer(rec.clone());
        let mut c = cmd("alice", "bob", "1");
        c.draft.sender = "mallory".into();
        let err = svc.clone().oneshot(c).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::NoRight);
        assert_eq!(rec.count(), 0);
        assert!(svc.oneshot(cmd("alice", "bob", "2")).await.is_ok());
        assert_eq!(rec.count(), 1);
    }

    #[tokio::test]
    async fn admin_may_send_as_anyone() {
        let rec = Recorder::default();
        let svc = AuthLayer::new().layer(rec.clone());
        let mut c = cmd("admin", "bob", "1");
        c.principal.admin = true;
        c.draft.sender = "carol".into();
        assert!(svc.oneshot(c).await.is_ok());
    }
}
