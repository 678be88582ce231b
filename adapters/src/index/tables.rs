//! The redb tables of the message index, the same in both stores.

use imgate_core::StoreError;
use redb::{TableDefinition, WriteTransaction};

/// message_id → binary [`super::StoredMessage`] row (`row.rs`).
pub const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("msg");
/// (user, message_id): the user's timeline (sent or received), the source
/// of sync and of every device's deliveries. Keys are the UTF-8 bytes
/// (byte keys compare without re-validating UTF-8 on every comparison).
pub const TIMELINE: TableDefinition<(&[u8], u64), ()> = TableDefinition::new("timeline");
/// (conversation history key, message_id): conversation history.
pub const CONV_INDEX: TableDefinition<(&[u8], u64), ()> = TableDefinition::new("conv");
/// group id → JSON `Group`.
pub const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// setting key → value (cluster-wide settings such as the policy).
pub const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");
/// old id of an imported message → the message_id it got (migration).
pub const IMPORTS: TableDefinition<&str, u64> = TableDefinition::new("imports");
/// Store-specific counters and positions (the file's format, the RabbitMQ
/// indexer's stream offset, ...).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `META` key of the index format; files of another format are converted
/// or rebuilt by their store.
pub const FORMAT_KEY: &str = "format";
/// This module's format: binary rows, timelines, no dedupe or pending rows;
/// since 3, conversations and expiry entries.
pub const FORMAT: u64 = 3;

/// The format before conversations (converted by
/// [`super::conversations::rebuild`]).
pub const FORMAT_BEFORE_CONVERSATIONS: u64 = 2;

pub fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("index: {e}"))
}

pub fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("index: {e}"))
}

/// Create every table of the index in `txn` (so reads never meet a
/// missing one).
pub fn create_all(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(MESSAGES).map_err(io)?;
    txn.open_table(TIMELINE).map_err(io)?;
    txn.open_table(CONV_INDEX).map_err(io)?;
    txn.open_table(GROUPS).map_err(io)?;
    txn.open_table(SETTINGS).map_err(io)?;
    txn.open_table(IMPORTS).map_err(io)?;
    txn.open_table(META).map_err(io)?;
    txn.open_table(super::daily_sent::DAILY_SENT).map_err(io)?;
    txn.open_table(super::conversations::CONVERSATIONS)
        .map_err(io)?;
    txn.open_table(super::prune::EXPIRES).map_err(io)?;
    Ok(())
}
