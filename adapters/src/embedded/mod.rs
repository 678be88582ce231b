//! The embedded store: one redb file, one writer thread, in-process fan-out.
//!
//! Writes (appends, acks, device registration, recall, groups) go through a
//! bounded queue to a single writer thread that takes as many as are
//! waiting (up to `max_batch`), applies them in one write transaction and
//! commits once with fsync (group commit). Only then are the callers
//! answered and the messages fanned out, so an ack always means durable,
//! and message ids (assigned by the writer) are in commit order.
//! Reads use redb's MVCC snapshots on the blocking pool.

mod reads;
mod router;
mod tables;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use imgate_core::model::{Conversation, Message};
use imgate_core::store::{
    Announcement, Appended, BoxFuture, DeviceFeed, Group, ImportMessage, Imported, NewMessage,
    Recalled, SettingChange, StoreResult, SyncPage, UserFeed,
};
use imgate_core::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

use router::Router;
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
    /// Live deliveries buffered per attached device before the device is
    /// detached (it then reconnects and gets its pending messages).
    pub device_buffer: usize,
}

impl EmbeddedConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            data_dir: data_dir.into(),
            node_id: 1,
            max_batch: 512,
            dedupe_window: Duration::from_secs(600),
            device_buffer: 1024,
        }
    }
}

/// The default [`Store`]: redb under the data directory.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<redb::Database>,
    writes: mpsc::Sender<WriteOp>,
    router: Arc<Router>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EmbeddedStore {
    /// Open (or create) `data_dir/imgate.redb` and start the writer thread.
    pub fn open(config: EmbeddedConfig) -> StoreResult<Self> {
        std::fs::create_dir_all(&config.data_dir).map_err(unavailable)?;
        let path = config.data_dir.join("imgate.redb");
        let db = Arc::new(open_db(&path)?);
        let last_id = tables::create_all(&db)?;
        let router = Arc::new(Router::new(config.device_buffer));
        let (tx, rx) = mpsc::channel(config.max_batch.max(1) * 8);
        writer::spawn(db.clone(), router.clone(), rx, &config, last_id)?;
        Ok(EmbeddedStore {
            db,
            writes: tx,
            router,
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
        f: impl FnOnce(&redb::Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

fn open_db(path: &Path) -> StoreResult<redb::Database> {
    redb::Database::create(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))
}

impl Store for EmbeddedStore {
    fn append(&self, msg: NewMessage) -> BoxFuture<'_, StoreResult<Appended>> {
        Box::pin(self.write(|reply| WriteOp::Append {
            msg: Box::new(msg),
            reply,
        }))
    }

    fn sync<'a>(
        &'a self,
        user: &'a str,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<SyncPage>> {
        let user = user.to_string();
        Box::pin(self.read(move |db| reads::sync(db, &user, since, limit)))
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
        Box::pin(self.read(move |db| reads::history(db, &user, &key, before, limit)))
    }

    fn get(&self, message_id: u64) -> BoxFuture<'_, StoreResult<Option<Arc<Message>>>> {
        Box::pin(
            self.read(move |db| Ok(reads::record(db, message_id)?.map(|r| Arc::new(r.message)))),
        )
    }

    fn recall(&self, message_id: u64) -> BoxFuture<'_, StoreResult<Recalled>> {
        Box::pin(self.write(move |reply| WriteOp::Recall { message_id, reply }))
    }

    fn last_message_id<'a>(&'a self, user: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        let user = user.to_string();
        Box::pin(self.read(move |db| reads::last_message_id(db, &user)))
    }

    fn attach_device<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
    ) -> BoxFuture<'a, StoreResult<DeviceFeed>> {
        Box::pin(async move {
            // Route first, then read what is pending: a message committed in
            // between shows up in both and the feed yields it once.
            let (live, detach) = self.router.attach(user, device);
            let pending = self
                .write(|reply| WriteOp::RegisterDevice {
                    user: user.to_string(),
                    device: device.to_string(),
                    reply,
                })
                .await?;
            Ok(DeviceFeed::new(pending, live, Some(detach)))
        })
    }

    fn ack<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        message_id: u64,
    ) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(self.write(move |reply| WriteOp::Ack {
            user: user.to_string(),
            device: device.to_string(),
            message_id,
            reply,
        }))
    }

    fn subscribe_user(&self, user: &str) -> UserFeed {
        self.router.subscribe_user(user)
    }

    fn group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, StoreResult<Option<Group>>> {
        let id = group_id.to_string();
        Box::pin(self.read(move |db| reads::group(db, &id)))
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
        Box::pin(self.read(move |db| reads::setting(db, &key)))
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

    fn import(&self, batch: Vec<ImportMessage>) -> BoxFuture<'_, StoreResult<Vec<Imported>>> {
        Box::pin(self.write(|reply| WriteOp::Import { batch, reply }))
    }

    fn scan(&self, after: u64, limit: usize) -> BoxFuture<'_, StoreResult<SyncPage>> {
        Box::pin(self.read(move |db| reads::scan(db, after, limit)))
    }

    fn sent_on_day<'a>(&'a self, user: &'a str, day: i64) -> BoxFuture<'a, StoreResult<u64>> {
        let user = user.to_string();
        Box::pin(self.read(move |db| {
            let txn = db.begin_read().map_err(tables::io)?;
            crate::daily_sent::read(&txn, &user, day)
        }))
    }
}
