//! Reads of the index on a redb read snapshot (callers run them on the
//! blocking pool). Sync, device pages and history leave out messages
//! whose `expireDuration` passed (pruning removes them later).

use std::sync::Arc;

use imgate_core::id::{node_of, IMPORT_NODE_ID};
use imgate_core::store::{CatchUpPage, ConversationPage, Group, SyncPage};
use imgate_core::{now_ms, StoreError};
use redb::ReadTransaction;

use super::messages::{each_from, Rows};
use super::row::{self, StoredMessage};
use super::tables::{self, corrupt, io};

/// Timeline entries one catch-up page looks at, at most.
const CATCH_UP_SCAN: usize = 1024;

pub fn get(txn: &ReadTransaction, id: u64) -> Result<Option<StoredMessage>, StoreError> {
    let t = txn.open_table(tables::MESSAGES).map_err(io)?;
    Rows::new(&t).get(id)
}

/// Message `id` if `user` is one of its recipients (see
/// `Store::get_for`).
pub fn get_for(
    txn: &ReadTransaction,
    id: u64,
    user: &str,
) -> Result<Option<StoredMessage>, StoreError> {
    Ok(get(txn, id)?.filter(|s| s.recipients.iter().any(|r| r == user)))
}

/// Messages in `user`'s timeline after `since`, ascending.
pub fn sync(
    txn: &ReadTransaction,
    user: &str,
    since: u64,
    limit: usize,
) -> Result<SyncPage, StoreError> {
    let limit = limit.max(1);
    let timeline = txn.open_table(tables::TIMELINE).map_err(io)?;
    let messages = txn.open_table(tables::MESSAGES).map_err(io)?;
    let mut rows = Rows::new(&messages);
    let mut page = SyncPage::default();
    let start = since.saturating_add(1);
    let now = now_ms();
    for entry in timeline
        .range((user.as_bytes(), start)..=(user.as_bytes(), u64::MAX))
        .map_err(io)?
    {
        let (k, _) = entry.map_err(io)?;
        if page.messages.len() == limit {
            page.has_more = true;
            break;
        }
        if let Some(stored) = rows.get(k.value().1)? {
            if !stored.message.is_expired(now) {
                page.messages.push(Arc::new(stored.message));
            }
        }
    }
    Ok(page)
}

/// The next messages for `device` of `user` after `after`: its user's
/// timeline without what this device sent itself and without imported
/// messages (history only, never pushed).
pub fn device_page(
    txn: &ReadTransaction,
    user: &str,
    device: &str,
    after: u64,
    limit: usize,
) -> Result<CatchUpPage, StoreError> {
    let limit = limit.max(1);
    let timeline = txn.open_table(tables::TIMELINE).map_err(io)?;
    let messages = txn.open_table(tables::MESSAGES).map_err(io)?;
    let mut rows = Rows::new(&messages);
    let mut page = CatchUpPage {
        scanned_to: after,
        done: true,
        ..CatchUpPage::default()
    };
    let now = now_ms();
    let start = after.saturating_add(1);
    for (scanned, entry) in timeline
        .range((user.as_bytes(), start)..=(user.as_bytes(), u64::MAX))
        .map_err(io)?
        .enumerate()
    {
        if page.messages.len() == limit || scanned == CATCH_UP_SCAN {
            page.done = false;
            break;
        }
        let id = entry.map_err(io)?.0.value().1;
        page.scanned_to = id;
        if node_of(id) == IMPORT_NODE_ID {
            continue;
        }
        let Some(stored) = rows.get(id)? else {
            continue;
        };
        let own = stored.message.sender == user && stored.sender_device.as_deref() == Some(device);
        if !own && !stored.message.is_expired(now) {
            page.messages.push(Arc::new(stored.message));
        }
    }
    Ok(page)
}

/// One conversation's history as `user` sees it, newest first, ids below
/// `before` (0 = from the newest).
pub fn history(
    txn: &ReadTransaction,
    user: &str,
    key: &str,
    before: u64,
    limit: usize,
) -> Result<SyncPage, StoreError> {
    let limit = limit.max(1);
    let before = if before == 0 { u64::MAX } else { before };
    let index = txn.open_table(tables::CONV_INDEX).map_err(io)?;
    let messages = txn.open_table(tables::MESSAGES).map_err(io)?;
    let mut rows = Rows::new(&messages);
    let mut page = SyncPage::default();
    let now = now_ms();
    for entry in index
        .range((key.as_bytes(), 0)..(key.as_bytes(), before))
        .map_err(io)?
        .rev()
    {
        let (k, _) = entry.map_err(io)?;
        let Some(stored) = rows.get(k.value().1)? else {
            continue;
        };
        if !stored.recipients.iter().any(|r| r == user) || stored.message.is_expired(now) {
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

/// The newest id in `user`'s timeline (0 if none).
pub fn last_message_id(txn: &ReadTransaction, user: &str) -> Result<u64, StoreError> {
    let timeline = txn.open_table(tables::TIMELINE).map_err(io)?;
    let last = timeline
        .range((user.as_bytes(), 0)..=(user.as_bytes(), u64::MAX))
        .map_err(io)?
        .next_back()
        .transpose()
        .map_err(io)?
        .map(|(k, _)| k.value().1)
        .unwrap_or(0);
    Ok(last)
}

/// Every message with id > `after`, ascending (export).
pub fn scan(txn: &ReadTransaction, after: u64, limit: usize) -> Result<SyncPage, StoreError> {
    let limit = limit.max(1);
    let messages = txn.open_table(tables::MESSAGES).map_err(io)?;
    let mut page = SyncPage::default();
    each_from(&messages, after.saturating_add(1), |id, bytes| {
        if page.messages.len() == limit {
            page.has_more = true;
            return Ok(false);
        }
        let stored = row::decode(id, bytes).map_err(corrupt)?;
        page.messages.push(Arc::new(stored.message));
        Ok(true)
    })?;
    Ok(page)
}

pub fn group(txn: &ReadTransaction, id: &str) -> Result<Option<Group>, StoreError> {
    let t = txn.open_table(tables::GROUPS).map_err(io)?;
    let found = t.get(id).map_err(io)?;
    found
        .map(|v| serde_json::from_slice(v.value()).map_err(corrupt))
        .transpose()
}

/// Groups with an id above `after`, by id, at most `limit`, and whether
/// more follow (export).
pub fn scan_groups(
    txn: &ReadTransaction,
    after: &str,
    limit: usize,
) -> Result<(Vec<Group>, bool), StoreError> {
    let t = txn.open_table(tables::GROUPS).map_err(io)?;
    let mut out = Vec::new();
    let range = (std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded);
    for entry in t.range::<&str>(range).map_err(io)? {
        let (_, v) = entry.map_err(io)?;
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(serde_json::from_slice(v.value()).map_err(corrupt)?);
    }
    Ok((out, false))
}

pub fn setting(txn: &ReadTransaction, key: &str) -> Result<Option<String>, StoreError> {
    let t = txn.open_table(tables::SETTINGS).map_err(io)?;
    let found = t.get(key).map_err(io)?;
    Ok(found.map(|v| v.value().to_string()))
}

/// `user`'s conversations, newest activity first (see
/// `conversations.rs`).
pub fn conversations(
    txn: &ReadTransaction,
    user: &str,
    before: u64,
    limit: usize,
) -> Result<ConversationPage, StoreError> {
    super::conversations::list(txn, user, before, limit, now_ms())
}

pub fn sent_on_day(txn: &ReadTransaction, user: &str, day: i64) -> Result<u64, StoreError> {
    super::daily_sent::read(txn, user, day)
}
