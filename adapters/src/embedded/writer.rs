//! The single writer thread: group commit with fsync, then replies and
//! fan-out.
//!
//! Per message it writes the index rows (`crate::index`): one binary row,
//! one conversation entry, one timeline entry per recipient user. Device
//! delivery state is a cursor per device: acks move cursors in memory
//! ([`super::cursors::CursorBook`]) and the moved ones are written with the
//! next batch, so an ack costs no write of its own. Resends are recognised
//! from memory rebuilt from the rows at open.

use std::sync::Arc;

use imgate_core::id::MessageIdGenerator;
use imgate_core::model::Message;
use imgate_core::now_ms;
use imgate_core::store::{
    Appended, Group, ImportMessage, Imported, NewMessage, Pruned, ReadState, Recalled, StoreResult,
};
use imgate_core::StoreError;
use redb::{Database, Durability, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::cursors::CursorBook;
use super::tables::CURSORS;
use super::EmbeddedConfig;
use crate::index::tables::io;
use crate::index::{rebuild_dedupe, DedupeMemory, IndexWrite, StoredMessage};
use crate::router::Router;

/// A write waiting for the next group commit.
pub enum WriteOp {
    Append {
        msg: Box<NewMessage>,
        reply: oneshot::Sender<StoreResult<Appended>>,
    },
    /// A device attaches: its cursor (created at the newest id for a device
    /// never seen before).
    RegisterDevice {
        user: String,
        device: String,
        reply: oneshot::Sender<StoreResult<u64>>,
    },
    /// Cursors moved: write them (no reply; any batch writes them too).
    FlushCursors,
    Recall {
        message_id: u64,
        reply: oneshot::Sender<StoreResult<Recalled>>,
    },
    PutGroup {
        group: Group,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    DeleteGroup {
        group_id: String,
        reply: oneshot::Sender<StoreResult<bool>>,
    },
    PutSetting {
        key: String,
        value: String,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    Import {
        batch: Vec<ImportMessage>,
        reply: oneshot::Sender<StoreResult<Vec<Imported>>>,
    },
    /// A user read a conversation (history key) up to an id (0: newest).
    MarkRead {
        user: String,
        key: String,
        upto: u64,
        reply: oneshot::Sender<StoreResult<Option<ReadState>>>,
    },
    /// Remove expired messages, and those below `cutoff` (the retention).
    Prune {
        now: i64,
        cutoff: Option<u64>,
        reply: oneshot::Sender<StoreResult<Pruned>>,
    },
    /// Stop after the ops already queued; answered once the writer let go
    /// of the database.
    Close { reply: oneshot::Sender<()> },
}

/// What applying one op produced (sent to its caller after the commit).
enum Done {
    Appended(Appended, Vec<String>, Option<String>),
    Unit,
    Cursor(u64),
    Recalled(Recalled),
    Existed(bool),
    SettingPut,
    Imported(Vec<Imported>),
    Read(Option<ReadState>),
    Pruned(Pruned),
}

/// A commit of only cursor moves is not fsynced (losing it means a
/// redelivery); one in this many is, so the file does not grow (redb frees
/// pages only on durable commits).
const DURABLE_CURSOR_COMMIT_EVERY: u64 = 32;

struct Writer {
    db: Arc<Database>,
    router: Arc<Router>,
    cursors: Arc<CursorBook>,
    ids: MessageIdGenerator,
    dedupe: DedupeMemory,
    dedupe_capacity: usize,
    max_batch: usize,
    dedupe_window_ms: i64,
    cursor_commits: u64,
}

pub fn spawn(
    db: Arc<Database>,
    router: Arc<Router>,
    cursors: Arc<CursorBook>,
    rx: mpsc::Receiver<WriteOp>,
    config: &EmbeddedConfig,
    last_id: u64,
) -> StoreResult<()> {
    let mut ids = MessageIdGenerator::new(config.node_id);
    ids.resume_after(last_id);
    let window_ms = config.dedupe_window.as_millis() as i64;
    let mut writer = Writer {
        db,
        router,
        cursors,
        ids,
        dedupe: DedupeMemory::new(config.dedupe_capacity, window_ms),
        dedupe_capacity: config.dedupe_capacity,
        max_batch: config.max_batch.max(1),
        dedupe_window_ms: window_ms,
        cursor_commits: 0,
    };
    writer.rebuild_dedupe()?;
    std::thread::Builder::new()
        .name("imgate-redb-writer".into())
        .spawn(move || writer.run(rx))
        .map(|_| ())
        .map_err(io)
}

impl Writer {
    fn rebuild_dedupe(&mut self) -> StoreResult<()> {
        let txn = self.db.begin_read().map_err(io)?;
        rebuild_dedupe(
            &txn,
            &mut self.dedupe,
            now_ms(),
            self.dedupe_window_ms,
            self.dedupe_capacity,
        )
    }

    fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        let mut closed = None;
        while let Some(first) = rx.blocking_recv() {
            let mut ops = vec![first];
            while ops.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            if let Some(pos) = ops
                .iter()
                .position(|op| matches!(op, WriteOp::Close { .. }))
            {
                let rest = ops.split_off(pos);
                self.commit_batch(ops);
                // Whatever acks moved last is written before letting go.
                self.commit_batch(vec![WriteOp::FlushCursors]);
                for op in rest {
                    match op {
                        WriteOp::Close { reply } => closed = closed.or(Some(reply)),
                        other => fail(other, &StoreError::Unavailable("store closed".into())),
                    }
                }
                break;
            }
            self.commit_batch(ops);
        }
        drop(self);
        tracing::debug!("embedded store writer stopped");
        if let Some(reply) = closed {
            let _ = reply.send(());
        }
    }

    fn commit_batch(&mut self, ops: Vec<WriteOp>) {
        let now = now_ms();
        let moved = self.cursors.take();
        match self.apply_all(&ops, &moved, now) {
            Ok(done) => {
                for (op, done) in ops.into_iter().zip(done) {
                    self.finish(op, done);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, ops = ops.len(), "group commit failed");
                self.cursors.put_back(moved);
                // The resend memory may hold keys of messages that were
                // not stored: rebuild it from what is.
                if let Err(e) = self.rebuild_dedupe() {
                    tracing::error!(error = %e, "rebuilding the resend memory failed");
                    self.dedupe.clear();
                }
                for op in ops {
                    fail(op, &e);
                }
            }
        }
    }

    fn apply_all(
        &mut self,
        ops: &[WriteOp],
        moved: &[((String, String), u64)],
        now: i64,
    ) -> StoreResult<Vec<Done>> {
        let mut txn = self.db.begin_write().map_err(io)?;
        let only_cursors = ops.iter().all(|op| matches!(op, WriteOp::FlushCursors));
        if only_cursors {
            if moved.is_empty() {
                return Ok(ops.iter().map(|_| Done::Unit).collect());
            }
            self.cursor_commits += 1;
            if !self
                .cursor_commits
                .is_multiple_of(DURABLE_CURSOR_COMMIT_EVERY)
            {
                txn.set_durability(Durability::None);
            }
        }
        let mut done = Vec::with_capacity(ops.len());
        {
            let mut cursors = txn.open_table(CURSORS).map_err(io)?;
            for ((user, device), c) in moved {
                let key = (user.as_str(), device.as_str());
                let before = cursors.get(key).map_err(io)?.map(|v| v.value());
                if before.is_none_or(|b| b < *c) {
                    cursors.insert(key, *c).map_err(io)?;
                }
            }
            let mut t = IndexWrite::open(&txn)?;
            for op in ops {
                done.push(self.apply(&mut t, &mut cursors, op, now)?);
            }
            t.finish(now)?;
        }
        txn.commit().map_err(io)?;
        Ok(done)
    }

    fn apply(
        &mut self,
        t: &mut IndexWrite<'_>,
        cursors: &mut redb::Table<'_, (&'static str, &'static str), u64>,
        op: &WriteOp,
        now: i64,
    ) -> StoreResult<Done> {
        match op {
            WriteOp::Append { msg, .. } => self.append(t, msg, now),
            WriteOp::RegisterDevice { user, device, .. } => {
                let key = (user.as_str(), device.as_str());
                if let Some(c) = cursors.get(key).map_err(io)? {
                    return Ok(Done::Cursor(c.value()));
                }
                // A new device gets what is sent from now on.
                let c = self.ids.last();
                cursors.insert(key, c).map_err(io)?;
                Ok(Done::Cursor(c))
            }
            WriteOp::FlushCursors | WriteOp::Close { .. } => Ok(Done::Unit),
            WriteOp::Recall { message_id, .. } => {
                let removed = t.remove(*message_id)?;
                Ok(Done::Recalled(
                    removed.map(|s| (Arc::new(s.message), s.recipients)),
                ))
            }
            WriteOp::PutGroup { group, .. } => {
                t.put_group(group)?;
                Ok(Done::Unit)
            }
            WriteOp::PutSetting { key, value, .. } => {
                t.put_setting(key, value)?;
                Ok(Done::SettingPut)
            }
            WriteOp::DeleteGroup { group_id, .. } => Ok(Done::Existed(t.delete_group(group_id)?)),
            WriteOp::MarkRead {
                user, key, upto, ..
            } => Ok(Done::Read(t.mark_read(user, key, *upto)?)),
            WriteOp::Prune { now, cutoff, .. } => Ok(Done::Pruned(t.prune(
                *now,
                *cutoff,
                crate::index::prune::PRUNE_BATCH,
            )?)),
            WriteOp::Import { batch, .. } => {
                let placed = t.import_batch(batch)?;
                let out = batch
                    .iter()
                    .zip(placed)
                    .map(|(item, result)| Imported {
                        old_id: item.old_id.clone(),
                        result,
                    })
                    .collect();
                Ok(Done::Imported(out))
            }
        }
    }

    fn append(&mut self, t: &mut IndexWrite<'_>, msg: &NewMessage, now: i64) -> StoreResult<Done> {
        let resend = t.resend_of(
            &self.dedupe,
            &msg.sender,
            &msg.client_msg_id,
            now,
            self.dedupe_window_ms,
        )?;
        if let Some((id, original)) = resend {
            let original = original
                .unwrap_or_else(|| message_from(msg, id, imgate_core::id::timestamp_of(id)));
            let appended = Appended {
                message: Arc::new(original),
                duplicate: true,
            };
            return Ok(Done::Appended(appended, Vec::new(), None));
        }
        let id = self.ids.next_at(now);
        let stored = StoredMessage {
            message: message_from(msg, id, now),
            recipients: msg.recipients.clone(),
            sender_device: msg.sender_device.clone(),
        };
        t.insert(&stored)?;
        if !msg.client_msg_id.is_empty() {
            self.dedupe.insert(&msg.sender, &msg.client_msg_id, id, now);
        }
        let appended = Appended {
            message: Arc::new(stored.message),
            duplicate: false,
        };
        Ok(Done::Appended(
            appended,
            stored.recipients,
            stored.sender_device,
        ))
    }

    fn finish(&self, op: WriteOp, done: Done) {
        match (op, done) {
            (
                WriteOp::Append { reply, .. },
                Done::Appended(appended, recipients, sender_device),
            ) => {
                if !appended.duplicate {
                    self.router
                        .fan_out(&appended.message, &recipients, sender_device.as_deref());
                }
                let _ = reply.send(Ok(appended));
            }
            (WriteOp::RegisterDevice { reply, .. }, Done::Cursor(c)) => {
                let _ = reply.send(Ok(c));
            }
            (WriteOp::FlushCursors, _) | (WriteOp::Close { .. }, _) => {}
            (WriteOp::Recall { reply, .. }, Done::Recalled(r)) => {
                let _ = reply.send(Ok(r));
            }
            (WriteOp::PutGroup { reply, .. }, _) => {
                let _ = reply.send(Ok(()));
            }
            (WriteOp::PutSetting { key, value, reply }, Done::SettingPut) => {
                let _ = self.router.settings.send((key, Arc::new(value)));
                let _ = reply.send(Ok(()));
            }
            (WriteOp::DeleteGroup { reply, .. }, Done::Existed(e)) => {
                let _ = reply.send(Ok(e));
            }
            (WriteOp::Import { reply, .. }, Done::Imported(r)) => {
                let _ = reply.send(Ok(r));
            }
            (WriteOp::MarkRead { reply, .. }, Done::Read(r)) => {
                let _ = reply.send(Ok(r));
            }
            (WriteOp::Prune { reply, .. }, Done::Pruned(p)) => {
                let _ = reply.send(Ok(p));
            }
            (op, _) => fail(op, &StoreError::Corrupt("writer result mismatch".into())),
        }
    }
}

fn message_from(msg: &NewMessage, id: u64, ts: i64) -> Message {
    Message {
        message_id: id,
        sender: msg.sender.clone(),
        conversation: msg.conversation.clone(),
        payload: msg.payload.clone(),
        server_ts: ts,
        client_msg_id: msg.client_msg_id.clone(),
        to_users: msg.to_users.clone(),
    }
}

fn fail(op: WriteOp, e: &StoreError) {
    let err = || match e {
        StoreError::Unavailable(s) => StoreError::Unavailable(s.clone()),
        StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
    };
    match op {
        WriteOp::Append { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::RegisterDevice { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::FlushCursors => {}
        WriteOp::Recall { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::PutGroup { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::DeleteGroup { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::PutSetting { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::Import { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::MarkRead { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::Prune { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::Close { reply } => drop(reply.send(())),
    }
}
