//! Read paths on redb snapshots (run on the blocking pool).

use std::sync::Arc;

use imgate_core::store::{Group, SyncPage};
use imgate_core::StoreError;
use redb::Database;

use super::tables::{self, corrupt, io, StoredMessage};

pub fn record(db: &Database, id: u64) -> Result<Option<StoredMessage>, StoreError> {
    let txn = db.begin_read().map_err(io)?;
    let t = txn.open_table(tables::MESSAGES).map_err(io)?;
    let found = t.get(id).map_err(io)?;
    found.map(|v| tables::decode(v.value())).transpose()
}

pub fn sync(db: &Database, user: &str, since: u64, limit: usize) -> Result<SyncPage, StoreError> {
    let limit = limit.max(1);
    let txn = db.begin_read().map_err(io)?;
    let index = txn.open_table(tables::USER_INDEX).map_err(io)?;
    let messages = txn.open_table(tables::MESSAGES).map_err(io)?;
    let mut page = SyncPage::default();
    let start = since.saturating_add(1);
    for entry in index.range((user, start)..=(user, u64::MAX)).map_err(io)? {
        let (k, _) = entry.map_err(io)?;
        if page.messages.len() == limit {
            page.has_more = true;
            break;
        }
        let id = k.value().1;
        if let Some(v) = messages.get(id).map_err(io)? {
            page.messages
                .push(Arc::new(tables::decode(v.value())?.message));
        }
    }
    Ok(page)
}

pub fn history(
    db: &Database,
    user: &str,
    key: &str,
    before: u64,
    limit: usize,
) -> Result<SyncPage, StoreError> {
    let limit = limit.max(1);
    let before = if before == 0 { u64::MAX } else { before };
    let txn = db.begin_read().map_err(io)?;
    let index = txn.open_table(tables::CONV_INDEX).map_err(io)?;
    let messages = txn.open_table(tables::MESSAGES).map_err(io)?;
    let mut page = SyncPage::default();
    for entry in index.range((key, 0)..(key, before)).map_err(io)?.rev() {
        let (k, _) = entry.map_err(io)?;
        let id = k.value().1;
        let Some(v) = messages.get(id).map_err(io)? else {
            continue;
        };
        let stored = tables::decode(v.value())?;
        if !stored.recipients.iter().any(|r| r == user) {
            continue;
        }
        if page.messages.len() == limit {
            page.has_more = true;
            break;
        }
        page.messages.push(Arc::new(stored.message));
    }
    Ok(page)
}

pub fn last_message_id(db: &Database, user: &str) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(io)?;
    let index = txn.open_table(tables::USER_INDEX).map_err(io)?;
    let last = index
        .range((user, 0)..=(user, u64::MAX))
        .map_err(io)?
        .next_back()
        .transpose()
        .map_err(io)?
        .map(|(k, _)| k.value().1)
        .unwrap_or(0);
    Ok(last)
}

pub fn group(db: &Database, id: &str) -> Result<Option<Group>, StoreError> {
    let txn = db.begin_read().map_err(io)?;
    let t = txn.open_table(tables::GROUPS).map_err(io)?;
    let found = t.get(id).map_err(io)?;
    found
        .map(|v| serde_json::from_slice(v.value()).map_err(corrupt))
        .transpose()
}

pub fn setting(db: &Database, key: &str) -> Result<Option<String>, StoreError> {
    let txn = db.begin_read().map_err(io)?;
    let t = txn.open_table(tables::SETTINGS).map_err(io)?;
    let found = t.get(key).map_err(io)?;
    Ok(found.map(|v| v.value().to_string()))
}

/// Every message with id > `after`, ascending (export).
pub fn scan(db: &Database, after: u64, limit: usize) -> Result<SyncPage, StoreError> {
    let limit = limit.max(1);
    let txn = db.begin_read().map_err(io)?;
    let messages = txn.open_table(tables::MESSAGES).map_err(io)?;
    let mut page = SyncPage::default();
    for entry in messages.range(after.saturating_add(1)..).map_err(io)? {
        let (_, v) = entry.map_err(io)?;
        if page.messages.len() == limit {
            page.has_more = true;
            break;
        }
        page.messages
            .push(Arc::new(tables::decode(v.value())?.message));
    }
    Ok(page)
}
