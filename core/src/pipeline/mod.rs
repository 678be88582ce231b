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
mod policy;
mod quota;
mod rate_limit;
mod recall;
mod review;
mod store_service;
mod validate;
mod word_filter;

pub use auth::{Auth, AuthLayer};
pub use dedupe::{Dedupe, DedupeLayer};
pub use policy::{PolicyBook, PolicySnapshot, UserStatus};
pub use quota::{Quota, QuotaLayer, SentCounter};
pub use rate_limit::{RateLimit, RateLimitConfig, RateLimitLayer, RateLimiter};
pub use recall::{recall, RecallOutcome};
pub use review::{Review, ReviewConfig, ReviewHook, ReviewLayer, ReviewMode, Verdict};
pub use store_service::{group_recipients, resolve_recipients, StoreService};
pub use validate::{Limits, Validate, ValidateLayer};
pub use word_filter::{
    HitRecord, HitSink, WordFilterLayer, WordFilterService, WordStrategies, WordStrategy,
};

use std::sync::Arc;
use std::time::Duration;

use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::model::{Conversation, MessagePayload, Platform};
use crate::store::Store;
use crate::words::WordFilter;
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
    /// Every protocol, in [`Protocol::index`] order: per-protocol tables
    /// (metrics) are sized by it, so a new protocol needs no other edit
    /// there.
    pub const ALL: [Protocol; 5] = [
        Protocol::Pb,
        Protocol::Mqtt,
        Protocol::Xmpp,
        Protocol::Http,
        Protocol::Admin,
    ];

    /// The position in [`Protocol::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

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
    /// Stored messages per user per UTC day; 0 = no quota.
    pub daily_quota: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            limits: Limits::default(),
            dedupe_window: Duration::from_secs(600),
            rate: RateLimitConfig::default(),
            daily_quota: 0,
        }
    }
}

/// The live policy state the layers consult, changed by the admin API
/// without a restart.
#[derive(Clone)]
pub struct PolicyParts {
    pub policy: Arc<PolicyBook>,
    pub words: Arc<WordFilter>,
    pub word_strategies: WordStrategies,
    pub hits: Arc<dyn HitSink>,
    /// The review hook and its settings; None = no hook.
    pub review: Option<(Arc<dyn ReviewHook>, ReviewConfig)>,
}

/// Drops hit records (for tests and tools that do not keep them).
pub struct DiscardHits;

impl HitSink for DiscardHits {
    fn record(&self, _hit: HitRecord) {}
}

impl Default for PolicyParts {
    /// No words, no review hook, everybody normal.
    fn default() -> Self {
        PolicyParts {
            policy: Arc::default(),
            words: Arc::new(WordFilter::new(Vec::new())),
            word_strategies: WordStrategies {
                default: WordStrategy::Reject,
                by_type: Default::default(),
            },
            hits: Arc::new(DiscardHits),
            review: None,
        }
    }
}

/// The whole stack, in DESIGN §6 order. Read top to bottom: a command
/// enters at `auth` and, if nothing rejects it, is stored last.
pub fn build_pipeline(
    config: &PipelineConfig,
    store: Arc<dyn Store>,
    parts: &PolicyParts,
) -> SendService {
    let stack = ServiceBuilder::new()
        // 1. auth: the principal may send as `draft.sender`; not muted or
        //    forbidden.
        .layer(AuthLayer::new(parts.policy.clone()))
        // 2. validate: conversation type and target, sizes.
        .layer(ValidateLayer::new(config.limits.clone()))
        // 3. dedupe: a resend within the window gets the original ack
        //    (before rate limiting: a retry storm of one message costs one
        //    token).
        .layer(DedupeLayer::new(config.dedupe_window))
        // 4. rate limit: token buckets per user and per device (per-user
        //    overrides), then the daily quota (counted by the store).
        .layer(RateLimitLayer::new(
            config.rate.clone(),
            parts.policy.clone(),
        ))
        .layer(QuotaLayer::new(config.daily_quota, sent_counter(&store)))
        // 5. sensitive words: reject / drop / mask, every hit recorded.
        .layer(WordFilterLayer::new(
            parts.words.clone(),
            parts.word_strategies.clone(),
            parts.hits.clone(),
        ))
        // 6. review hook: synchronous verdict before the store, or
        //    asynchronous forwarding after it.
        .layer(ReviewLayer::optional(parts.review.clone()))
        // 7. store: resolve recipients, durable append, fan-out.
        .service(StoreService::new(store));
    BoxCloneSyncService::new(stack)
}

/// The quota's counter on `store`.
fn sent_counter(store: &Arc<dyn Store>) -> SentCounter {
    let store = store.clone();
    Arc::new(move |user: String, day: i64| {
        let store = store.clone();
        Box::pin(async move { store.sent_on_day(&user, day).await })
    })
}

#[cfg(test)]
pub(crate) mod test_support;
