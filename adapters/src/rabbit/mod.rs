//! The RabbitMQ store: several gateway nodes share one broker (a cluster
//! in production) and see the same messages, groups, cursors and
//! deliveries.
//!
//! Layout (one concern per file):
//! - [`config`]: settings, read from the `amqp://` URL's query parameters.
//! - `topology`: names and declarations: three streams (log, state,
//!   control) and the inbox exchange. Nothing per user or device.
//! - `broker`: a supervised connection that reconnects with backoff.
//! - `record`: the records (every change is one).
//! - `publisher`: confirms, the bounded in-flight window, waiting for the
//!   local indexer.
//! - `log_consumer`: reads the three streams from the node's offsets
//!   into…
//! - `index`: the node-local redb index (sync, history, dedupe, groups,
//!   final ids, device cursors): a cache of the streams, rebuilt from them
//!   when deleted.
//! - `devices`: attached devices: delivery from the indexer, catch-up
//!   from the device's cursor in the index.
//! - `cursor_log`: moved cursors to the control stream in batches, and
//!   periodic cursor snapshots.
//! - `mqtt_bus`: generic MQTT publishes and retained messages across
//!   nodes ([`RabbitStore::mqtt_bus`]).
//!
//! Data flow of an append: one publish to the inbox exchange with routing
//! key `log` → the log stream → publisher confirm → every node's indexer
//! reads it, assigns the final id (dedupe in log order) and fans it out to
//! the recipients' devices attached to that node → this node's sender
//! gets its ack. A device acks on the node holding its session; the moved
//! cursor reaches the control stream within `cursor_flush`, and every
//! node's index. A device that reconnects anywhere reads its timeline
//! after its cursor, then live messages.
//!
//! Guarantees (DESIGN §3) and their limits, stated plainly:
//! - An ack means the broker confirmed the publish to the log stream. A
//!   failed append (nack, timeout, lost connection) may still have been
//!   stored: the sender's resend with the same `client_msg_id` is answered
//!   with the original.
//! - Dedupe is exact across nodes within the window: duplicates are
//!   decided in log order by every indexer alike (see `index.rs`).
//! - Sync and history are the same on every node once it has indexed the
//!   same prefix of the log; a node's own appends are visible to it when
//!   acked, other nodes' a few milliseconds later (the stream's delivery
//!   latency), never out of id order: final ids increase in log order.
//! - Delivery is at-least-once from the cursor: a device that moves to
//!   another node before its last acks were flushed (or whose node died)
//!   gets those messages again, with the same ids.
//! - Live-only messages (persist flag 0/4) go through the log to reach
//!   every node's devices but are never indexed; read positions
//!   (`Store::mark_read`) are log records too, applied in log order.
//!   Each node prunes its own index (`Store::prune`: expiry,
//!   `retention_days`).
//! - History is kept whole by default (`log_max_age` / `log_max_bytes`
//!   set a retention); groups and settings live in their own stream and
//!   survive any history retention. Control records expire
//!   (`control_max_age`); periodic cursor snapshots keep every cursor
//!   readable for a node started later.
//! - The broker holds three streams, one exchange and, per running node, a
//!   fixed set of connections and channels (publish, consume, MQTT bus),
//!   whatever the number of users and devices.

pub mod config;

mod broker;
mod cursor_log;
mod devices;
mod index;
mod log_consumer;
mod mqtt_bus;
mod publisher;
mod record;
mod topology;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgate_core::model::{Conversation, Message};
use imgate_core::store::{
    Announcement, Appended, BoxFuture, ConversationPage, CursorMoved, DeviceFeed, Group,
    NewMessage, Pruned, ReadState, Recalled, StoreResult, SyncPage, UserFeed,
};
use imgate_core::{now_ms, Store, StoreError};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use tokio::sync::{broadcast, watch};

pub use config::RabbitConfig;
pub use mqtt_bus::{BusEvent, BusSink, MqttBus};

use crate::router::Router;
use broker::Broker;
use cursor_log::{CursorLog, Flusher};
use devices::Devices;
use index::{Index, IndexPosition, Outcome};
use log_consumer::LogConsumer;
use publisher::{Publisher, PublisherParts, Waiters};
use record::Record;
use topology::Names;

/// The RabbitMQ-backed [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct RabbitStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<RabbitConfig>,
    names: Names,
    index: Arc<Index>,
    position: Arc<Mutex<IndexPosition>>,
    publisher: Arc<Publisher>,
    devices: Devices,
    router: Arc<Router>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The cursor flusher stops first (its last flush needs the broker).
    cursor_stop: watch::Sender<bool>,
    cursor_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected index outcome for {what}"))
}

impl RabbitStore {
    /// Connect, declare the topology, start the indexer and wait until this
    /// node's index has caught up with the log (everything written before
    /// this call is visible when it returns).
    pub async fn open(config: RabbitConfig) -> StoreResult<Self> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let path = config
            .data_dir
            .join(format!("rabbit-{}.redb", config.prefix));
        let window_ms = i64::try_from(config.dedupe_window.as_millis()).unwrap_or(i64::MAX);
        let (index, position) = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Index::open(&path, window_ms))
                .await
                .map_err(|e| StoreError::Unavailable(format!("index open failed: {e}")))??
        };
        let uri = broker_uri(&config)?;
        let names = Names::new(&config.prefix);
        let boot = boot_id();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let config = Arc::new(config);
        let conn_name =
            |role: &str| format!("imgate {} node {} {role}", config.prefix, config.node_id);
        let (pub_broker, pub_task) = Broker::start(
            uri.clone(),
            conn_name("publish"),
            names.clone(),
            config.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        let (sub_broker, sub_task) = Broker::start(
            uri.clone(),
            conn_name("consume"),
            names.clone(),
            config.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        let mut tasks = vec![pub_task, sub_task];
        let index = Arc::new(index);
        let position = Arc::new(Mutex::new(position));
        let last_final = Arc::new(AtomicU64::new(position_last_final(&position)));
        let waiters = Arc::new(Waiters::default());
        let router = Arc::new(Router::new(config.device_buffer, config.device_window));
        let cursors = Arc::new(CursorLog::new());
        let consumer = LogConsumer {
            broker: sub_broker.clone(),
            names: names.clone(),
            index: index.clone(),
            position: position.clone(),
            last_final: last_final.clone(),
            waiters: waiters.clone(),
            router: router.clone(),
            cursors: cursors.clone(),
            boot,
            node_id: config.node_id,
            prefetch: config.log_prefetch,
        };
        tasks.push(tokio::spawn(consumer.run(shutdown_rx)));
        let (publisher, publisher_task) = Publisher::new(PublisherParts {
            broker: pub_broker,
            names: names.clone(),
            boot,
            node_id: config.node_id,
            max_in_flight: config.max_in_flight,
            last_final,
            waiters,
            send_timeout: config.send_timeout,
            reconnect_wait: config.reconnect_wait,
            shutdown: shutdown.subscribe(),
        });
        let publisher = Arc::new(publisher);
        tasks.push(publisher_task);
        let (cursor_stop, cursor_stop_rx) = watch::channel(false);
        let flusher = Flusher {
            log: cursors.clone(),
            publisher: publisher.clone(),
            index: index.clone(),
            router: router.clone(),
            flush_every: config.cursor_flush,
            snapshot_every: config.cursor_snapshot,
            device_expires: config.device_expires,
            node_id: config.node_id,
        };
        let cursor_task = tokio::spawn(flusher.run(cursor_stop_rx));
        let devices = Devices {
            router: router.clone(),
            index: index.clone(),
            position: position.clone(),
            cursors,
            device_expires: config.device_expires,
            send_timeout: config.send_timeout,
        };
        let store = RabbitStore {
            inner: Arc::new(Inner {
                config: config.clone(),
                names,
                index,
                position,
                publisher,
                devices,
                router,
                shutdown,
                tasks: Mutex::new(tasks),
                cursor_stop,
                cursor_task: Mutex::new(Some(cursor_task)),
            }),
        };
        // Catch up: once our own marker comes back through each stream,
        // the index holds everything written to it before.
        let started = std::time::Instant::now();
        let marker = |key: &'static str| {
            store.write(
                move |origin, _| Record::Marker {
                    origin,
                    stream: key.to_string(),
                },
                Some(config.catch_up_timeout),
            )
        };
        let (a, b, c) = tokio::join!(
            marker(topology::LOG_KEY),
            marker(topology::STATE_KEY),
            marker(topology::CONTROL_KEY)
        );
        a?;
        b?;
        c?;
        tracing::info!(
            prefix = %config.prefix,
            node = config.node_id,
            offset = store.index_offset(),
            took_ms = started.elapsed().as_millis() as u64,
            "RabbitMQ store ready (index caught up with the log)"
        );
        Ok(store)
    }

    /// Stop consumers and connections and release the index file. Other
    /// clones of this store stop working.
    pub async fn close(self) {
        let _ = self.inner.cursor_stop.send(true);
        let cursor_task = match self.inner.cursor_task.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(t) = cursor_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let _ = self.inner.shutdown.send(true);
        let tasks: Vec<_> = match self.inner.tasks.lock() {
            Ok(mut g) => g.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        // In-flight reads may still hold the index: close it explicitly so
        // the file is free when we return.
        let index = self.inner.index.clone();
        let _ = tokio::task::spawn_blocking(move || index.close()).await;
    }

    /// Start the cluster bus of the generic MQTT broker (see `mqtt_bus`):
    /// `sink` gets the other nodes' publishes and every retained update.
    /// Returns once the retained updates published before this call were
    /// handed to `sink`. Stops with the store.
    pub async fn mqtt_bus(&self, sink: BusSink) -> StoreResult<MqttBus> {
        let config = &self.inner.config;
        let uri = broker_uri(config)?;
        let (bus, tasks) = MqttBus::start(
            uri,
            config.clone(),
            self.inner.names.clone(),
            config.node_id,
            config.reconnect_wait,
            config.catch_up_timeout,
            sink,
            self.inner.shutdown.subscribe(),
        )
        .await?;
        match self.inner.tasks.lock() {
            Ok(mut g) => g.extend(tasks),
            Err(p) => p.into_inner().extend(tasks),
        }
        Ok(bus)
    }

    /// The next log offset this node's index will read (how far it is).
    pub fn index_offset(&self) -> u64 {
        match self.inner.position.lock() {
            Ok(g) => g.next_offset,
            Err(p) => p.into_inner().next_offset,
        }
    }

    /// Devices attached to this node now.
    pub fn attached_devices(&self) -> usize {
        self.inner.router.attached_count()
    }

    pub fn config(&self) -> &RabbitConfig {
        &self.inner.config
    }

    async fn write(
        &self,
        build: impl FnOnce(record::Origin, i64) -> Record,
        index_wait: Option<Duration>,
    ) -> StoreResult<Outcome> {
        self.inner.publisher.write(build, index_wait).await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Index) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let index = self.inner.index.clone();
        tokio::task::spawn_blocking(move || f(&index))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    /// A resend this node already indexed, answered without the broker.
    async fn known_resend(&self, msg: &NewMessage) -> StoreResult<Option<Appended>> {
        if !self
            .inner
            .index
            .resend_candidate(&msg.sender, &msg.client_msg_id)
        {
            return Ok(None);
        }
        let (sender, cmid) = (msg.sender.clone(), msg.client_msg_id.clone());
        let now = now_ms();
        let original = self.read(move |i| i.dedupe(&sender, &cmid, now)).await?;
        Ok(original.map(|message| Appended {
            message,
            duplicate: true,
        }))
    }

    /// Queue the message's record (its place in the log is fixed when
    /// this returns); the inner future resolves with the append.
    async fn append_in_order(
        &self,
        msg: NewMessage,
    ) -> StoreResult<BoxFuture<'_, StoreResult<Appended>>> {
        if let Some(done) = self.known_resend(&msg).await? {
            return Ok(Box::pin(std::future::ready(Ok(done))));
        }
        let queued = self
            .inner
            .publisher
            .queue(
                move |origin, now| Record::Message {
                    origin,
                    message: Box::new(Message {
                        message_id: origin.token,
                        sender: msg.sender,
                        conversation: msg.conversation,
                        payload: msg.payload,
                        server_ts: now,
                        client_msg_id: msg.client_msg_id,
                        to_users: msg.to_users,
                    }),
                    recipients: msg.recipients,
                    sender_device: msg.sender_device,
                },
                None,
            )
            .await?;
        Ok(Box::pin(async move {
            match queued.done().await? {
                Outcome::Message { message, duplicate } => Ok(Appended { message, duplicate }),
                _ => Err(unexpected("append")),
            }
        }))
    }
}

fn position_last_final(p: &Mutex<IndexPosition>) -> u64 {
    match p.lock() {
        Ok(g) => g.last_final,
        Err(e) => e.into_inner().last_final,
    }
}

/// An id for this process's records (time and pid mixed): lets the
/// indexer tell this process's records from those of other processes,
/// even of an earlier run of the same node.
fn boot_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// The broker URI lapin connects to: the URL without the store's own
/// parameters, with our heartbeat unless the URL sets one.
fn broker_uri(config: &RabbitConfig) -> StoreResult<lapin::uri::AMQPUri> {
    let mut uri: lapin::uri::AMQPUri = config
        .broker_url()
        .parse()
        .map_err(|e| StoreError::Unavailable(format!("bad RabbitMQ URL: {e}")))?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(config.heartbeat_secs);
    }
    Ok(uri)
}

/// Delete a prefix's streams and exchange, and the `extra` queues given
/// (tests and decommissioning). Missing objects are fine.
pub async fn delete_topology(url: &str, prefix: &str, extra: &[String]) -> StoreResult<()> {
    let err = |e: lapin::Error| StoreError::Unavailable(e.to_string());
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(err)?;
    let names = Names::new(prefix);
    let queues = [
        names.log.clone(),
        names.state.clone(),
        names.control.clone(),
        names.mqtt_retained(),
    ];
    for q in queues.iter().chain(extra) {
        // A failed delete closes the channel: one channel per object.
        let ch = conn.create_channel().await.map_err(err)?;
        let _ = ch
            .queue_delete(
                topology::short(q).map_err(err)?,
                QueueDeleteOptions::default(),
            )
            .await;
    }
    let ch = conn.create_channel().await.map_err(err)?;
    let _ = ch
        .exchange_delete(
            topology::short(&names.inbox).map_err(err)?,
            ExchangeDeleteOptions::default(),
        )
        .await;
    let _ = conn.close(200, "cleanup done".into()).await;
    Ok(())
}

impl Store for RabbitStore {
    fn append(&self, msg: NewMessage) -> BoxFuture<'_, StoreResult<Appended>> {
        Box::pin(async move { self.append_in_order(msg).await?.await })
    }

    /// Resolves once the record is queued for the log: records leave in
    /// queue order, so a session's pipelined sends keep their order.
    fn append_queued(
        &self,
        msg: NewMessage,
    ) -> BoxFuture<'_, StoreResult<BoxFuture<'_, StoreResult<Appended>>>> {
        Box::pin(self.append_in_order(msg))
    }

    fn sync<'a>(
        &'a self,
        user: &'a str,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<SyncPage>> {
        let user = user.to_string();
        Box::pin(self.read(move |i| i.sync(&user, since, limit)))
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
        Box::pin(self.read(move |i| i.history(&user, &key, before, limit)))
    }

    fn get(&self, message_id: u64) -> BoxFuture<'_, StoreResult<Option<Arc<Message>>>> {
        Box::pin(self.read(move |i| Ok(i.get(message_id)?.map(|s| Arc::new(s.message)))))
    }

    fn get_for<'a>(
        &'a self,
        message_id: u64,
        user: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Arc<Message>>>> {
        let user = user.to_string();
        Box::pin(self.read(move |i| Ok(i.get_for(message_id, &user)?.map(|s| Arc::new(s.message)))))
    }

    fn recall(&self, message_id: u64) -> BoxFuture<'_, StoreResult<Recalled>> {
        Box::pin(async move {
            let outcome = self
                .write(|origin, _| Record::Recall { origin, message_id }, None)
                .await?;
            match outcome {
                Outcome::Recalled(r) => Ok(r),
                _ => Err(unexpected("recall")),
            }
        })
    }

    fn last_message_id<'a>(&'a self, user: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        let user = user.to_string();
        Box::pin(self.read(move |i| i.last_message_id(&user)))
    }

    fn attach_device<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
    ) -> BoxFuture<'a, StoreResult<DeviceFeed>> {
        Box::pin(self.inner.devices.attach(user, device))
    }

    fn ack<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        message_id: u64,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.devices.ack(user, device, message_id);
        Box::pin(std::future::ready(Ok(())))
    }

    fn subscribe_user(&self, user: &str) -> UserFeed {
        self.inner.router.subscribe_user(user)
    }

    fn group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, StoreResult<Option<Group>>> {
        let id = group_id.to_string();
        Box::pin(self.read(move |i| i.group(&id)))
    }

    fn scan_groups<'a>(
        &'a self,
        after: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<(Vec<Group>, bool)>> {
        let after = after.to_string();
        Box::pin(self.read(move |i| i.scan_groups(&after, limit)))
    }

    fn put_group(&self, group: Group) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let outcome = self
                .write(|origin, _| Record::PutGroup { origin, group }, None)
                .await?;
            match outcome {
                Outcome::GroupPut => Ok(()),
                _ => Err(unexpected("put_group")),
            }
        })
    }

    fn delete_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        let group_id = group_id.to_string();
        Box::pin(async move {
            let outcome = self
                .write(|origin, _| Record::DeleteGroup { origin, group_id }, None)
                .await?;
            match outcome {
                Outcome::GroupDeleted(existed) => Ok(existed),
                _ => Err(unexpected("delete_group")),
            }
        })
    }

    fn setting<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<String>>> {
        let key = key.to_string();
        Box::pin(self.read(move |i| i.setting(&key)))
    }

    fn put_setting(&self, key: String, value: String) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let outcome = self
                .write(|origin, _| Record::PutSetting { origin, key, value }, None)
                .await?;
            match outcome {
                Outcome::SettingPut(..) => Ok(()),
                _ => Err(unexpected("put_setting")),
            }
        })
    }

    fn watch_settings(
        &self,
    ) -> tokio::sync::broadcast::Receiver<imgate_core::store::SettingChange> {
        self.inner.router.settings.subscribe()
    }

    /// One record in the log: every node passes it on as it reads it
    /// (this one included, once its indexer got there).
    fn announce(&self, topic: String, payload: String) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let outcome = self
                .write(
                    |origin, at_ms| Record::Announce {
                        origin,
                        topic,
                        payload,
                        at_ms,
                    },
                    None,
                )
                .await?;
            match outcome {
                Outcome::Announced(..) => Ok(()),
                _ => Err(unexpected("announce")),
            }
        })
    }

    fn watch_announcements(&self) -> broadcast::Receiver<Arc<Announcement>> {
        self.inner.router.announcements.subscribe()
    }

    /// This node's acks as they come; the other nodes' from the control
    /// stream, batched (`cursor_flush`).
    fn watch_cursors(&self) -> broadcast::Receiver<Arc<CursorMoved>> {
        self.inner.router.cursors.subscribe()
    }

    /// One log record for the batch: every node's indexer places the
    /// messages identically; this node answers once it did.
    fn import(
        &self,
        batch: Vec<imgate_core::store::ImportMessage>,
    ) -> BoxFuture<'_, StoreResult<Vec<imgate_core::store::Imported>>> {
        Box::pin(async move {
            let outcome = self
                .write(
                    |origin, _| Record::Import {
                        origin,
                        items: batch,
                    },
                    None,
                )
                .await?;
            match outcome {
                Outcome::Imported(r) => Ok(r),
                _ => Err(unexpected("import")),
            }
        })
    }

    fn scan(&self, after: u64, limit: usize) -> BoxFuture<'_, StoreResult<SyncPage>> {
        Box::pin(self.read(move |i| i.scan(after, limit)))
    }

    fn sent_on_day<'a>(&'a self, user: &'a str, day: i64) -> BoxFuture<'a, StoreResult<u64>> {
        let user = user.to_string();
        Box::pin(self.read(move |i| i.sent_on_day(&user, day)))
    }

    fn conversations<'a>(
        &'a self,
        user: &'a str,
        before: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<ConversationPage>> {
        let user = user.to_string();
        Box::pin(self.read(move |i| i.conversations(&user, before, limit)))
    }

    /// Through the log: every node applies it in log order.
    fn mark_read<'a>(
        &'a self,
        user: &'a str,
        conversation: &'a Conversation,
        upto: u64,
    ) -> BoxFuture<'a, StoreResult<Option<ReadState>>> {
        let key = conversation.history_key(user);
        let user = user.to_string();
        Box::pin(async move {
            let outcome = self
                .write(
                    |origin, _| Record::MarkRead {
                        origin,
                        user,
                        key,
                        upto,
                    },
                    None,
                )
                .await?;
            match outcome {
                Outcome::MarkedRead(r) => Ok(r),
                _ => Err(unexpected("mark_read")),
            }
        })
    }

    /// This node's index only: each node prunes its own copy (the log's
    /// own retention is `log_max_age` / `log_max_bytes`).
    fn prune(&self, now: i64, retention_ms: Option<i64>) -> BoxFuture<'_, StoreResult<Pruned>> {
        let cutoff = retention_ms.map(|r| imgate_core::id::first_id_at(now.saturating_sub(r)));
        Box::pin(self.read(move |i| i.prune(now, cutoff)))
    }
}
