//! The node-local index built from the log stream: what sync, history,
//! get, dedupe and groups read.
//!
//! One redb file per node and prefix (`<data_dir>/rabbit-<prefix>.redb`).
//! It is a cache of the stream, not a source of truth: every batch of log
//! records is applied in one write transaction together with the next
//! stream offset to read, so after a crash the index and its offset are
//! consistent and the node resumes from that offset. Commits are not
//! fsynced one by one (`Durability::None`); one in [`DURABLE_EVERY`] is,
//! so a crash replays at most that much of the stream. Deleting the file
//! rebuilds the index from the start of the stream.
//!
//! **Final ids.** Writers stamp a message with a provisional,
//! time-ordered id from their node's generator. Messages of different
//! nodes can reach the stream slightly out of id order, and a sync cursor
//! ("everything after X") would then skip the late one. So the indexer
//! assigns `final = max(last_final + 1, provisional)`: a pure function of
//! the stream order, hence the same on every node, and strictly increasing
//! in stream order. It equals the provisional id except when two nodes
//! raced within a few milliseconds. Writers learn the final id from their
//! own indexer before they answer; deliveries are translated through the
//! `prov` table.
//!
//! **Dedupe.** A message whose `(sender, client_msg_id)` was indexed less
//! than the dedupe window earlier (by record timestamps, not wall clock)
//! is a duplicate: it is not indexed, and its writer answers with the
//! original. Since every node applies the same rule to the same order, the
//! same copy wins everywhere, even when two nodes took the resend at once.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use imgate_core::id::first_id_at;
use imgate_core::model::Message;
use imgate_core::store::{Group, Imported, Recalled, SyncPage};
use imgate_core::StoreError;
use redb::{Database, Durability, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::record::{Origin, Record};
use crate::daily_sent;
use crate::import_rows::{import_one, ImportTables};

/// final message_id → JSON [`StoredMessage`].
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// (user, final id): what a user can sync.
const USER_INDEX: TableDefinition<(&str, u64), ()> = TableDefinition::new("user_index");
/// (conversation history key, final id).
const CONV_INDEX: TableDefinition<(&str, u64), ()> = TableDefinition::new("conv_index");
/// (sender, client_msg_id) → (final id, record timestamp ms).
const DEDUPE: TableDefinition<(&str, &str), (u64, i64)> = TableDefinition::new("dedupe");
/// final id → (sender, client_msg_id), to expire dedupe keys in order.
const DEDUPE_ORDER: TableDefinition<u64, (&str, &str)> = TableDefinition::new("dedupe_order");
/// provisional id → (final id, is a duplicate of that final id).
const PROV: TableDefinition<u64, (u64, bool)> = TableDefinition::new("prov");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// Cluster-wide settings (e.g. the policy): key → last value.
const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");
/// old id of an imported message → the final id it got (migration).
const IMPORTS: TableDefinition<&str, u64> = TableDefinition::new("imports");
/// next_offset, last_final, log_time.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// One fsynced commit per this many batches (the rest are `None`).
pub const DURABLE_EVERY: u64 = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    pub message: Message,
    pub recipients: Vec<String>,
}

/// Where the indexer stands in the stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexPosition {
    /// The next stream offset to read.
    pub next_offset: u64,
    /// Highest final id assigned.
    pub last_final: u64,
    /// Highest record timestamp seen (the log's clock, for dedupe expiry).
    pub log_time: i64,
    commits: u64,
}

/// What applying one record produced, for its writer (if on this node)
/// and for live listeners.
#[derive(Debug, Clone)]
pub enum Outcome {
    Message {
        message: Arc<Message>,
        duplicate: bool,
    },
    Recalled(Recalled),
    /// A withdrawn message (its final id, if it had been indexed).
    Withdrawn(Option<u64>),
    GroupPut,
    GroupDeleted(bool),
    /// A setting changed: its key and value, for watchers on this node.
    SettingPut(String, Arc<String>),
    /// What each imported message became.
    Imported(Vec<Imported>),
    /// An announcement: topic, payload, writer's time (nothing stored).
    Announced(String, String, i64),
    Marker,
}

#[derive(Debug)]
pub struct Applied {
    pub origin: Origin,
    pub outcome: Outcome,
    /// A new message and its recipients, to fan out to live listeners.
    pub fan_out: Option<(Arc<Message>, Vec<String>)>,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("rabbit index: {e}"))
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("rabbit index: {e}"))
}

fn closed() -> StoreError {
    StoreError::Unavailable("rabbit index: store closed".into())
}

fn decode(bytes: &[u8]) -> Result<StoredMessage, StoreError> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

pub struct Index {
    /// `None` once [`Index::close`] ran. Every transaction holds the read
    /// guard, so closing waits for them and the file lock is gone when it
    /// returns (a reopen in the same process then succeeds).
    db: RwLock<Option<Database>>,
    dedupe_window_ms: i64,
}

/// A transaction together with the guard that keeps the database open.
/// Fields drop in order: the transaction before the guard.
struct Txn<'a, T> {
    txn: T,
    _open: RwLockReadGuard<'a, Option<Database>>,
}

impl<T> std::ops::Deref for Txn<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.txn
    }
}

struct Tables<'t> {
    messages: Table<'t, u64, &'static [u8]>,
    user_index: Table<'t, (&'static str, u64), ()>,
    conv_index: Table<'t, (&'static str, u64), ()>,
    dedupe: Table<'t, (&'static str, &'static str), (u64, i64)>,
    dedupe_order: Table<'t, u64, (&'static str, &'static str)>,
    prov: Table<'t, u64, (u64, bool)>,
    groups: Table<'t, &'static str, &'static [u8]>,
    settings: Table<'t, &'static str, &'static str>,
    imports: Table<'t, &'static str, u64>,
    meta: Table<'t, &'static str, u64>,
    daily_sent: Table<'t, (i64, &'static str), u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            messages: txn.open_table(MESSAGES).map_err(io)?,
            user_index: txn.open_table(USER_INDEX).map_err(io)?,
            conv_index: txn.open_table(CONV_INDEX).map_err(io)?,
            dedupe: txn.open_table(DEDUPE).map_err(io)?,
            dedupe_order: txn.open_table(DEDUPE_ORDER).map_err(io)?,
            prov: txn.open_table(PROV).map_err(io)?,
            groups: txn.open_table(GROUPS).map_err(io)?,
            settings: txn.open_table(SETTINGS).map_err(io)?,
            imports: txn.open_table(IMPORTS).map_err(io)?,
            meta: txn.open_table(META).map_err(io)?,
            daily_sent: txn.open_table(daily_sent::DAILY_SENT).map_err(io)?,
        })
    }
}

impl Index {
    /// Open or create the index file; where it stands in the stream.
    pub fn open(
        path: &std::path::Path,
        dedupe_window_ms: i64,
    ) -> Result<(Index, IndexPosition), StoreError> {
        let db = Database::create(path)
            .map_err(|e| io(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(io)?;
        let pos = {
            let t = Tables::open(&txn)?;
            let get = |k: &str| -> Result<u64, StoreError> {
                Ok(t.meta.get(k).map_err(io)?.map(|v| v.value()).unwrap_or(0))
            };
            IndexPosition {
                next_offset: get("next_offset")?,
                last_final: get("last_final")?,
                log_time: get("log_time")? as i64,
                commits: 0,
            }
        };
        txn.commit().map_err(io)?;
        Ok((
            Index {
                db: RwLock::new(Some(db)),
                dedupe_window_ms,
            },
            pos,
        ))
    }

    /// Apply a batch of `(offset, record)` in one transaction and move the
    /// position past the last offset. Undecodable records were already
    /// skipped by the caller (passed as `None`).
    pub fn apply(
        &self,
        pos: &mut IndexPosition,
        batch: &[(u64, Option<Record>)],
    ) -> Result<Vec<Applied>, StoreError> {
        let mut next = *pos;
        let open = self.open_db();
        let Some(db) = open.as_ref() else {
            return Err(closed());
        };
        let mut txn = db.begin_write().map_err(io)?;
        next.commits += 1;
        txn.set_durability(if next.commits.is_multiple_of(DURABLE_EVERY) {
            Durability::Immediate
        } else {
            Durability::None
        });
        let mut out = Vec::with_capacity(batch.len());
        {
            let mut t = Tables::open(&txn)?;
            for (offset, record) in batch {
                if *offset < next.next_offset {
                    continue; // a chunk re-delivered from before our offset
                }
                next.next_offset = offset + 1;
                if let Some(record) = record {
                    out.push(self.apply_one(&mut t, &mut next, record)?);
                }
            }
            self.expire_dedupe(&mut t, next.log_time)?;
            daily_sent::expire(&mut t.daily_sent, next.log_time)?;
            t.meta.insert("next_offset", next.next_offset).map_err(io)?;
            t.meta.insert("last_final", next.last_final).map_err(io)?;
            t.meta
                .insert("log_time", next.log_time.max(0) as u64)
                .map_err(io)?;
        }
        txn.commit().map_err(io)?;
        *pos = next;
        Ok(out)
    }

    fn apply_one(
        &self,
        t: &mut Tables<'_>,
        pos: &mut IndexPosition,
        record: &Record,
    ) -> Result<Applied, StoreError> {
        let origin = record.origin();
        let (outcome, fan_out) = match record {
            Record::Message {
                message,
                recipients,
                ..
            } => self.apply_message(t, pos, message, recipients)?,
            Record::Recall { message_id, .. } => (Outcome::Recalled(recall(t, *message_id)?), None),
            Record::Withdraw { provisional, .. } => {
                (Outcome::Withdrawn(withdraw(t, *provisional)?), None)
            }
            Record::PutGroup { group, .. } => {
                let bytes = serde_json::to_vec(group).map_err(corrupt)?;
                t.groups
                    .insert(group.id.as_str(), bytes.as_slice())
                    .map_err(io)?;
                (Outcome::GroupPut, None)
            }
            Record::DeleteGroup { group_id, .. } => {
                let existed = t.groups.remove(group_id.as_str()).map_err(io)?.is_some();
                (Outcome::GroupDeleted(existed), None)
            }
            Record::PutSetting { key, value, .. } => {
                t.settings
                    .insert(key.as_str(), value.as_str())
                    .map_err(io)?;
                (
                    Outcome::SettingPut(key.clone(), Arc::new(value.clone())),
                    None,
                )
            }
            Record::Import { items, .. } => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let rows = ImportTables {
                        messages: &mut t.messages,
                        conv_index: &mut t.conv_index,
                        user_index: &mut t.user_index,
                        imports: &mut t.imports,
                    };
                    out.push(Imported {
                        old_id: item.old_id.clone(),
                        result: import_one(rows, item)?,
                    });
                }
                (Outcome::Imported(out), None)
            }
            Record::Announce {
                topic,
                payload,
                at_ms,
                ..
            } => (
                Outcome::Announced(topic.clone(), payload.clone(), *at_ms),
                None,
            ),
            Record::Marker { .. } => (Outcome::Marker, None),
        };
        Ok(Applied {
            origin,
            outcome,
            fan_out,
        })
    }

    #[allow(clippy::type_complexity)]
    fn apply_message(
        &self,
        t: &mut Tables<'_>,
        pos: &mut IndexPosition,
        message: &Message,
        recipients: &[String],
    ) -> Result<(Outcome, Option<(Arc<Message>, Vec<String>)>), StoreError> {
        let prov = message.message_id;
        pos.log_time = pos.log_time.max(message.server_ts);
        if let Some((final_id, _)) = t.prov.get(prov).map_err(io)?.map(|v| v.value()) {
            // The same record twice (cannot happen with one publish, but a
            // replay must never index anything twice).
            let original = t
                .messages
                .get(final_id)
                .map_err(io)?
                .map(|v| decode(v.value()))
                .transpose()?
                .map(|s| s.message)
                .unwrap_or_else(|| with_id(message, final_id));
            return Ok((
                Outcome::Message {
                    message: Arc::new(original),
                    duplicate: true,
                },
                None,
            ));
        }
        let key = (message.sender.as_str(), message.client_msg_id.as_str());
        if !message.client_msg_id.is_empty() {
            if let Some((orig, at)) = t.dedupe.get(key).map_err(io)?.map(|v| v.value()) {
                if message.server_ts - at < self.dedupe_window_ms {
                    t.prov.insert(prov, (orig, true)).map_err(io)?;
                    let original = match t.messages.get(orig).map_err(io)? {
                        Some(v) => decode(v.value())?.message,
                        // Recalled since: the original ack all the same.
                        None => Message {
                            message_id: orig,
                            server_ts: at,
                            ..message.clone()
                        },
                    };
                    return Ok((
                        Outcome::Message {
                            message: Arc::new(original),
                            duplicate: true,
                        },
                        None,
                    ));
                }
            }
        }
        let final_id = prov.max(pos.last_final.saturating_add(1));
        pos.last_final = final_id;
        let stored = StoredMessage {
            message: with_id(message, final_id),
            recipients: recipients.to_vec(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(corrupt)?;
        t.messages.insert(final_id, bytes.as_slice()).map_err(io)?;
        let history_key = message.conversation.history_key(&message.sender);
        t.conv_index
            .insert((history_key.as_str(), final_id), ())
            .map_err(io)?;
        for user in recipients {
            t.user_index
                .insert((user.as_str(), final_id), ())
                .map_err(io)?;
        }
        if !message.client_msg_id.is_empty() {
            t.dedupe
                .insert(key, (final_id, message.server_ts))
                .map_err(io)?;
            t.dedupe_order.insert(final_id, key).map_err(io)?;
        }
        t.prov.insert(prov, (final_id, false)).map_err(io)?;
        daily_sent::count(&mut t.daily_sent, &message.sender, message.server_ts)?;
        let message = Arc::new(stored.message);
        Ok((
            Outcome::Message {
                message: message.clone(),
                duplicate: false,
            },
            Some((message, stored.recipients)),
        ))
    }

    /// Forget dedupe keys older than the window on the log's clock (not
    /// the wall clock: a node replaying old records must decide exactly
    /// as the nodes that applied them live).
    fn expire_dedupe(&self, t: &mut Tables<'_>, log_time: i64) -> Result<(), StoreError> {
        let cutoff = first_id_at(log_time - self.dedupe_window_ms);
        let mut old = Vec::new();
        for entry in t.dedupe_order.range(..cutoff).map_err(io)?.take(256) {
            let (k, v) = entry.map_err(io)?;
            let (s, c) = v.value();
            old.push((k.value(), s.to_string(), c.to_string()));
        }
        for (id, sender, cmid) in old {
            t.dedupe_order.remove(id).map_err(io)?;
            let key = (sender.as_str(), cmid.as_str());
            let current = t.dedupe.get(key).map_err(io)?.map(|v| v.value());
            // Only drop it if it is out of the window by timestamp too
            // (final ids can run slightly ahead of their timestamps).
            if let Some((cur, at)) = current {
                if cur == id && log_time - at >= self.dedupe_window_ms {
                    t.dedupe.remove(key).map_err(io)?;
                } else if cur == id {
                    t.dedupe_order.insert(id, key).map_err(io)?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Release the file once running transactions are done; later calls
    /// fail with "closed". Blocks: call it on the blocking pool.
    pub fn close(&self) {
        let mut db = match self.db.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        db.take();
    }

    fn open_db(&self) -> RwLockReadGuard<'_, Option<Database>> {
        match self.db.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn begin_read(&self) -> Result<Txn<'_, redb::ReadTransaction>, StoreError> {
        let open = self.open_db();
        let txn = open.as_ref().ok_or_else(closed)?.begin_read().map_err(io)?;
        Ok(Txn { txn, _open: open })
    }

    // ---- reads (callers run them on the blocking pool) ----

    pub fn get(&self, id: u64) -> Result<Option<StoredMessage>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(MESSAGES).map_err(io)?;
        let found = t.get(id).map_err(io)?;
        found.map(|v| decode(v.value())).transpose()
    }

    /// Where a provisional id ended up: `(final id, duplicate)`, or None if
    /// not indexed (yet).
    pub fn provisional(&self, prov: u64) -> Result<Option<(u64, bool)>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(PROV).map_err(io)?;
        let found = t.get(prov).map_err(io)?;
        Ok(found.map(|v| v.value()))
    }

    /// The original of a resend still within the window at `now`, if any.
    pub fn dedupe(
        &self,
        sender: &str,
        cmid: &str,
        now: i64,
    ) -> Result<Option<Arc<Message>>, StoreError> {
        let txn = self.begin_read()?;
        let d = txn.open_table(DEDUPE).map_err(io)?;
        let Some((id, at)) = d.get((sender, cmid)).map_err(io)?.map(|v| v.value()) else {
            return Ok(None);
        };
        if now - at >= self.dedupe_window_ms {
            return Ok(None);
        }
        let m = txn.open_table(MESSAGES).map_err(io)?;
        let found = m.get(id).map_err(io)?;
        Ok(found
            .map(|v| decode(v.value()))
            .transpose()?
            .map(|s| Arc::new(s.message)))
    }

    pub fn sync(&self, user: &str, since: u64, limit: usize) -> Result<SyncPage, StoreError> {
        let limit = limit.max(1);
        let txn = self.begin_read()?;
        let index = txn.open_table(USER_INDEX).map_err(io)?;
        let messages = txn.open_table(MESSAGES).map_err(io)?;
        let mut page = SyncPage::default();
        let start = since.saturating_add(1);
        for entry in index.range((user, start)..=(user, u64::MAX)).map_err(io)? {
            let (k, _) = entry.map_err(io)?;
            if page.messages.len() == limit {
                page.has_more = true;
                break;
            }
            if let Some(v) = messages.get(k.value().1).map_err(io)? {
                page.messages.push(Arc::new(decode(v.value())?.message));
            }
        }
        Ok(page)
    }

    pub fn history(
        &self,
        user: &str,
        key: &str,
        before: u64,
        limit: usize,
    ) -> Result<SyncPage, StoreError> {
        let limit = limit.max(1);
        let before = if before == 0 { u64::MAX } else { before };
        let txn = self.begin_read()?;
        let index = txn.open_table(CONV_INDEX).map_err(io)?;
        let messages = txn.open_table(MESSAGES).map_err(io)?;
        let mut page = SyncPage::default();
        for entry in index.range((key, 0)..(key, before)).map_err(io)?.rev() {
            let (k, _) = entry.map_err(io)?;
            let Some(v) = messages.get(k.value().1).map_err(io)? else {
                continue;
            };
            let stored = decode(v.value())?;
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

    /// The daily quota's count of `user` on `day`.
    pub fn sent_on_day(&self, user: &str, day: i64) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        daily_sent::read(&txn, user, day)
    }

    pub fn last_message_id(&self, user: &str) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let index = txn.open_table(USER_INDEX).map_err(io)?;
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

    /// Every message with id > `after`, ascending (export).
    pub fn scan(&self, after: u64, limit: usize) -> Result<SyncPage, StoreError> {
        let limit = limit.max(1);
        let txn = self.begin_read()?;
        let messages = txn.open_table(MESSAGES).map_err(io)?;
        let mut page = SyncPage::default();
        for entry in messages.range(after.saturating_add(1)..).map_err(io)? {
            let (_, v) = entry.map_err(io)?;
            if page.messages.len() == limit {
                page.has_more = true;
                break;
            }
            page.messages.push(Arc::new(decode(v.value())?.message));
        }
        Ok(page)
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(SETTINGS).map_err(io)?;
        let found = t.get(key).map_err(io)?;
        Ok(found.map(|v| v.value().to_string()))
    }

    pub fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(GROUPS).map_err(io)?;
        let found = t.get(id).map_err(io)?;
        found
            .map(|v| serde_json::from_slice(v.value()).map_err(corrupt))
            .transpose()
    }
}

fn with_id(m: &Message, id: u64) -> Message {
    Message {
        message_id: id,
        ..m.clone()
    }
}

fn recall(t: &mut Tables<'_>, id: u64) -> Result<Recalled, StoreError> {
    let Some(stored) = t
        .messages
        .remove(id)
        .map_err(io)?
        .map(|v| decode(v.value()))
        .transpose()?
    else {
        return Ok(None);
    };
    let m = &stored.message;
    let key = m.conversation.history_key(&m.sender);
    t.conv_index.remove((key.as_str(), id)).map_err(io)?;
    for user in &stored.recipients {
        t.user_index.remove((user.as_str(), id)).map_err(io)?;
    }
    Ok(Some((Arc::new(stored.message), stored.recipients)))
}

/// Take back the message written with provisional id `prov`: out of
/// history, sync and dedupe, and its queued copies resolve to nothing
/// (`prov` marked as a duplicate). A withdraw read before its message
/// (cannot happen with one writer channel, but replay must be total)
/// leaves a tombstone so the message is never indexed.
fn withdraw(t: &mut Tables<'_>, prov: u64) -> Result<Option<u64>, StoreError> {
    let Some((final_id, duplicate)) = t.prov.get(prov).map_err(io)?.map(|v| v.value()) else {
        t.prov.insert(prov, (0, true)).map_err(io)?;
        return Ok(None);
    };
    if duplicate {
        return Ok(None); // it was a resend: the original stays
    }
    t.prov.insert(prov, (final_id, true)).map_err(io)?;
    if let Some((m, _)) = recall(t, final_id)? {
        let key = (m.sender.as_str(), m.client_msg_id.as_str());
        if t.dedupe.get(key).map_err(io)?.map(|v| v.value().0) == Some(final_id) {
            t.dedupe.remove(key).map_err(io)?;
            t.dedupe_order.remove(final_id).map_err(io)?;
        }
    }
    Ok(Some(final_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgate_core::model::{Conversation, MessagePayload};

    fn msg(prov: u64, ts: i64, cmid: &str) -> Record {
        Record::Message {
            origin: Origin {
                boot: 1,
                token: prov,
            },
            message: Box::new(Message {
                message_id: prov,
                sender: "a".into(),
                conversation: Conversation::private("b"),
                payload: MessagePayload::text("x"),
                server_ts: ts,
                client_msg_id: cmid.into(),
                to_users: vec![],
            }),
            recipients: vec!["a".into(), "b".into()],
            sender_device: None,
        }
    }

    fn final_of(a: &Applied) -> (u64, bool) {
        match &a.outcome {
            Outcome::Message { message, duplicate } => (message.message_id, *duplicate),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn final_ids_follow_stream_order_and_dedupe_is_by_log_order() {
        let dir = tempfile::tempdir().unwrap();
        let (index, mut pos) = Index::open(&dir.path().join("i.redb"), 600_000).unwrap();
        let ts = 1_800_000_000_000;
        // 200 arrives before 100 (two nodes raced): 100 is bumped to 201.
        let out = index
            .apply(
                &mut pos,
                &[
                    (0, Some(msg(200, ts, "k1"))),
                    (1, Some(msg(100, ts, "k2"))),
                    (2, None),
                    (3, Some(msg(300, ts + 1, "k1"))),
                ],
            )
            .unwrap();
        assert_eq!(final_of(&out[0]), (200, false));
        assert_eq!(final_of(&out[1]), (201, false));
        assert_eq!(final_of(&out[2]), (200, true), "resend within the window");
        assert_eq!(pos.next_offset, 4);
        assert_eq!(index.provisional(100).unwrap(), Some((201, false)));
        assert_eq!(index.provisional(300).unwrap(), Some((200, true)));
        let ids: Vec<u64> = index
            .sync("b", 0, 10)
            .unwrap()
            .messages
            .iter()
            .map(|m| m.message_id)
            .collect();
        assert_eq!(ids, vec![200, 201]);
        // Re-delivered offsets are ignored; reopening resumes the position.
        assert!(index
            .apply(&mut pos, &[(3, Some(msg(400, ts, "k9")))])
            .unwrap()
            .is_empty());
        drop(index);
        let (_, again) = Index::open(&dir.path().join("i.redb"), 600_000).unwrap();
        assert_eq!(again.next_offset, 4);
        assert_eq!(again.last_final, 201);
        // Past the window (on the log's clock) the key is free again.
        let (index, mut pos) = Index::open(&dir.path().join("i.redb"), 600_000).unwrap();
        let out = index
            .apply(&mut pos, &[(4, Some(msg(500, ts + 600_001, "k1")))])
            .unwrap();
        assert_eq!(final_of(&out[0]), (500, false));
    }

    fn withdraw_of(prov: u64) -> Record {
        Record::Withdraw {
            origin: Origin {
                boot: 1,
                token: prov + 1,
            },
            provisional: prov,
        }
    }

    #[test]
    fn withdraw_takes_a_message_back_and_frees_its_dedupe_key() {
        let dir = tempfile::tempdir().unwrap();
        let (index, mut pos) = Index::open(&dir.path().join("w.redb"), 600_000).unwrap();
        let ts = 1_800_000_000_000;
        let out = index
            .apply(
                &mut pos,
                &[
                    (0, Some(msg(100, ts, "k1"))),
                    (1, Some(msg(200, ts, "k2"))),
                    (2, Some(withdraw_of(200))),
                    // A withdraw ahead of its message leaves a tombstone.
                    (3, Some(withdraw_of(400))),
                    (4, Some(msg(400, ts, "k4"))),
                ],
            )
            .unwrap();
        assert!(matches!(out[2].outcome, Outcome::Withdrawn(Some(200))));
        assert!(matches!(out[3].outcome, Outcome::Withdrawn(None)));
        let ids = |index: &Index| -> Vec<u64> {
            index
                .sync("b", 0, 10)
                .unwrap()
                .messages
                .iter()
                .map(|m| m.message_id)
                .collect()
        };
        assert_eq!(ids(&index), vec![100]);
        assert_eq!(index.get(200).unwrap().map(|s| s.message.message_id), None);
        // Queued copies of the withdrawn message resolve to nothing.
        assert_eq!(index.provisional(200).unwrap(), Some((200, true)));
        // The sender's resend with the same client id is a new message.
        assert!(index.dedupe("a", "k2", ts + 1).unwrap().is_none());
        let out = index
            .apply(&mut pos, &[(5, Some(msg(300, ts + 1, "k2")))])
            .unwrap();
        assert_eq!(final_of(&out[0]), (300, false));
        assert_eq!(ids(&index), vec![100, 300]);
        // Withdrawing a resend leaves the original alone.
        index
            .apply(
                &mut pos,
                &[
                    (6, Some(msg(500, ts + 2, "k1"))),
                    (7, Some(withdraw_of(500))),
                ],
            )
            .unwrap();
        assert_eq!(ids(&index), vec![100, 300]);
    }
}
