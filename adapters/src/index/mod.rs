//! The message index both stores keep in redb: the embedded store as its
//! source of truth, the RabbitMQ store as each node's view of the log.
//!
//! One message is written once: a binary row (`row.rs`), packed with its
//! neighbours into page-sized chunks (`chunk.rs`, `messages.rs`), one
//! conversation-history entry, and one timeline entry per recipient
//! user (the source of sync and of every device's deliveries). Resends are
//! recognised from memory rebuilt from the rows (`dedupe.rs`); the daily
//! quota's counts are written once per sender per transaction
//! (`daily_sent.rs`).
//!
//! - `tables.rs`: the table definitions and the format marker;
//! - `row.rs`: the binary row codec;
//! - `write.rs`: [`IndexWrite`], the writes inside one transaction;
//! - `read.rs`: reads on a snapshot;
//! - `dedupe.rs`: the resend memory; `import.rs`: ids for imports;
//! - `conversations.rs`: each user's conversation list (newest id, read
//!   position, unread count);
//! - `prune.rs`: expired messages and the retention.
//!
//! Message semantics (`docs/messages.md`): a live-only message (persist
//! flag 0 or 4) is never written; reads skip expired messages.

mod chunk;
pub mod conversations;
pub(crate) mod daily_sent;
mod dedupe;
mod import;
mod messages;
pub mod prune;
pub mod read;
mod row;
pub mod tables;
mod write;

pub use dedupe::DedupeMemory;
pub use messages::last_id;
pub use row::StoredMessage;
pub use write::{rebuild_dedupe, IndexWrite};
