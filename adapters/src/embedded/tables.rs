//! The embedded store's own tables (beside the shared index) and the
//! conversion of files written by the first format.

use std::collections::HashMap;

use imgate_core::model::Message;
use imgate_core::StoreError;
use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde::Deserialize;

use crate::index::tables::{
    self as index_tables, io, FORMAT, FORMAT_BEFORE_CONVERSATIONS, FORMAT_KEY, META,
};
use crate::index::{last_id, IndexWrite, StoredMessage};

/// (user, device) → delivery cursor: the highest id of the user's timeline
/// below which everything for that device was acked. A row exists for
/// every device that ever attached.
pub const CURSORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("cursors");

// The first format (JSON rows, a pending row per message and device,
// dedupe rows); converted on open.
const V1_MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const V1_DEVICES: TableDefinition<(&str, &str), i64> = TableDefinition::new("devices");
const V1_PENDING: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("pending");
const V1_DROPPED: [&str; 7] = [
    "messages",
    "conv_index",
    "user_index",
    "devices",
    "pending",
    "dedupe",
    "dedupe_order",
];

#[derive(Deserialize)]
struct V1Row {
    message: Message,
    recipients: Vec<String>,
}

/// Create every table, convert a first-format file, and return the highest
/// message id stored (for the id generator to resume after).
pub fn prepare(db: &redb::Database) -> Result<u64, StoreError> {
    let txn = db.begin_write().map_err(io)?;
    index_tables::create_all(&txn)?;
    txn.open_table(CURSORS).map_err(io)?;
    let has_v1 = txn
        .list_tables()
        .map_err(io)?
        .any(|t| t.name() == V1_MESSAGES.name());
    let format = {
        let meta = txn.open_table(META).map_err(io)?;
        let found = meta.get(FORMAT_KEY).map_err(io)?;
        found.map(|v| v.value())
    };
    if has_v1 {
        convert_v1(&txn)?;
    }
    if has_v1 || format == Some(FORMAT_BEFORE_CONVERSATIONS) {
        let n = crate::index::conversations::rebuild(&txn)?;
        tracing::info!(
            messages = n,
            "embedded store: conversations built from the stored history"
        );
    }
    let last = {
        let messages = txn.open_table(index_tables::MESSAGES).map_err(io)?;
        let mut meta = txn.open_table(META).map_err(io)?;
        meta.insert(FORMAT_KEY, FORMAT).map_err(io)?;
        last_id(&messages)?
    };
    txn.commit().map_err(io)?;
    Ok(last)
}

/// Rewrite first-format rows as binary rows and timelines, and turn each
/// device's pending rows into a cursor just below its oldest pending id.
fn convert_v1(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut converted = 0usize;
    let mut last = 0;
    {
        let old = txn.open_table(V1_MESSAGES).map_err(io)?;
        let mut index = IndexWrite::open(txn)?;
        for entry in old.iter().map_err(io)? {
            let (k, v) = entry.map_err(io)?;
            let row: V1Row = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt(format!("first-format row {}: {e}", k.value())))?;
            index.insert_uncounted(&StoredMessage {
                message: row.message,
                recipients: row.recipients,
                sender_device: None,
            })?;
            converted += 1;
            last = k.value();
        }
        index.flush_rows()?;
    }
    let mut cursors = HashMap::new();
    {
        let devices = txn.open_table(V1_DEVICES).map_err(io)?;
        for entry in devices.iter().map_err(io)? {
            let (k, _) = entry.map_err(io)?;
            let (u, d) = k.value();
            cursors.insert((u.to_string(), d.to_string()), last);
        }
        let pending = txn.open_table(V1_PENDING).map_err(io)?;
        for entry in pending.iter().map_err(io)? {
            let (k, _) = entry.map_err(io)?;
            let (u, d, id) = k.value();
            let c = cursors
                .entry((u.to_string(), d.to_string()))
                .or_insert(last);
            *c = (*c).min(id.saturating_sub(1));
        }
    }
    {
        let mut table = txn.open_table(CURSORS).map_err(io)?;
        for ((u, d), c) in &cursors {
            table.insert((u.as_str(), d.as_str()), *c).map_err(io)?;
        }
    }
    for name in V1_DROPPED {
        let def: TableDefinition<u64, u64> = TableDefinition::new(name);
        // Key and value types are not checked on delete.
        txn.delete_table(def).map_err(io)?;
    }
    tracing::info!(
        messages = converted,
        devices = cursors.len(),
        "embedded store: converted a first-format data file"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::read;
    use imgate_core::model::{Conversation, MessagePayload};

    fn v1_row(id: u64, text: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "message": Message {
                message_id: id,
                sender: "alice".into(),
                conversation: Conversation::private("bob"),
                payload: MessagePayload::text(text),
                server_ts: 1_780_000_000_000,
                client_msg_id: format!("c{id}"),
                to_users: vec![],
            },
            "recipients": ["alice", "bob"],
        }))
        .unwrap()
    }

    #[test]
    fn a_first_format_file_is_converted_with_its_pending_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("v1.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut m = txn.open_table(V1_MESSAGES).unwrap();
            for id in [10, 20, 30] {
                m.insert(id, v1_row(id, &format!("m{id}")).as_slice())
                    .unwrap();
            }
            let mut d = txn.open_table(V1_DEVICES).unwrap();
            d.insert(("bob", "phone"), 1).unwrap();
            d.insert(("bob", "pc"), 1).unwrap();
            let mut p = txn.open_table(V1_PENDING).unwrap();
            p.insert(("bob", "phone", 20), ()).unwrap();
            p.insert(("bob", "phone", 30), ()).unwrap();
        }
        txn.commit().unwrap();
        assert_eq!(prepare(&db).unwrap(), 30);
        let r = db.begin_read().unwrap();
        let synced: Vec<String> = read::sync(&r, "bob", 0, 10)
            .unwrap()
            .messages
            .iter()
            .map(|m| m.payload.searchable_content.clone())
            .collect();
        assert_eq!(synced, ["m10", "m20", "m30"]);
        let cursors = r.open_table(CURSORS).unwrap();
        assert_eq!(cursors.get(("bob", "phone")).unwrap().unwrap().value(), 19);
        assert_eq!(cursors.get(("bob", "pc")).unwrap().unwrap().value(), 30);
        let names: Vec<String> = r
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        assert!(!names
            .iter()
            .any(|n| n == "pending" || n == "messages" || n == "conv_index"));
        drop(r);
        // Opening again changes nothing.
        assert_eq!(prepare(&db).unwrap(), 30);
    }

    #[test]
    fn a_file_without_conversations_gets_them_built_as_read() {
        use crate::index::conversations::CONVERSATIONS;
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("v2.redb")).unwrap();
        prepare(&db).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut index = IndexWrite::open(&txn).unwrap();
            for id in [10, 20] {
                let mut message = serde_json::from_slice::<V1Row>(&v1_row(id, "x"))
                    .unwrap()
                    .message;
                message.payload.expire_duration = 60;
                index
                    .insert(&StoredMessage {
                        message,
                        recipients: vec!["alice".into(), "bob".into()],
                        sender_device: None,
                    })
                    .unwrap();
            }
            index.finish(0).unwrap();
        }
        // As the second format left it: no conversations, format 2.
        txn.delete_table(CONVERSATIONS).unwrap();
        txn.delete_table(crate::index::prune::EXPIRES).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(FORMAT_KEY, FORMAT_BEFORE_CONVERSATIONS)
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(prepare(&db).unwrap(), 20);
        let r = db.begin_read().unwrap();
        let page = read::conversations(&r, "bob", 0, 10).unwrap();
        assert_eq!(page.conversations.len(), 1);
        let c = &page.conversations[0];
        assert_eq!((c.last_message_id, c.read_upto, c.unread), (20, 20, 0));
        assert_eq!(c.conversation.target, "alice");
        use redb::ReadableTableMetadata;
        let expires = r.open_table(crate::index::prune::EXPIRES).unwrap();
        assert_eq!(expires.len().unwrap(), 2, "expiry entries rebuilt too");
    }
}
