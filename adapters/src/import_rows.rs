//! Placing an imported message (`Store::import`) in the tables both stores
//! keep in the same shape: messages by id (JSON `{message, recipients}`),
//! the conversation and user indexes, and old id → new id.

use imgate_core::id::import_ids;
use imgate_core::model::Message;
use imgate_core::store::{ImportMessage, IMPORT_MS_FULL, IMPORT_TOO_OLD};
use imgate_core::StoreError;
use redb::{ReadableTable, Table};
use serde::Serialize;

/// The tables an import writes, borrowed from a store's write transaction.
pub(crate) struct ImportTables<'a, 't> {
    pub messages: &'a mut Table<'t, u64, &'static [u8]>,
    pub conv_index: &'a mut Table<'t, (&'static str, u64), ()>,
    pub user_index: &'a mut Table<'t, (&'static str, u64), ()>,
    pub imports: &'a mut Table<'t, &'static str, u64>,
}

/// The stored row (the same JSON as each store's `StoredMessage`).
#[derive(Serialize)]
struct Row<'a> {
    message: &'a Message,
    recipients: &'a [String],
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("import: {e}"))
}

/// The id of an earlier import of the same old id (duplicate), or the
/// first free id of the message's millisecond; or why it is refused.
pub(crate) fn import_one(
    t: ImportTables<'_, '_>,
    item: &ImportMessage,
) -> Result<Result<(u64, bool), String>, StoreError> {
    if let Some(id) = t.imports.get(item.old_id.as_str()).map_err(io)? {
        return Ok(Ok((id.value(), true)));
    }
    let Some(candidates) = import_ids(item.message.server_ts) else {
        return Ok(Err(IMPORT_TOO_OLD.into()));
    };
    let mut chosen = None;
    for id in candidates {
        if t.messages.get(id).map_err(io)?.is_none() {
            chosen = Some(id);
            break;
        }
    }
    let Some(id) = chosen else {
        return Ok(Err(IMPORT_MS_FULL.into()));
    };
    let message = Message {
        message_id: id,
        ..item.message.clone()
    };
    let bytes = serde_json::to_vec(&Row {
        message: &message,
        recipients: &item.recipients,
    })
    .map_err(|e| StoreError::Corrupt(format!("import: {e}")))?;
    t.messages.insert(id, bytes.as_slice()).map_err(io)?;
    let key = message.conversation.history_key(&message.sender);
    t.conv_index.insert((key.as_str(), id), ()).map_err(io)?;
    for user in &item.recipients {
        t.user_index.insert((user.as_str(), id), ()).map_err(io)?;
    }
    t.imports.insert(item.old_id.as_str(), id).map_err(io)?;
    Ok(Ok((id, false)))
}
