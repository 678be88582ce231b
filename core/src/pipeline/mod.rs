//! The policy pipeline (DESIGN §6): one tower stack that every inbound
//! message passes, whatever protocol it came from.
//!
//! The whole order lives in [`build_pipeline`]; each layer is one file
//! (`FooLayer` + `Foo<S>`) and testable alone. A layer either rejects with an
//! [`ImError`] carrying a contract code, or passes the command on; the
//! terminal [`StoreService`] resolves recipients and appends durably. The
//! session that called the pipeline renders the result in its protocol.

mod auth;
mod dedupe;
mod rate_limit;
mod recall;
mod store_service;
mod validate;

pub use auth::{Auth, AuthLayer};
pub use dedupe::{Dedupe, DedupeLayer};
pub use rate_limit::{RateLimit, RateLimitConfig, RateLimitLayer, RateLimiter};
pub use recall::{recall, RecallOutcome};
pub use store_service::StoreService;
pub use validate::{Limits, Validate, ValidateLayer};

use std::sync::Arc;
use std::time::Duration;

use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::model::{Conversation, MessagePayload, Platform};
use crate::store::Store;
use crate::ImError;

/// The protocol a command came in on (for metrics and error rendering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Pb,
    Mqtt,
    Xmpp,
    Http,
    Admin,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pb => "pb",
            Protocol::Mqtt => "mqtt",
            Protocol::Xmpp => "xmpp",
            Protocol::Http => "http",
            Protocol::Admin => "admin",
        }
    }
}

/// Who is sending: established at login (token) or by the admin signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub device_id: String,
    pub platform: Platform,
    pub protocol: Protocol,
    /// The admin API may send as any user and is not rate limited.
    pub admin: bool,
}

/// A message as a client asked to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub sender: String,
    pub conversation: Conversation,
    pub payload: MessagePayload,
    pub client_msg_id: String,
    pub to_users: Vec<String>,
}

/// One send through the pipeline.
#[derive(Debug, Clone)]
pub struct SendCommand {
    pub principal: Principal,
    pub draft: Draft,
}

/// The success ack: sent to the client only once the store made the
/// message durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAck {
    pub message_id: u64,
    pub server_ts: i64,
    pub client_msg_id: String,
    /// True when this answers a resend of an already stored message.
    pub duplicate: bool,
}

/// The type-erased pipeline every session holds a clone of.
pub type SendService = BoxCloneSyncService<SendCommand, SendAck, ImError>;

/// Settings of the pipeline layers.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub limits: Limits,
    pub dedupe_window: Duration,
    pub rate: RateLimitConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            limits: Limits::default(),
            dedupe_window: Duration::from_secs(600),
            rate: RateLimitConfig::default(),
        }
    }
}

/// The whole stack, in DESIGN §6 order. Read top to bottom: a command
/// enters at `auth` and, if nothing rejects it, is stored last.
pub fn build_pipeline(config: &PipelineConfig, store: Arc<dyn Store>) -> SendService {
    let stack = ServiceBuilder::new()
        // 1. auth: the principal may send as `draft.sender`.
        .layer(AuthLayer::new())
        // 2. validate: conversation type and target, sizes.
        .layer(ValidateLayer::new(config.limits.clone()))
        // 3. dedupe: a resend within the window gets the original ack.
        .layer(DedupeLayer::new(config.dedupe_window))
        // 4. rate limit: token buckets per user and per device.
        .layer(RateLimitLayer::new(RateLimiter::new(config.rate.clone())))
        // 5. sensitive-word filter and 6. review hook go here (issue
        //    "Policy pipeline"): after rate limiting so floods are cheap to
        //    reject, before the store so nothing filtered is ever durable.
        // 7. store: resolve recipients, durable append, fan-out.
        .service(StoreService::new(store));
    BoxCloneSyncService::new(stack)
}

#[cfg(test)]
pub(crate) mod test_support;
