//! Layer 2, validate: conversation type and target, identifiers and sizes.

use std::future::{ready, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{SendAck, SendCommand};
use crate::model::ConversationType;
use crate::{ErrorCode, ImError};

/// Size limits; every one has a config key in the gateway.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of all payload fields together.
    pub max_payload_bytes: usize,
    /// Bytes of a user, group or device id.
    pub max_id_len: usize,
    pub max_client_msg_id_len: usize,
    pub max_to_users: usize,
    pub max_mentioned_targets: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 64 * 1024,
            max_id_len: 128,
            max_client_msg_id_len: 128,
            max_to_users: 1000,
            max_mentioned_targets: 1000,
        }
    }
}

impl Limits {
    /// The checks alone (pure), so every protocol can pre-check cheaply.
    pub fn check(&self, cmd: &SendCommand) -> Result<(), ImError> {
        let d = &cmd.draft;
        if d.conversation.conversation_type().is_none() {
            return Err(ImError::invalid_parameter(format!(
                "unknown conversation type {}",
                d.conversation.kind
            )));
        }
        if d.conversation.target.trim().is_empty() {
            return Err(ImError::invalid_parameter("conversation target is empty"));
        }
        if d.conversation.line < 0 {
            return Err(ImError::invalid_parameter("conversation line is negative"));
        }
        for (what, id) in [("target", &d.conversation.target), ("sender", &d.sender)] {
            if id.len() > self.max_id_len || id.chars().any(char::is_control) {
                return Err(ImError::invalid_parameter(format!(
                    "{what} is not a valid id"
                )));
            }
        }
        if d.client_msg_id.len() > self.max_client_msg_id_len {
            return Err(ImError::invalid_parameter("clientMsgId is too long"));
        }
        if d.to_users.len() > self.max_to_users {
            return Err(ImError::invalid_parameter("too many toUsers"));
        }
        if d.to_users
            .iter()
            .any(|u| u.is_empty() || u.len() > self.max_id_len)
        {
            return Err(ImError::invalid_parameter("toUsers holds an invalid id"));
        }
        if d.payload.mentioned_targets.len() > self.max_mentioned_targets {
            return Err(ImError::new(
                ErrorCode::InvalidMessage,
                "too many mentioned targets",
            ));
        }
        if d.payload.content_type < 0 {
            return Err(ImError::new(
                ErrorCode::InvalidMessage,
                "negative content type",
            ));
        }
        let size = d.payload.approximate_size();
        if size > self.max_payload_bytes {
            return Err(ImError::new(
                ErrorCode::InvalidMessage,
                format!(
                    "payload of {size} bytes exceeds {} bytes",
                    self.max_payload_bytes
                ),
            ));
        }
        if d.conversation.conversation_type() == Some(ConversationType::Group)
            && d.conversation.target.contains('\u{1f}')
        {
            return Err(ImError::invalid_parameter("group id is not a valid id"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ValidateLayer {
    limits: Limits,
}

impl ValidateLayer {
    pub fn new(limits: Limits) -> Self {
        ValidateLayer { limits }
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;
    fn layer(&self, inner: S) -> Validate<S> {
        Validate {
            inner,
            limits: self.limits.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Validate<S> {
    inner: S,
    limits: Limits,
}

impl<S> Service<SendCommand> for Validate<S>
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
        match self.limits.check(&cmd) {
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

    async fn code_of(mut c: SendCommand, f: impl FnOnce(&mut SendCommand)) -> Option<ErrorCode> {
        f(&mut c);
        let svc = ValidateLayer::new(Limits::default()).layer(Recorder::default());
        svc.oneshot(c).await.err().map(|e| e.code)
    }

    #[tokio::test]
    async fn rejects_bad_conversations_and_sizes() {
        let base = cmd("alice", "bob", "1");
        assert_eq!(code_of(base.clone(), |_| {}).await, None);
        assert_eq!(
            code_of(base.clone(), |c| c.draft.conversation.kind = 9).await,
            Some(ErrorCode::InvalidParameter)
        );
        assert_eq!(
            code_of(base.clone(), |c| c.draft.conversation.target = " ".into()).await,
            Some(ErrorCode::InvalidParameter)
        );
        assert_eq!(
            code_of(base.clone(), |c| c.draft.payload.content =
                "x".repeat(70_000))
            .await,
            Some(ErrorCode::InvalidMessage)
        );
        assert_eq!(
            code_of(base.clone(), |c| c.draft.client_msg_id = "x".repeat(200)).await,
            Some(ErrorCode::InvalidParameter)
        );
        assert_eq!(
            code_of(base, |c| c.draft.conversation.target = "a\nb".into()).await,
            Some(ErrorCode::InvalidParameter)
        );
    }
}
