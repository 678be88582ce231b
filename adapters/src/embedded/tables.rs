//! The redb tables of the embedded store and the stored record format.

use imgate_core::model::Message;
use imgate_core::StoreError;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// message_id → JSON [`StoredMessage`].
pub const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// (user, message_id): the messages a user can sync (sent or received).
pub const USER_INDEX: TableDefinition<(&str, u64), ()> = TableDefinition::new("user_index");
/// (conversation history key, message_id): conversation history.
pub const CONV_INDEX: TableDefinition<(&str, u64), ()> = TableDefinition::new("conv_index");
/// (sender, client_msg_id) → (message_id, stored at ms).
pub const DEDUPE: TableDefinition<(&str, &str), (u64, i64)> = TableDefinition::new("dedupe");
/// message_id → (sender, client_msg_id): dedupe entries in time order, to
/// expire them.
pub const DEDUPE_ORDER: TableDefinition<u64, (&str, &str)> = TableDefinition::new("dedupe_order");
/// (user, device) → last attach (ms): devices that get pending deliveries.
pub const DEVICES: TableDefinition<(&str, &str), i64> = TableDefinition::new("devices");
/// (user, device, message_id): delivered to nobody yet or not acked.
pub const PENDING: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("pending");
/// group id → JSON `Group`.
pub const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// setting key → value (cluster-wide settings such as the policy).
pub const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");
/// old id of an imported message → the message_id it got (migration).
pub const IMPORTS: TableDefinition<&str, u64> = TableDefinition::new("imports");

/// A message with the users it was fanned out to (needed by recall and by
/// history filtering of `toUsers`-narrowed group messages).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    pub message: Message,
    pub recipients: Vec<String>,
}

pub fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub fn decode(bytes: &[u8]) -> Result<StoredMessage, StoreError> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

/// Create every table (so reads never meet a missing one) and return the
/// highest message id stored, for the id generator to resume after.
pub fn create_all(db: &redb::Database) -> Result<u64, StoreError> {
    let txn = db.begin_write().map_err(io)?;
    let last = {
        let messages = txn.open_table(MESSAGES).map_err(io)?;
        txn.open_table(USER_INDEX).map_err(io)?;
        txn.open_table(CONV_INDEX).map_err(io)?;
        txn.open_table(DEDUPE).map_err(io)?;
        txn.open_table(DEDUPE_ORDER).map_err(io)?;
        txn.open_table(DEVICES).map_err(io)?;
        txn.open_table(PENDING).map_err(io)?;
        txn.open_table(GROUPS).map_err(io)?;
        txn.open_table(SETTINGS).map_err(io)?;
        txn.open_table(IMPORTS).map_err(io)?;
        txn.open_table(crate::daily_sent::DAILY_SENT).map_err(io)?;
        let last = messages
            .last()
            .map_err(io)?
            .map(|(k, _)| k.value())
            .unwrap_or(0);
        last
    };
    txn.commit().map_err(io)?;
    Ok(last)
}
