//! The embedded store: one redb file, one writer thread, in-process fan-out.
//!
//! Writes (appends, device registration, recall, groups) go through a
//! bounded queue to a single writer thread that takes as many as are
//! waiting (up to `max_batch`), applies them in one write transaction and
//! commits once with fsync (group commit). Only then are the callers
//! answered and the messages fanned out, so an ack always means durable,
//! and message ids (assigned by the writer) are in commit order.
//! Reads use redb's MVCC snapshots on the blocking pool.
//!
//! Messages live in the shared index (`crate::index`: one row, one
//! conversation entry, one timeline entry per recipient user). Each device
//! has a delivery cursor in its user's timeline: an attached device's feed
//! reads the timeline after its cursor, then live messages; its acks move
//! the cursor in memory (exact tracking only for its in-flight window) and
//! moved cursors are written with the next batch. A crash can lose a
//! cursor move (a redelivery), never a message.
//!
//! - `writer.rs`: the group-commit thread;
//! - `cursors.rs`: cursor moves waiting for the next commit;
//! - `catch_up.rs`: a device's timeline pages for its feed;
//! - `tables.rs`: the cursor table and the first-format conversion.

mod catch_up;
mod cursors;
mod tables;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use imgate_core::model::{Conversation, Message};
use imgate_core::store::{
    Announcement, Appended, BoxFuture, ConversationPage, CursorMoved, DeviceFeed, Group,
    ImportMessage, Imported, NewMessage, Pruned, ReadState, Recalled, SettingChange, StoreResult,
    SyncPage, UserFeed,
};
use imgate_core::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::index::read;
use crate::router::Router;
use catch_up::DeviceTimeline;
use cursors::CursorBook;
use writer::WriteOp;

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub node_id: u16,
    /// Most operations committed in one transaction (1 = one fsync each).
    pub max_batch: usize,
    /// How long a `(sender, client_msg_id)` is remembered for resends.
    pub dedupe_window: Duration,
    /// Live deliveries buffered per attached device; beyond it the device
    /// reads its timeline instead until it caught up.
    pub device_buffer: usize,
    /// Unacked deliveries tracked exactly per attached device (see
    /// [`imgate_core::store::InFlight`]).
    pub device_window: usize,
    /// Resend keys remembered (the dedupe window is shortened for the
    /// oldest beyond this many; ~20 bytes each).
    pub dedupe_capacity: usize,
    /// redb page cache in bytes (the store's memory does not grow with
    /// stored history beyond it).
    pub cache_bytes: usize,
}

impl EmbeddedConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            data_dir: data_dir.into(),
            node_id: 1,
            max_batch: 512,
            dedupe_window: Duration::from_secs(600),
            device_buffer: 1024,
            device_window: 4096,
            dedupe_capacity: 1_000_000,
            cache_bytes: 64 << 20,
        }
    }
}

/// The default [`Store`]: redb under the data directory.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<redb::Database>,
    writes: mpsc::Sender<WriteOp>,
    router: Arc<Router>,
    cursors: Arc<CursorBook>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EmbeddedStore {
    /// Open (or create) `data_dir/imgate.redb` and start the writer thread.
    pub fn open(config: EmbeddedConfig) -> StoreResult<Self> {
        std::fs::create_dir_all(&config.data_dir).map_err(unavailable)?;
        let path = config.data_dir.join("imgate.redb");
        let db = Arc::new(open_db(&path, config.cache_bytes)?);
        let last_id = tables::prepare(&db)?;
        let router = Arc::new(Router::new(config.device_buffer, config.device_window));
        let cursors = Arc::new(CursorBook::default());
        let (tx, rx) = mpsc::channel(config.max_batch.max(1) * 8);
        writer::spawn(
            db.clone(),
            router.clone(),
            cursors.clone(),
            rx,
            &config,
            last_id,
        )?;
        Ok(EmbeddedStore {
            db,
            writes: tx,
            router,
            cursors,
        })
    }

    /// Finish queued writes and release the database file (so the same
    /// directory can be opened again in this process). Other clones of this
    /// store must be dropped first for the file to be released.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(WriteOp::Close { reply: tx }).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> WriteOp,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Unavailable("embedded store writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("embedded store writer stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        read_on(self.db.clone(), f).await
    }
}

/// Run `f` on a read snapshot, on the blocking pool.
async fn read_on<T: Send + 'static>(
    db: Arc<redb::Database>,
    f: impl FnOnce(&redb::ReadTransaction) -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(move || {
        let txn = db.begin_read().map_err(crate::index::tables::io)?;
        f(&txn)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
}

fn open_db(path: &Path, cache_bytes: usize) -> StoreResult<redb::Database> {
    redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))
}

impl Store for EmbeddedStore {
    fn append(&self, msg: NewMessage) -> BoxFuture<'_, StoreResult<Appended>> {
        Box::pin(self.write(|reply| WriteOp::Append {
            msg: Box::new(msg),
            reply,
        }))
    }

    /// Queued = in the writer's FIFO queue: ids follow queue order. (A
    /// first poll of `append` is not enough: the queue's permit can be
    /// taken while the message is not yet pushed, when the task's
    /// cooperative budget ran out.)
    fn append_queued(
        &self,
        msg: NewMessage,
    ) -> BoxFuture<'_, StoreResult<BoxFuture<'_, StoreResult<Appended>>>> {
        Box::pin(async move {
            let stopped = || StoreError::Unavailable("embedded store writer stopped".into());
            let permit = self.writes.reserve().await.map_err(|_| stopped())?;
            let (reply, done) = oneshot::channel();
            permit.send(WriteOp::Append {
                msg: Box::new(msg),
                reply,
            });
            let done: BoxFuture<'_, StoreResult<Appended>> =
                Box::pin(async move { done.await.map_err(|_| stopped())? });
            Ok(done)
        })
    }

    fn sync<'a>(
        &'a self,
        user: &'a str,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<SyncPage>> {
        let user = user.to_string();
        Box::pin(self.read(move |txn| read::sync(txn, &user, since, limit)))
    }

    fn history<'a>(
        &'a self,
        user: &'a str,
        conversation: &'a Conversation,
        before: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<SyncPage>> {
        let user = user.to_string();
        let key = conversation.history_key(&user);
        Box::pin(self.read(move |txn| read::history(txn, &user, &key, before, limit)))
    }

    fn get(&self, message_id: u64) -> BoxFuture<'_, StoreResult<Option<Arc<Message>>>> {
        Box::pin(self.read(move |txn| Ok(read::get(txn, message_id)?.map(|r| Arc::new(r.message)))))
    }

    fn get_for<'a>(
        &'a self,
        message_id: u64,
        user: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Arc<Message>>>> {
        let user = user.to_string();
        Box::pin(self.read(move |txn| {
            Ok(read::get_for(txn, message_id, &user)?.map(|r| Arc::new(r.message)))
        }))
    }

    fn recall(&self, message_id: u64) -> BoxFuture<'_, StoreResult<Recalled>> {
        Box::pin(self.write(move |reply| WriteOp::Recall { message_id, reply }))
    }

    fn last_message_id<'a>(&'a self, user: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        let user = user.to_string();
        Box::pin(self.read(move |txn| read::last_message_id(txn, &user)))
    }

    fn attach_device<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
    ) -> BoxFuture<'a, StoreResult<DeviceFeed>> {
        Box::pin(async move {
            // The cursor first, then the route: the feed's first timeline
            // read comes after both, so a message committed in between is
            // in the timeline (and perhaps live too: yielded once).
            let cursor = self
                .write(|reply| WriteOp::RegisterDevice {
                    user: user.to_string(),
                    device: device.to_string(),
                    reply,
                })
                .await?;
            let a = self.router.attach(user, device, cursor);
            let catch_up = DeviceTimeline::new(self.db.clone(), user, device);
            Ok(DeviceFeed::from_cursor(
                a.in_flight,
                Box::new(catch_up),
                a.live,
                a.lagged,
                Some(a.detach),
            ))
        })
    }

    fn ack<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        message_id: u64,
    ) -> BoxFuture<'a, StoreResult<()>> {
        // In memory; the moved cursor is written with the next batch.
        if let Some(cursor) = self.router.ack(user, device, message_id) {
            if self.cursors.record(user, device, cursor) {
                // The writer may be idle: ask for a commit (if the queue is
                // full, a batch is coming anyway and takes the move).
                let _ = self.writes.try_send(WriteOp::FlushCursors);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn subscribe_user(&self, user: &str) -> UserFeed {
        self.router.subscribe_user(user)
    }

    fn group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, StoreResult<Option<Group>>> {
        let id = group_id.to_string();
        Box::pin(self.read(move |txn| read::group(txn, &id)))
    }

    fn scan_groups<'a>(
        &'a self,
        after: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<(Vec<Group>, bool)>> {
        let after = after.to_string();
        Box::pin(self.read(move |txn| read::scan_groups(txn, &after, limit)))
    }

    fn put_group(&self, group: Group) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.write(|reply| WriteOp::PutGroup { group, reply }))
    }

    fn delete_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        let group_id = group_id.to_string();
        Box::pin(self.write(|reply| WriteOp::DeleteGroup { group_id, reply }))
    }

    fn setting<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<String>>> {
        let key = key.to_string();
        Box::pin(self.read(move |txn| read::setting(txn, &key)))
    }

    fn put_setting(&self, key: String, value: String) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.write(|reply| WriteOp::PutSetting { key, value, reply }))
    }

    fn watch_settings(&self) -> tokio::sync::broadcast::Receiver<SettingChange> {
        self.router.settings.subscribe()
    }

    /// One node: an announcement only goes to this process's watchers.
    fn announce(&self, topic: String, payload: String) -> BoxFuture<'_, StoreResult<()>> {
        let a = Arc::new(Announcement {
            topic,
            payload,
            local: true,
        });
        let _ = self.router.announcements.send(a);
        Box::pin(std::future::ready(Ok(())))
    }

    fn watch_announcements(&self) -> tokio::sync::broadcast::Receiver<Arc<Announcement>> {
        self.router.announcements.subscribe()
    }

    fn watch_cursors(&self) -> tokio::sync::broadcast::Receiver<Arc<CursorMoved>> {
        self.router.cursors.subscribe()
    }

    fn import(&self, batch: Vec<ImportMessage>) -> BoxFuture<'_, StoreResult<Vec<Imported>>> {
        Box::pin(self.write(|reply| WriteOp::Import { batch, reply }))
    }

    fn scan(&self, after: u64, limit: usize) -> BoxFuture<'_, StoreResult<SyncPage>> {
        Box::pin(self.read(move |txn| read::scan(txn, after, limit)))
    }

    fn sent_on_day<'a>(&'a self, user: &'a str, day: i64) -> BoxFuture<'a, StoreResult<u64>> {
        let user = user.to_string();
        Box::pin(self.read(move |txn| read::sent_on_day(txn, &user, day)))
    }

    fn conversations<'a>(
        &'a self,
        user: &'a str,
        before: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<ConversationPage>> {
        let user = user.to_string();
        Box::pin(self.read(move |txn| read::conversations(txn, &user, before, limit)))
    }

    fn mark_read<'a>(
        &'a self,
        user: &'a str,
        conversation: &'a Conversation,
        upto: u64,
    ) -> BoxFuture<'a, StoreResult<Option<ReadState>>> {
        let key = conversation.history_key(user);
        Box::pin(self.write(move |reply| WriteOp::MarkRead {
            user: user.to_string(),
            key,
            upto,
            reply,
        }))
    }

    fn prune(&self, now: i64, retention_ms: Option<i64>) -> BoxFuture<'_, StoreResult<Pruned>> {
        let cutoff = retention_ms.map(|r| imgate_core::id::first_id_at(now.saturating_sub(r)));
        Box::pin(self.write(move |reply| WriteOp::Prune { now, cutoff, reply }))
    }
}
