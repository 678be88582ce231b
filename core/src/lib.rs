//! imgate-core: the protocol-independent heart of imgate.
//!
//! Layout:
//! - [`model`]: `MessagePayload`, `Conversation`, `Message`, platforms, and
//!   the JSON shapes of DESIGN §5.5 shared by HTTP, SSE, MQTT and webhooks.
//! - [`error`]: the numeric error codes of DESIGN §4 and [`ImError`].
//! - [`id`]: the cluster-unique, time-ordered message id generator.
//! - [`store`]: the [`Store`] trait every storage adapter implements.
//! - [`words`]: the sensitive-word list, normalization and matcher.
//! - [`pipeline`]: the tower policy stack every inbound message passes,
//!   built in one function ([`pipeline::build_pipeline`]).
//!
//! Nothing here opens a socket or a file: codecs and adapters depend on this
//! crate, never the other way round.
#![forbid(unsafe_code)]

pub mod error;
pub mod id;
pub mod model;
pub mod pipeline;
pub mod store;
pub mod words;

pub use error::{ErrorCode, ImError};
pub use model::{Conversation, ConversationType, Message, MessagePayload, Platform, PlatformClass};
pub use store::{BoxFuture, Store, StoreError};

/// Milliseconds since the Unix epoch, as used for `server_ts`.
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day (days since the Unix epoch) of a time in ms: the key of the
/// daily quota's counter ([`Store::sent_on_day`]).
pub fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}
