//! imgate-adapters: the storage back-ends behind [`imgate_core::Store`].
//!
//! - [`embedded`]: the default store, redb files under the data directory,
//!   group-committed with fsync, in-process fan-out, a delivery cursor per
//!   device.
//! - `index`: the message index both stores keep in redb (one row per
//!   message, timelines per user, conversation history).
//! - [`rabbit`]: several gateway nodes on one RabbitMQ: a log stream as the
//!   source of truth, node-local indexes built from it, delivery cursors
//!   shared through a control stream; no broker object per user or device
//!   (`IMGATE_STORE=amqp://...`).
//! - `router`: the in-process fan-out both stores use (attached devices,
//!   user listeners, cursor and announcement watchers).
//! - [`review_hook`]: the HTTP client behind the pipeline's review hook
//!   (forward and review modes).
//! - [`event_hook`]: the event webhooks' sender (bounded queue, retries,
//!   signed like the review hook).
//!
//! Adapters never see codecs: they store and route `Message`s only.
#![forbid(unsafe_code)]

pub mod embedded;
pub mod event_hook;
mod index;
pub mod rabbit;
pub mod review_hook;
mod router;

pub use embedded::{EmbeddedConfig, EmbeddedStore};
pub use event_hook::{EventHook, EventHookConfig};
pub use rabbit::{RabbitConfig, RabbitStore};
pub use review_hook::HttpReviewHook;
