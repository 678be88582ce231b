//! The node-local index built from the store's streams: what sync,
//! history, get, dedupe, groups and device cursors read.
//!
//! One redb file per node and prefix (`<data_dir>/rabbit-<prefix>.redb`).
//! It is a cache of the streams, not a source of truth: every batch of
//! records is applied in one write transaction together with the next
//! offset to read of each stream, so after a crash the index and its
//! offsets are consistent and the node resumes from them. Commits are not
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
//! The rows, timelines, history and reads are the shared index of both
//! stores (`crate::index`); this file adds the stream position, the
//! provisional → final id map and the rules below.
//!
//! **Dedupe.** A message whose `(sender, client_msg_id)` was indexed less
//! than the dedupe window earlier (by record timestamps, not wall clock)
//! is a duplicate: it is not indexed, and its writer answers with the
//! original. Since every node applies the same rule to the same order, the
//! same copy wins everywhere, even when two nodes took the resend at once.

use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use imgate_core::model::Message;
use imgate_core::store::{
    ConversationPage, Group, Imported, Pruned, ReadState, Recalled, SyncPage,
};
use imgate_core::StoreError;
use redb::{Database, Durability, ReadableTable, Table, TableDefinition};

use super::record::{CursorEntry, Origin, Record, SnapshotPart};
use super::topology::{CONTROL_KEY, STATE_KEY};
use crate::index::tables::{self as index_tables, FORMAT, FORMAT_BEFORE_CONVERSATIONS, FORMAT_KEY};
use crate::index::{read, rebuild_dedupe, DedupeMemory, IndexWrite, StoredMessage};

/// provisional id → (final id, is a duplicate of that final id).
const PROV: TableDefinition<u64, (u64, bool)> = TableDefinition::new("prov");

/// (user, device) → (delivery cursor, last seen ms): every device's
/// cursor, from the control stream's cursor records.
const CURSORS: TableDefinition<(&str, &str), (u64, i64)> = TableDefinition::new("device_cursors");

/// One fsynced commit per this many batches (the rest are `None`).
pub const DURABLE_EVERY: u64 = 64;

/// Resend keys remembered per node (see [`DedupeMemory`]).
const DEDUPE_CAPACITY: usize = 1_000_000;

/// redb page cache of the index file.
const CACHE_BYTES: usize = 64 << 20;

/// Where the indexer stands in the streams.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexPosition {
    /// The next offset to read of the log (history) stream.
    pub next_offset: u64,
    /// The next offset to read of the state stream.
    pub state_offset: u64,
    /// The next offset to read of the control stream.
    pub control_offset: u64,
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
    /// A conversation's read state after a mark-read (None: unknown).
    MarkedRead(Option<ReadState>),
    /// An announcement: topic, payload, writer's time (nothing stored).
    Announced(String, String, i64),
    Marker,
    /// Cursor entries applied (for cursor watchers and the snapshot clock).
    Cursors(Vec<CursorEntry>, Option<SnapshotPart>),
}

impl IndexPosition {
    /// The next offset to read of the stream with routing key `key`.
    pub fn offset_of(&self, key: &str) -> u64 {
        match key {
            STATE_KEY => self.state_offset,
            CONTROL_KEY => self.control_offset,
            _ => self.next_offset,
        }
    }

    /// Note that the stream with routing key `key` is read up to `next`.
    pub fn advance(&mut self, key: &str, next: u64) {
        let at = self.offset_mut(key);
        *at = (*at).max(next);
    }

    fn offset_mut(&mut self, key: &str) -> &mut u64 {
        match key {
            STATE_KEY => &mut self.state_offset,
            CONTROL_KEY => &mut self.control_offset,
            _ => &mut self.next_offset,
        }
    }
}

/// One message read from a stream: its stream's key, its offset, and its
/// records (a batch; none when it did not decode).
pub type Read = (&'static str, u64, Vec<Record>);

/// A device: (user, device).
pub type DeviceKey = (String, String);

/// A new message, its recipients and the device that sent it.
pub type FanOut = (Arc<Message>, Vec<String>, Option<String>);

#[derive(Debug)]
pub struct Applied {
    pub origin: Origin,
    pub outcome: Outcome,
    /// A new message to fan out to attached devices and live listeners.
    pub fan_out: Option<FanOut>,
    /// The record's own time, where it has one (cursor records).
    pub at_ms: i64,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("rabbit index: {e}"))
}

fn closed() -> StoreError {
    StoreError::Unavailable("rabbit index: store closed".into())
}

pub struct Index {
    /// `None` once [`Index::close`] ran. Every transaction holds the read
    /// guard, so closing waits for them and the file lock is gone when it
    /// returns (a reopen in the same process then succeeds).
    db: RwLock<Option<Database>>,
    dedupe_window_ms: i64,
    /// Resend keys of the window, rebuilt from the rows at open.
    dedupe: Mutex<DedupeMemory>,
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
    index: IndexWrite<'t>,
    prov: Table<'t, u64, (u64, bool)>,
    cursors: Table<'t, (&'static str, &'static str), (u64, i64)>,
}

fn open_file(path: &std::path::Path) -> Result<Database, StoreError> {
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| io(format!("cannot open {}: {e}", path.display())))
}

impl Index {
    /// Open or create the index file; where it stands in the stream. A
    /// file of another format is deleted: it is rebuilt from the stream.
    pub fn open(
        path: &std::path::Path,
        dedupe_window_ms: i64,
    ) -> Result<(Index, IndexPosition), StoreError> {
        let mut db = open_file(path)?;
        let format = {
            let txn = db.begin_read().map_err(io)?;
            match txn.open_table(index_tables::META) {
                Ok(meta) => meta.get(FORMAT_KEY).map_err(io)?.map(|v| v.value()),
                Err(_) => None,
            }
        };
        let fresh = db
            .begin_read()
            .map_err(io)?
            .list_tables()
            .map_err(io)?
            .next()
            .is_none();
        let upgrade = format == Some(FORMAT_BEFORE_CONVERSATIONS);
        if !fresh && format != Some(FORMAT) && !upgrade {
            tracing::warn!(path = %path.display(), "rabbit index of an older format: rebuilding it from the stream");
            drop(db);
            std::fs::remove_file(path).map_err(io)?;
            db = open_file(path)?;
        }
        let txn = db.begin_write().map_err(io)?;
        index_tables::create_all(&txn)?;
        if upgrade {
            let n = crate::index::conversations::rebuild(&txn)?;
            tracing::info!(
                messages = n,
                "rabbit index: conversations built from the indexed history"
            );
        }
        txn.open_table(PROV).map_err(io)?;
        txn.open_table(CURSORS).map_err(io)?;
        let pos = {
            let mut meta = txn.open_table(index_tables::META).map_err(io)?;
            meta.insert(FORMAT_KEY, FORMAT).map_err(io)?;
            let get = |k: &str| -> Result<u64, StoreError> {
                Ok(meta.get(k).map_err(io)?.map(|v| v.value()).unwrap_or(0))
            };
            IndexPosition {
                next_offset: get("next_offset")?,
                state_offset: get("state_offset")?,
                control_offset: get("control_offset")?,
                last_final: get("last_final")?,
                log_time: get("log_time")? as i64,
                commits: 0,
            }
        };
        txn.commit().map_err(io)?;
        let index = Index {
            db: RwLock::new(Some(db)),
            dedupe_window_ms,
            dedupe: Mutex::new(DedupeMemory::new(DEDUPE_CAPACITY, dedupe_window_ms)),
        };
        index.rebuild_dedupe(pos.log_time)?;
        Ok((index, pos))
    }

    fn memory(&self) -> MutexGuard<'_, DedupeMemory> {
        match self.dedupe.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn rebuild_dedupe(&self, log_time: i64) -> Result<(), StoreError> {
        let txn = self.begin_read()?;
        let mut memory = self.memory();
        rebuild_dedupe(
            &txn,
            &mut memory,
            log_time,
            self.dedupe_window_ms,
            DEDUPE_CAPACITY,
        )
    }

    /// Apply a batch of records in one transaction and move each stream's
    /// position past its last offset. Undecodable records were already
    /// skipped by the caller (passed as `None`).
    pub fn apply(
        &self,
        pos: &mut IndexPosition,
        batch: &[Read],
    ) -> Result<Vec<Applied>, StoreError> {
        let result = self.try_apply(pos, batch);
        if result.is_err() {
            // The resend memory may hold keys of rows that were not
            // committed: rebuild it from what is.
            if let Err(e) = self.rebuild_dedupe(pos.log_time) {
                tracing::error!(error = %e, "rabbit index: rebuilding the resend memory failed");
                self.memory().clear();
            }
        }
        result
    }

    fn try_apply(
        &self,
        pos: &mut IndexPosition,
        batch: &[Read],
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
            let mut t = Tables {
                index: IndexWrite::open(&txn)?,
                prov: txn.open_table(PROV).map_err(io)?,
                cursors: txn.open_table(CURSORS).map_err(io)?,
            };
            let mut memory = self.memory();
            for (stream, offset, records) in batch {
                let at = next.offset_mut(stream);
                if *offset < *at {
                    continue; // a chunk re-delivered from before our offset
                }
                *at = offset + 1;
                for record in records {
                    out.push(self.apply_one(&mut t, &mut memory, &mut next, record)?);
                }
            }
            drop(memory);
            let meta = &mut t.index.meta;
            meta.insert("next_offset", next.next_offset).map_err(io)?;
            meta.insert("state_offset", next.state_offset).map_err(io)?;
            meta.insert("control_offset", next.control_offset)
                .map_err(io)?;
            meta.insert("last_final", next.last_final).map_err(io)?;
            meta.insert("log_time", next.log_time.max(0) as u64)
                .map_err(io)?;
            t.index.finish(next.log_time)?;
        }
        txn.commit().map_err(io)?;
        *pos = next;
        Ok(out)
    }

    fn apply_one(
        &self,
        t: &mut Tables<'_>,
        memory: &mut DedupeMemory,
        pos: &mut IndexPosition,
        record: &Record,
    ) -> Result<Applied, StoreError> {
        let origin = record.origin();
        let (outcome, fan_out) = match record {
            Record::Message {
                message,
                recipients,
                sender_device,
                ..
            } => self.apply_message(t, memory, pos, message, recipients, sender_device)?,
            Record::Recall { message_id, .. } => {
                let removed = t.index.remove(*message_id)?;
                (
                    Outcome::Recalled(removed.map(|s| (Arc::new(s.message), s.recipients))),
                    None,
                )
            }
            Record::Withdraw { provisional, .. } => {
                (Outcome::Withdrawn(withdraw(t, memory, *provisional)?), None)
            }
            Record::PutGroup { group, .. } => {
                t.index.put_group(group)?;
                (Outcome::GroupPut, None)
            }
            Record::DeleteGroup { group_id, .. } => {
                (Outcome::GroupDeleted(t.index.delete_group(group_id)?), None)
            }
            Record::PutSetting { key, value, .. } => {
                t.index.put_setting(key, value)?;
                (
                    Outcome::SettingPut(key.clone(), Arc::new(value.clone())),
                    None,
                )
            }
            Record::Import { items, .. } => {
                let placed = t.index.import_batch(items)?;
                let out = items
                    .iter()
                    .zip(placed)
                    .map(|(item, result)| Imported {
                        old_id: item.old_id.clone(),
                        result,
                    })
                    .collect();
                (Outcome::Imported(out), None)
            }
            Record::MarkRead {
                user, key, upto, ..
            } => (
                Outcome::MarkedRead(t.index.mark_read(user, key, *upto)?),
                None,
            ),
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
            Record::Cursors {
                entries, snapshot, ..
            } => {
                apply_cursors(&mut t.cursors, entries)?;
                (Outcome::Cursors(entries.clone(), *snapshot), None)
            }
        };
        let at_ms = match record {
            Record::Cursors { at_ms, .. } => *at_ms,
            _ => 0,
        };
        Ok(Applied {
            origin,
            outcome,
            fan_out,
            at_ms,
        })
    }

    fn apply_message(
        &self,
        t: &mut Tables<'_>,
        memory: &mut DedupeMemory,
        pos: &mut IndexPosition,
        message: &Message,
        recipients: &[String],
        sender_device: &Option<String>,
    ) -> Result<(Outcome, Option<FanOut>), StoreError> {
        let prov = message.message_id;
        pos.log_time = pos.log_time.max(message.server_ts);
        if let Some((final_id, _)) = t.prov.get(prov).map_err(io)?.map(|v| v.value()) {
            // The same record twice (cannot happen with one publish, but a
            // replay must never index anything twice).
            let original = t
                .index
                .row(final_id)?
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
        // Dedupe on the log's clock: the record's timestamp.
        let resend = t.index.resend_of(
            memory,
            &message.sender,
            &message.client_msg_id,
            message.server_ts,
            self.dedupe_window_ms,
        )?;
        if let Some((orig, found)) = resend {
            t.prov.insert(prov, (orig, true)).map_err(io)?;
            let original = found.unwrap_or_else(|| Message {
                message_id: orig,
                server_ts: imgate_core::id::timestamp_of(orig),
                ..message.clone()
            });
            return Ok((
                Outcome::Message {
                    message: Arc::new(original),
                    duplicate: true,
                },
                None,
            ));
        }
        let final_id = prov.max(pos.last_final.saturating_add(1));
        pos.last_final = final_id;
        let stored = StoredMessage {
            message: with_id(message, final_id),
            recipients: recipients.to_vec(),
            sender_device: sender_device.clone(),
        };
        t.index.insert(&stored)?;
        if !message.client_msg_id.is_empty() {
            memory.insert(
                &message.sender,
                &message.client_msg_id,
                final_id,
                pos.log_time,
            );
        }
        t.prov.insert(prov, (final_id, false)).map_err(io)?;
        let message = Arc::new(stored.message);
        Ok((
            Outcome::Message {
                message: message.clone(),
                duplicate: false,
            },
            Some((message, stored.recipients, stored.sender_device)),
        ))
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
        read::get(&*self.begin_read()?, id)
    }

    pub fn get_for(&self, id: u64, user: &str) -> Result<Option<StoredMessage>, StoreError> {
        read::get_for(&*self.begin_read()?, id, user)
    }

    /// Where a provisional id ended up: `(final id, duplicate)`, or None if
    /// not indexed (yet).
    #[cfg(test)]
    pub fn provisional(&self, prov: u64) -> Result<Option<(u64, bool)>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(PROV).map_err(io)?;
        let found = t.get(prov).map_err(io)?;
        Ok(found.map(|v| v.value()))
    }

    /// Whether `(sender, cmid)` may be a resend (memory only, no read: a
    /// candidate is then checked with [`Self::dedupe`]).
    pub fn resend_candidate(&self, sender: &str, cmid: &str) -> bool {
        !cmid.is_empty() && self.memory().candidate(sender, cmid).is_some()
    }

    /// The original of a resend still within the window at `now`, if any.
    pub fn dedupe(
        &self,
        sender: &str,
        cmid: &str,
        now: i64,
    ) -> Result<Option<Arc<Message>>, StoreError> {
        if cmid.is_empty() {
            return Ok(None);
        }
        let Some(id) = self.memory().candidate(sender, cmid) else {
            return Ok(None);
        };
        let Some(stored) = self.get(id)? else {
            return Ok(None);
        };
        let m = stored.message;
        let fresh = now - m.server_ts < self.dedupe_window_ms;
        Ok((fresh && m.sender == sender && m.client_msg_id == cmid).then(|| Arc::new(m)))
    }

    pub fn sync(&self, user: &str, since: u64, limit: usize) -> Result<SyncPage, StoreError> {
        read::sync(&*self.begin_read()?, user, since, limit)
    }

    pub fn history(
        &self,
        user: &str,
        key: &str,
        before: u64,
        limit: usize,
    ) -> Result<SyncPage, StoreError> {
        read::history(&*self.begin_read()?, user, key, before, limit)
    }

    /// The daily quota's count of `user` on `day`.
    pub fn sent_on_day(&self, user: &str, day: i64) -> Result<u64, StoreError> {
        read::sent_on_day(&*self.begin_read()?, user, day)
    }

    pub fn last_message_id(&self, user: &str) -> Result<u64, StoreError> {
        read::last_message_id(&*self.begin_read()?, user)
    }

    /// Every message with id > `after`, ascending (export).
    pub fn scan(&self, after: u64, limit: usize) -> Result<SyncPage, StoreError> {
        read::scan(&*self.begin_read()?, after, limit)
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        read::setting(&*self.begin_read()?, key)
    }

    pub fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        read::group(&*self.begin_read()?, id)
    }

    pub fn scan_groups(&self, after: &str, limit: usize) -> Result<(Vec<Group>, bool), StoreError> {
        read::scan_groups(&*self.begin_read()?, after, limit)
    }

    /// The next page of a device's timeline after `after` (its catch-up).
    pub fn device_page(
        &self,
        user: &str,
        device: &str,
        after: u64,
        limit: usize,
    ) -> Result<imgate_core::store::CatchUpPage, StoreError> {
        read::device_page(&*self.begin_read()?, user, device, after, limit)
    }

    /// A device's cursor and when it was last seen, if known.
    pub fn cursor(&self, user: &str, device: &str) -> Result<Option<(u64, i64)>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(CURSORS).map_err(io)?;
        let found = t.get((user, device)).map_err(io)?;
        Ok(found.map(|v| v.value()))
    }

    /// The cursors among the next `limit` after `(user, device)`
    /// (exclusive; `None` starts at the beginning) seen at or after
    /// `seen_after` (older ones are expired and left out), and where to go
    /// on from (`None`: that was the end). For snapshots.
    pub fn cursors_after(
        &self,
        after: Option<(&str, &str)>,
        seen_after: i64,
        limit: usize,
    ) -> Result<(Vec<CursorEntry>, Option<DeviceKey>), StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(CURSORS).map_err(io)?;
        let mut out = Vec::new();
        let range = match after {
            Some(k) => {
                t.range::<(&str, &str)>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
            }
            None => t.range::<(&str, &str)>(..),
        }
        .map_err(io)?;
        let mut scanned = 0;
        for entry in range {
            let (k, v) = entry.map_err(io)?;
            let (user, device) = k.value();
            let (cursor, seen_ms) = v.value();
            scanned += 1;
            if seen_ms >= seen_after {
                out.push(CursorEntry {
                    user: user.to_string(),
                    device: device.to_string(),
                    cursor,
                    seen_ms,
                    register: false,
                    reset: false,
                });
            }
            if scanned >= limit {
                return Ok((out, Some((user.to_string(), device.to_string()))));
            }
        }
        Ok((out, None))
    }

    /// `user`'s conversations, newest activity first.
    pub fn conversations(
        &self,
        user: &str,
        before: u64,
        limit: usize,
    ) -> Result<ConversationPage, StoreError> {
        read::conversations(&*self.begin_read()?, user, before, limit)
    }

    /// One pruning pass over this node's index: expired messages, then
    /// ids below `cutoff` (the retention). Blocks: call it on the blocking
    /// pool.
    pub fn prune(&self, now: i64, cutoff: Option<u64>) -> Result<Pruned, StoreError> {
        let open = self.open_db();
        let db = open.as_ref().ok_or_else(closed)?;
        let txn = db.begin_write().map_err(io)?;
        let pruned = {
            let mut t = IndexWrite::open(&txn)?;
            let pruned = t.prune(now, cutoff, crate::index::prune::PRUNE_BATCH)?;
            t.flush_rows()?;
            pruned
        };
        txn.commit().map_err(io)?;
        Ok(pruned)
    }

    /// Forget devices not seen since `seen_before` (at most `limit` per
    /// call); how many went.
    pub fn prune_cursors(&self, seen_before: i64, limit: usize) -> Result<usize, StoreError> {
        let open = self.open_db();
        let db = open.as_ref().ok_or_else(closed)?;
        let txn = db.begin_write().map_err(io)?;
        let gone = {
            let mut t = txn.open_table(CURSORS).map_err(io)?;
            let mut old: Vec<(String, String)> = Vec::new();
            for entry in t.iter().map_err(io)? {
                let (k, v) = entry.map_err(io)?;
                if v.value().1 < seen_before {
                    let (u, d) = k.value();
                    old.push((u.to_string(), d.to_string()));
                    if old.len() >= limit {
                        break;
                    }
                }
            }
            for (u, d) in &old {
                t.remove((u.as_str(), d.as_str())).map_err(io)?;
            }
            old.len()
        };
        txn.commit().map_err(io)?;
        Ok(gone)
    }
}

/// Cursor entries into the cursor table: a registration only when the
/// device is unknown, a move as a maximum; the last-seen time only grows.
fn apply_cursors(
    t: &mut Table<'_, (&'static str, &'static str), (u64, i64)>,
    entries: &[CursorEntry],
) -> Result<(), StoreError> {
    for e in entries {
        let key = (e.user.as_str(), e.device.as_str());
        let known = t.get(key).map_err(io)?.map(|v| v.value());
        let value = match known {
            Some((c, seen)) if e.register => (c, seen.max(e.seen_ms)),
            Some((c, seen)) => (c.max(e.cursor), seen.max(e.seen_ms)),
            None => (e.cursor, e.seen_ms),
        };
        if known != Some(value) {
            t.insert(key, value).map_err(io)?;
        }
    }
    Ok(())
}

fn with_id(m: &Message, id: u64) -> Message {
    Message {
        message_id: id,
        ..m.clone()
    }
}

/// Take back the message written with provisional id `prov`: out of
/// history, sync and dedupe, and its queued copies resolve to nothing
/// (`prov` marked as a duplicate). A withdraw read before its message
/// (cannot happen with one writer channel, but replay must be total)
/// leaves a tombstone so the message is never indexed.
fn withdraw(
    t: &mut Tables<'_>,
    memory: &mut DedupeMemory,
    prov: u64,
) -> Result<Option<u64>, StoreError> {
    let Some((final_id, duplicate)) = t.prov.get(prov).map_err(io)?.map(|v| v.value()) else {
        t.prov.insert(prov, (0, true)).map_err(io)?;
        return Ok(None);
    };
    if duplicate {
        return Ok(None); // it was a resend: the original stays
    }
    t.prov.insert(prov, (final_id, true)).map_err(io)?;
    if let Some(s) = t.index.remove(final_id)? {
        memory.remove(&s.message.sender, &s.message.client_msg_id, final_id);
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
                    ("log", 0, vec![msg(200, ts, "k1")]),
                    ("log", 1, vec![msg(100, ts, "k2")]),
                    ("log", 2, vec![]),
                    ("log", 3, vec![msg(300, ts + 1, "k1")]),
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
            .apply(&mut pos, &[("log", 3, vec![msg(400, ts, "k9")])])
            .unwrap()
            .is_empty());
        drop(index);
        let (_, again) = Index::open(&dir.path().join("i.redb"), 600_000).unwrap();
        assert_eq!(again.next_offset, 4);
        assert_eq!(again.last_final, 201);
        // Past the window (on the log's clock) the key is free again.
        let (index, mut pos) = Index::open(&dir.path().join("i.redb"), 600_000).unwrap();
        let out = index
            .apply(&mut pos, &[("log", 4, vec![msg(500, ts + 600_001, "k1")])])
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

    fn cursors(entries: &[(&str, u64, i64, bool)]) -> Record {
        Record::Cursors {
            origin: Origin { boot: 1, token: 9 },
            at_ms: 0,
            entries: entries
                .iter()
                .map(|&(device, cursor, seen_ms, register)| CursorEntry {
                    user: "b".into(),
                    device: device.into(),
                    cursor,
                    seen_ms,
                    register,
                    reset: false,
                })
                .collect(),
            snapshot: None,
        }
    }

    #[test]
    fn cursors_register_once_move_up_and_streams_keep_their_own_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let (index, mut pos) = Index::open(&dir.path().join("c.redb"), 600_000).unwrap();
        index
            .apply(
                &mut pos,
                &[
                    ("control", 0, vec![cursors(&[("p", 10, 1, true)])]),
                    // A later registration (another node) does not move it.
                    ("control", 1, vec![cursors(&[("p", 50, 2, true)])]),
                    (
                        "control",
                        2,
                        vec![cursors(&[("p", 30, 3, false), ("t", 5, 3, false)])],
                    ),
                    // A stale move never takes it back.
                    ("control", 3, vec![cursors(&[("p", 20, 4, false)])]),
                    ("log", 0, vec![msg(100, 1, "k")]),
                ],
            )
            .unwrap();
        assert_eq!(index.cursor("b", "p").unwrap(), Some((30, 4)));
        assert_eq!(index.cursor("b", "t").unwrap(), Some((5, 3)));
        assert_eq!(index.cursor("b", "x").unwrap(), None);
        assert_eq!(
            (pos.control_offset, pos.next_offset, pos.state_offset),
            (4, 1, 0)
        );
        // Control offsets re-delivered are skipped, not re-applied.
        index
            .apply(
                &mut pos,
                &[("control", 3, vec![cursors(&[("p", 99, 9, false)])])],
            )
            .unwrap();
        assert_eq!(index.cursor("b", "p").unwrap(), Some((30, 4)));
        let (all, more) = index.cursors_after(None, 0, 10).unwrap();
        assert!(more.is_none());
        assert_eq!(all.len(), 2);
        let (fresh, _) = index.cursors_after(None, 4, 10).unwrap();
        assert_eq!(fresh.len(), 1, "seen before 4: expired, left out");
        let (page, more) = index.cursors_after(None, 0, 1).unwrap();
        assert_eq!(
            (page.len(), more),
            (1, Some(("b".to_string(), "p".to_string())))
        );
        let (page, more) = index.cursors_after(Some(("b", "p")), 0, 10).unwrap();
        assert!(more.is_none());
        assert_eq!(page[0].device, "t");
        assert_eq!(index.prune_cursors(4, 10).unwrap(), 1);
        assert_eq!(index.cursor("b", "t").unwrap(), None);
        drop(index);
        let (_, again) = Index::open(&dir.path().join("c.redb"), 600_000).unwrap();
        assert_eq!(again.control_offset, 4);
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
                    ("log", 0, vec![msg(100, ts, "k1")]),
                    ("log", 1, vec![msg(200, ts, "k2")]),
                    ("log", 2, vec![withdraw_of(200)]),
                    // A withdraw ahead of its message leaves a tombstone.
                    ("log", 3, vec![withdraw_of(400)]),
                    ("log", 4, vec![msg(400, ts, "k4")]),
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
            .apply(&mut pos, &[("log", 5, vec![msg(300, ts + 1, "k2")])])
            .unwrap();
        assert_eq!(final_of(&out[0]), (300, false));
        assert_eq!(ids(&index), vec![100, 300]);
        // Withdrawing a resend leaves the original alone.
        index
            .apply(
                &mut pos,
                &[
                    ("log", 6, vec![msg(500, ts + 2, "k1")]),
                    ("log", 7, vec![withdraw_of(500)]),
                ],
            )
            .unwrap();
        assert_eq!(ids(&index), vec![100, 300]);
    }
}
