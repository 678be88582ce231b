//! Where imported messages (`Store::import`) go, a whole batch at a time:
//! an id in each message's own millisecond on the reserved import node id
//! ([`import_ids`]), or the id an earlier import of the same old id got.
//!
//! A batch is placed in two steps so that each stored chunk is read and
//! written once per batch, not once per message: first every message
//! gets its id (reads only: the imports table, and the chunks covering
//! each candidate id, one chunk remembered at a time), then the rows go
//! in ascending id order ([`Tail::put_sorted`]) and the conversation,
//! timeline and old-id entries in key order (neighbouring B-tree pages).
//! Imported history usually lands below live messages, where a per
//! message insert would rewrite the same page-sized chunk again and again.

use std::collections::{HashMap, HashSet};

use imgate_core::id::import_ids;
use imgate_core::model::Message;
use imgate_core::store::{ImportMessage, IMPORT_LIVE_ONLY, IMPORT_MS_FULL, IMPORT_TOO_OLD};
use imgate_core::StoreError;
use redb::{ReadableTable, Table};

use super::chunk;
use super::conversations;
use super::row::{self, StoredMessage};
use super::tables::{corrupt, io};
use super::write::IndexWrite;

/// What became of each message of a batch, in order: `(id, duplicate)`
/// or why it was refused.
pub(crate) type Placed = Vec<Result<(u64, bool), String>>;

/// Import `batch` inside `t`'s transaction.
pub(crate) fn import_batch(
    t: &mut IndexWrite<'_>,
    batch: &[ImportMessage],
) -> Result<Placed, StoreError> {
    // Rows appended earlier in this transaction are read from the table.
    t.flush_rows()?;
    let mut out = Vec::with_capacity(batch.len());
    // New ids chosen in this batch, and old ids seen in it.
    let mut taken: HashSet<u64> = HashSet::with_capacity(batch.len());
    let mut seen: HashMap<&str, u64> = HashMap::with_capacity(batch.len());
    let mut fresh: Vec<(u64, &ImportMessage)> = Vec::with_capacity(batch.len());
    {
        let mut stored = StoredIds::default();
        for item in batch {
            out.push(choose_id(t, &mut stored, &taken, &seen, item)?);
            if let Some(Ok((id, false))) = out.last() {
                taken.insert(*id);
                seen.insert(item.old_id.as_str(), *id);
                fresh.push((*id, item));
            }
        }
    }
    fresh.sort_unstable_by_key(|(id, _)| *id);
    let rows: Vec<(u64, Vec<u8>)> = fresh
        .iter()
        .map(|(id, item)| (*id, row::encode(&stored_row(*id, item))))
        .collect();
    t.put_rows_sorted(&rows)?;
    let mut conv: Vec<(String, u64)> = fresh
        .iter()
        .map(|(id, item)| {
            let m = &item.message;
            (m.conversation.history_key(&m.sender), *id)
        })
        .collect();
    conv.sort_unstable();
    for (key, id) in &conv {
        t.conv_index.insert((key.as_bytes(), *id), ()).map_err(io)?;
    }
    let mut timeline: Vec<(&str, u64)> = fresh
        .iter()
        .flat_map(|(id, item)| item.recipients.iter().map(move |u| (u.as_str(), *id)))
        .collect();
    timeline.sort_unstable();
    timeline.dedup();
    for (user, id) in &timeline {
        t.timeline.insert((user.as_bytes(), *id), ()).map_err(io)?;
    }
    // Imported history is read history: each recipient's conversation
    // entry only moves to its newest message (one update per user and
    // conversation, not per message), never counts as unread.
    let mut newest: HashMap<(&str, &str), (u64, &ImportMessage)> = HashMap::new();
    let by_id: HashMap<u64, &ImportMessage> = fresh.iter().map(|(id, m)| (*id, *m)).collect();
    for (key, id) in &conv {
        let Some(item) = by_id.get(id) else { continue };
        for user in &item.recipients {
            let slot = newest
                .entry((user.as_str(), key.as_str()))
                .or_insert((*id, item));
            if *id > slot.0 {
                *slot = (*id, item);
            }
        }
        if let Some(at) = item.message.expires_at() {
            t.expires.insert((at, *id), ()).map_err(io)?;
        }
    }
    for ((user, key), (id, item)) in newest {
        let m = Message {
            message_id: id,
            ..item.message.clone()
        };
        conversations::touch(&mut t.conversations, user, key, &m, false)?;
    }
    let mut old: Vec<(&str, u64)> = fresh
        .iter()
        .map(|(id, item)| (item.old_id.as_str(), *id))
        .collect();
    old.sort_unstable();
    for (old_id, id) in &old {
        t.imports.insert(*old_id, *id).map_err(io)?;
    }
    Ok(out)
}

fn stored_row(id: u64, item: &ImportMessage) -> StoredMessage {
    StoredMessage {
        message: Message {
            message_id: id,
            ..item.message.clone()
        },
        recipients: item.recipients.clone(),
        sender_device: None,
    }
}

/// `(id, true)` for an old id imported before (in an earlier batch or
/// earlier in this one), `(id, false)` for the first free id of the
/// message's millisecond, or why it is refused.
fn choose_id(
    t: &IndexWrite<'_>,
    stored: &mut StoredIds,
    taken: &HashSet<u64>,
    seen: &HashMap<&str, u64>,
    item: &ImportMessage,
) -> Result<Result<(u64, bool), String>, StoreError> {
    if let Some(id) = seen.get(item.old_id.as_str()) {
        return Ok(Ok((*id, true)));
    }
    if let Some(id) = t.imports.get(item.old_id.as_str()).map_err(io)? {
        return Ok(Ok((id.value(), true)));
    }
    if item.message.payload.is_live_only() {
        return Ok(Err(IMPORT_LIVE_ONLY.into()));
    }
    let Some(candidates) = import_ids(item.message.server_ts) else {
        return Ok(Err(IMPORT_TOO_OLD.into()));
    };
    for id in candidates {
        if !taken.contains(&id) && !stored.exists(&t.messages, id)? {
            return Ok(Ok((id, false)));
        }
    }
    Ok(Err(IMPORT_MS_FULL.into()))
}

/// Whether an id has a stored row, remembering the last chunk read and
/// the range of ids it covers (up to the next chunk's key), so the
/// candidates of neighbouring milliseconds cost one lookup between them.
#[derive(Default)]
struct StoredIds {
    /// `(key, next chunk's key or u64::MAX, chunk bytes)`.
    chunk: Option<(u64, u64, Vec<u8>)>,
    /// Ids below the first chunk: `(first key)`.
    below: Option<u64>,
}

impl StoredIds {
    fn exists(
        &mut self,
        table: &Table<'_, u64, &'static [u8]>,
        id: u64,
    ) -> Result<bool, StoreError> {
        if self.below.is_some_and(|first| id < first) {
            return Ok(false);
        }
        let hit = matches!(&self.chunk, Some((key, next, _)) if *key <= id && id < *next);
        if !hit {
            let Some(entry) = table.range(..=id).map_err(io)?.next_back() else {
                self.below = Some(match table.first().map_err(io)? {
                    Some((k, _)) => k.value(),
                    None => u64::MAX,
                });
                return Ok(false);
            };
            let (k, v) = entry.map_err(io)?;
            let (key, bytes) = (k.value(), v.value().to_vec());
            let next = match id.checked_add(1) {
                Some(after) => match table.range(after..).map_err(io)?.next() {
                    Some(e) => e.map_err(io)?.0.value(),
                    None => u64::MAX,
                },
                None => u64::MAX,
            };
            self.chunk = Some((key, next, bytes));
        }
        match &self.chunk {
            Some((key, _, bytes)) => Ok(chunk::find(*key, bytes, id).map_err(corrupt)?.is_some()),
            None => Ok(false),
        }
    }
}
