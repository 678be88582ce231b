//! Layer 1, auth: the session's principal may send as the draft's sender.
//!
//! Token checks happen once at connect (the gateway); this layer makes sure
//! a logged-in client cannot forge another sender, and that the sender is
//! not muted or forbidden (the [`PolicyBook`], changed through the admin
//! API, takes effect on the next message).

use std::future::{ready, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{PolicyBook, SendAck, SendCommand};
use crate::{ErrorCode, ImError};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct AuthLayer {
    policy: Arc<PolicyBook>,
}

impl AuthLayer {
    pub fn new(policy: Arc<PolicyBook>) -> Self {
        AuthLayer { policy }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    policy: Arc<PolicyBook>,
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
        let checked = authorize(&cmd).and_then(|()| {
            if cmd.principal.admin {
                Ok(())
            } else {
                self.policy.check_send(&cmd.draft.sender).and_then(|()| {
                    // A user's block list (XEP-0191) covers private messages.
                    if cmd.draft.conversation.kind == 0 {
                        self.policy
                            .check_blocks(&cmd.draft.sender, &cmd.draft.conversation.target)
                    } else {
                        Ok(())
                    }
                })
            }
        });
        match checked {
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
        let svc = AuthLayer::default().layer(rec.clone());
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
        let svc = AuthLayer::default().layer(rec.clone());
        let mut c = cmd("admin", "bob", "1");
        c.principal.admin = true;
        c.draft.sender = "carol".into();
        assert!(svc.oneshot(c).await.is_ok());
    }

    #[tokio::test]
    async fn muted_and_forbidden_users_cannot_send() {
        let policy = Arc::new(PolicyBook::default());
        let svc = AuthLayer::new(policy.clone()).layer(Recorder::default());
        policy.set_status("alice", super::super::UserStatus::Muted);
        let e = svc
            .clone()
            .oneshot(cmd("alice", "bob", "1"))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UserForbidden);
        policy.set_status("alice", super::super::UserStatus::Normal);
        assert!(svc.oneshot(cmd("alice", "bob", "2")).await.is_ok());
    }
}
