//! Helpers for the layer tests: a recording inner service and commands.

use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use super::{Draft, Principal, Protocol, SendAck, SendCommand};
use crate::model::{Conversation, MessagePayload, Platform};
use crate::ImError;

/// Counts calls and acks each with a fresh id.
#[derive(Clone, Default)]
pub struct Recorder {
    calls: Arc<AtomicU64>,
}

impl Recorder {
    pub fn count(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<SendCommand> for Recorder {
    type Response = SendAck;
    type Error = ImError;
    type Future = Ready<Result<SendAck, ImError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ImError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, c: SendCommand) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        ready(Ok(SendAck {
            message_id: n,
            server_ts: 1,
            client_msg_id: c.draft.client_msg_id,
            duplicate: false,
        }))
    }
}

/// A private text from `from` (device `from-dev`) to `to`.
pub fn cmd(from: &str, to: &str, client_msg_id: &str) -> SendCommand {
    SendCommand {
        principal: Principal {
            user_id: from.into(),
            device_id: format!("{from}-dev"),
            platform: Platform::Android,
            protocol: Protocol::Http,
            admin: false,
        },
        draft: Draft {
            sender: from.into(),
            conversation: Conversation::private(to),
            payload: MessagePayload::text("hello"),
            client_msg_id: client_msg_id.into(),
            to_users: vec![],
        },
    }
}
