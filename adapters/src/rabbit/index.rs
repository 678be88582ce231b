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
use imgate_core::store::{Group, Imported, Recalled, SyncPage};
use imgate_core::StoreError;
use redb::{Database, Durability, ReadableTable, Table, TableDefinition};

use super::record::{Origin, Record};
use crate::index::tables::{self as index_tables, FORMAT, FORMAT_KEY};
use crate::index::{read, rebuild_dedupe, DedupeMemory, IndexWrite, StoredMessage};

/// provisional id → (final id, is a duplicate of that final id).
const PROV: TableDefinition<u64, (u64, bool)> = TableDefinition::new("prov");

/// One fsynced commit per this many batches (the rest are `None`).
pub const DURABLE_EVERY: u64 = 64;

/// Resend keys remembered per node (see [`DedupeMemory`]).
const DEDUPE_CAPACITY: usize = 1_000_000;

/// redb page cache of the index file.
const CACHE_BYTES: usize = 64 << 20;

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
        if !fresh && format != Some(FORMAT) {
            tracing::warn!(path = %path.display(), "rabbit index of an older format: rebuilding it from the stream");
            drop(db);
            std::fs::remove_file(path).map_err(io)?;
            db = open_file(path)?;
        }
        let txn = db.begin_write().map_err(io)?;
        index_tables::create_all(&txn)?;
        txn.open_table(PROV).map_err(io)?;
        let pos = {
            let mut meta = txn.open_table(index_tables::META).map_err(io)?;
            meta.insert(FORMAT_KEY, FORMAT).map_err(io)?;
            let get = |k: &str| -> Result<u64, StoreError> {
                Ok(meta.get(k).map_err(io)?.map(|v| v.value()).unwrap_or(0))
            };
            IndexPosition {
                next_offset: get("next_offset")?,
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

    /// Apply a batch of `(offset, record)` in one transaction and move the
    /// position past the last offset. Undecodable records were already
    /// skipped by the caller (passed as `None`).
    pub fn apply(
        &self,
        pos: &mut IndexPosition,
        batch: &[(u64, Option<Record>)],
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
            let mut t = Tables {
                index: IndexWrite::open(&txn)?,
                prov: txn.open_table(PROV).map_err(io)?,
            };
            let mut memory = self.memory();
            for (offset, record) in batch {
                if *offset < next.next_offset {
                    continue; // a chunk re-delivered from before our offset
                }
                next.next_offset = offset + 1;
                if let Some(record) = record {
                    out.push(self.apply_one(&mut t, &mut memory, &mut next, record)?);
                }
            }
            drop(memory);
            let meta = &mut t.index.meta;
            meta.insert("next_offset", next.next_offset).map_err(io)?;
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
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(Imported {
                        old_id: item.old_id.clone(),
                        result: t.index.import(item)?,
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
        memory: &mut DedupeMemory,
        pos: &mut IndexPosition,
        message: &Message,
        recipients: &[String],
        sender_device: &Option<String>,
    ) -> Result<(Outcome, Option<(Arc<Message>, Vec<String>)>), StoreError> {
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
            Some((message, stored.recipients)),
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
