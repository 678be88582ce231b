//! The single writer thread: group commit with fsync, then replies and
//! fan-out.

use std::sync::Arc;

use imgate_core::id::{first_id_at, MessageIdGenerator};
use imgate_core::model::Message;
use imgate_core::now_ms;
use imgate_core::store::{
    Appended, Group, ImportMessage, Imported, NewMessage, Recalled, StoreResult,
};
use imgate_core::StoreError;
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::router::Router;
use super::tables::{self, corrupt, io, StoredMessage};
use super::EmbeddedConfig;
use crate::daily_sent;
use crate::import_rows::{import_one, ImportTables};

/// A write waiting for the next group commit.
pub enum WriteOp {
    Append {
        msg: Box<NewMessage>,
        reply: oneshot::Sender<StoreResult<Appended>>,
    },
    Ack {
        user: String,
        device: String,
        message_id: u64,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    RegisterDevice {
        user: String,
        device: String,
        reply: oneshot::Sender<StoreResult<Vec<Arc<Message>>>>,
    },
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
    /// Stop after the ops already queued; answered once the writer let go
    /// of the database.
    Close { reply: oneshot::Sender<()> },
}

/// What applying one op produced (sent to its caller after the commit).
enum Done {
    Appended(Appended, Vec<String>, Option<String>),
    Unit,
    Pending(Vec<Arc<Message>>),
    Recalled(Recalled),
    Existed(bool),
    SettingPut,
    Imported(Vec<Imported>),
}

struct Writer {
    db: Arc<Database>,
    router: Arc<Router>,
    ids: MessageIdGenerator,
    max_batch: usize,
    dedupe_window_ms: i64,
}

pub fn spawn(
    db: Arc<Database>,
    router: Arc<Router>,
    rx: mpsc::Receiver<WriteOp>,
    config: &EmbeddedConfig,
    last_id: u64,
) -> StoreResult<()> {
    let mut ids = MessageIdGenerator::new(config.node_id);
    ids.resume_after(last_id);
    let writer = Writer {
        db,
        router,
        ids,
        max_batch: config.max_batch.max(1),
        dedupe_window_ms: config.dedupe_window.as_millis() as i64,
    };
    std::thread::Builder::new()
        .name("imgate-redb-writer".into())
        .spawn(move || writer.run(rx))
        .map(|_| ())
        .map_err(io)
}

struct Tables<'t> {
    messages: Table<'t, u64, &'static [u8]>,
    user_index: Table<'t, (&'static str, u64), ()>,
    conv_index: Table<'t, (&'static str, u64), ()>,
    dedupe: Table<'t, (&'static str, &'static str), (u64, i64)>,
    dedupe_order: Table<'t, u64, (&'static str, &'static str)>,
    devices: Table<'t, (&'static str, &'static str), i64>,
    pending: Table<'t, (&'static str, &'static str, u64), ()>,
    groups: Table<'t, &'static str, &'static [u8]>,
    settings: Table<'t, &'static str, &'static str>,
    imports: Table<'t, &'static str, u64>,
    daily_sent: Table<'t, (i64, &'static str), u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> StoreResult<Self> {
        Ok(Tables {
            messages: txn.open_table(tables::MESSAGES).map_err(io)?,
            user_index: txn.open_table(tables::USER_INDEX).map_err(io)?,
            conv_index: txn.open_table(tables::CONV_INDEX).map_err(io)?,
            dedupe: txn.open_table(tables::DEDUPE).map_err(io)?,
            dedupe_order: txn.open_table(tables::DEDUPE_ORDER).map_err(io)?,
            devices: txn.open_table(tables::DEVICES).map_err(io)?,
            pending: txn.open_table(tables::PENDING).map_err(io)?,
            groups: txn.open_table(tables::GROUPS).map_err(io)?,
            settings: txn.open_table(tables::SETTINGS).map_err(io)?,
            imports: txn.open_table(tables::IMPORTS).map_err(io)?,
            daily_sent: txn.open_table(daily_sent::DAILY_SENT).map_err(io)?,
        })
    }

    fn devices_of(&self, user: &str) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        for entry in self.devices.range((user, "")..).map_err(io)? {
            let (k, _) = entry.map_err(io)?;
            let (u, d) = k.value();
            if u != user {
                break;
            }
            out.push(d.to_string());
        }
        Ok(out)
    }
}

impl Writer {
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
        match self.apply_all(&ops, now) {
            Ok(done) => {
                for (op, done) in ops.into_iter().zip(done) {
                    self.finish(op, done);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, ops = ops.len(), "group commit failed");
                for op in ops {
                    fail(op, &e);
                }
            }
        }
    }

    fn apply_all(&mut self, ops: &[WriteOp], now: i64) -> StoreResult<Vec<Done>> {
        let mut txn = self.db.begin_write().map_err(io)?;
        // Delivery acks alone need no fsync: losing one means a redelivery,
        // which at-least-once allows. Anything else is made durable now.
        let only_acks = ops.iter().all(|op| matches!(op, WriteOp::Ack { .. }));
        txn.set_durability(if only_acks {
            Durability::Eventual
        } else {
            Durability::Immediate
        });
        let mut done = Vec::with_capacity(ops.len());
        {
            let mut t = Tables::open(&txn)?;
            for op in ops {
                done.push(self.apply(&mut t, op, now)?);
            }
            self.expire_dedupe(&mut t, now)?;
            daily_sent::expire(&mut t.daily_sent, now)?;
        }
        txn.commit().map_err(io)?;
        Ok(done)
    }

    fn apply(&mut self, t: &mut Tables<'_>, op: &WriteOp, now: i64) -> StoreResult<Done> {
        match op {
            WriteOp::Append { msg, .. } => self.append(t, msg, now),
            WriteOp::Ack {
                user,
                device,
                message_id,
                ..
            } => {
                t.pending
                    .remove((user.as_str(), device.as_str(), *message_id))
                    .map_err(io)?;
                Ok(Done::Unit)
            }
            WriteOp::RegisterDevice { user, device, .. } => {
                t.devices
                    .insert((user.as_str(), device.as_str()), now)
                    .map_err(io)?;
                let mut ids = Vec::new();
                for entry in t
                    .pending
                    .range(
                        (user.as_str(), device.as_str(), 0)
                            ..=(user.as_str(), device.as_str(), u64::MAX),
                    )
                    .map_err(io)?
                {
                    ids.push(entry.map_err(io)?.0.value().2);
                }
                let mut pending = Vec::with_capacity(ids.len());
                for id in ids {
                    match t.messages.get(id).map_err(io)? {
                        Some(v) => pending.push(Arc::new(tables::decode(v.value())?.message)),
                        None => {
                            t.pending
                                .remove((user.as_str(), device.as_str(), id))
                                .map_err(io)?;
                        }
                    }
                }
                Ok(Done::Pending(pending))
            }
            WriteOp::Recall { message_id, .. } => recall(t, *message_id),
            WriteOp::PutGroup { group, .. } => {
                let bytes = serde_json::to_vec(group).map_err(corrupt)?;
                t.groups
                    .insert(group.id.as_str(), bytes.as_slice())
                    .map_err(io)?;
                Ok(Done::Unit)
            }
            WriteOp::Close { .. } => Ok(Done::Unit),
            WriteOp::PutSetting { key, value, .. } => {
                t.settings
                    .insert(key.as_str(), value.as_str())
                    .map_err(io)?;
                Ok(Done::SettingPut)
            }
            WriteOp::DeleteGroup { group_id, .. } => {
                let existed = t.groups.remove(group_id.as_str()).map_err(io)?.is_some();
                Ok(Done::Existed(existed))
            }
            WriteOp::Import { batch, .. } => {
                let mut out = Vec::with_capacity(batch.len());
                for item in batch {
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
                Ok(Done::Imported(out))
            }
        }
    }

    fn append(&mut self, t: &mut Tables<'_>, msg: &NewMessage, now: i64) -> StoreResult<Done> {
        let has_key = !msg.client_msg_id.is_empty();
        if has_key {
            let seen = t
                .dedupe
                .get((msg.sender.as_str(), msg.client_msg_id.as_str()))
                .map_err(io)?
                .map(|v| v.value());
            if let Some((id, at)) = seen {
                if now - at < self.dedupe_window_ms {
                    let original = match t.messages.get(id).map_err(io)? {
                        Some(v) => tables::decode(v.value())?.message,
                        // Recalled since: answer with the original ack.
                        None => message_from(msg, id, at),
                    };
                    let appended = Appended {
                        message: Arc::new(original),
                        duplicate: true,
                    };
                    return Ok(Done::Appended(appended, Vec::new(), None));
                }
            }
        }
        let id = self.ids.next_at(now);
        let message = message_from(msg, id, now);
        let stored = StoredMessage {
            message,
            recipients: msg.recipients.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(corrupt)?;
        t.messages.insert(id, bytes.as_slice()).map_err(io)?;
        let history_key = msg.conversation.history_key(&msg.sender);
        t.conv_index
            .insert((history_key.as_str(), id), ())
            .map_err(io)?;
        for user in &msg.recipients {
            t.user_index.insert((user.as_str(), id), ()).map_err(io)?;
            for device in t.devices_of(user)? {
                if *user == msg.sender && Some(&device) == msg.sender_device.as_ref() {
                    continue;
                }
                t.pending
                    .insert((user.as_str(), device.as_str(), id), ())
                    .map_err(io)?;
            }
        }
        if has_key {
            let key = (msg.sender.as_str(), msg.client_msg_id.as_str());
            t.dedupe.insert(key, (id, now)).map_err(io)?;
            t.dedupe_order.insert(id, key).map_err(io)?;
        }
        daily_sent::count(&mut t.daily_sent, &msg.sender, now)?;
        let appended = Appended {
            message: Arc::new(stored.message),
            duplicate: false,
        };
        Ok(Done::Appended(
            appended,
            stored.recipients,
            msg.sender_device.clone(),
        ))
    }

    /// Forget idempotency keys older than the window (a bounded amount per
    /// batch, so a backlog never makes one commit slow).
    fn expire_dedupe(&self, t: &mut Tables<'_>, now: i64) -> StoreResult<()> {
        let cutoff = first_id_at(now - self.dedupe_window_ms);
        let mut old = Vec::new();
        for entry in t.dedupe_order.range(..cutoff).map_err(io)?.take(256) {
            let (k, v) = entry.map_err(io)?;
            let (s, c) = v.value();
            old.push((k.value(), s.to_string(), c.to_string()));
        }
        for (id, sender, cmid) in old {
            t.dedupe_order.remove(id).map_err(io)?;
            let current = t
                .dedupe
                .get((sender.as_str(), cmid.as_str()))
                .map_err(io)?
                .map(|v| v.value().0);
            if current == Some(id) {
                t.dedupe
                    .remove((sender.as_str(), cmid.as_str()))
                    .map_err(io)?;
            }
        }
        Ok(())
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
            (WriteOp::Ack { reply, .. }, _) => {
                let _ = reply.send(Ok(()));
            }
            (WriteOp::RegisterDevice { reply, .. }, Done::Pending(p)) => {
                let _ = reply.send(Ok(p));
            }
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
            (op, _) => fail(op, &StoreError::Corrupt("writer result mismatch".into())),
        }
    }
}

fn recall(t: &mut Tables<'_>, id: u64) -> StoreResult<Done> {
    let Some(stored) = t
        .messages
        .remove(id)
        .map_err(io)?
        .map(|v| tables::decode(v.value()))
        .transpose()?
    else {
        return Ok(Done::Recalled(None));
    };
    let m = &stored.message;
    let key = m.conversation.history_key(&m.sender);
    t.conv_index.remove((key.as_str(), id)).map_err(io)?;
    for user in &stored.recipients {
        t.user_index.remove((user.as_str(), id)).map_err(io)?;
        for device in t.devices_of(user)? {
            t.pending
                .remove((user.as_str(), device.as_str(), id))
                .map_err(io)?;
        }
    }
    Ok(Done::Recalled(Some((
        Arc::new(stored.message),
        stored.recipients,
    ))))
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
        WriteOp::Ack { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::RegisterDevice { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::Recall { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::PutGroup { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::DeleteGroup { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::PutSetting { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::Import { reply, .. } => drop(reply.send(Err(err()))),
        WriteOp::Close { reply } => drop(reply.send(())),
    }
}
