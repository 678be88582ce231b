//! The RabbitMQ store: several gateway nodes share one broker (a cluster
//! in production) and see the same messages, groups and deliveries.
//!
//! Layout (one concern per file):
//! - [`config`]: settings, read from the `amqp://` URL's query parameters.
//! - `topology`: names, the log stream, the inbox exchange, device queues.
//! - `broker`: a supervised connection that reconnects with backoff.
//! - `record`: the log records (every change is one).
//! - `publisher`: confirms, the bounded in-flight window, waiting for the
//!   local indexer.
//! - `log_consumer`: reads the stream from the node's offset into…
//! - `index`: the node-local redb index (sync, history, dedupe, groups,
//!   final ids) — a cache of the stream, rebuilt from it when deleted.
//! - `delivery`: per-device quorum queues consumed by the session's node.
//! - `live`: per-user live feeds and the indexer's progress signal.
//! - `mqtt_bus`: generic MQTT publishes and retained messages across
//!   nodes ([`RabbitStore::mqtt_bus`]).
//!
//! Data flow of an append: one publish to the inbox exchange with routing
//! key `log` and the recipients' keys in `CC` → the stream and every
//! registered device queue of every recipient get it → publisher confirm →
//! this node's indexer reads it back, assigns the final id (dedupe in log
//! order) → the sender gets its ack. Every other node indexes the same
//! record from the stream; the node holding a device's session delivers
//! that device's queued copy and acks it when the device acks.
//!
//! Guarantees (DESIGN §3) and their limits, stated plainly:
//! - An ack means the broker confirmed the publish (stream and device
//!   queues have it). A failed append (nack, timeout, lost connection) may
//!   still have been stored: the sender's resend with the same
//!   `client_msg_id` is answered with the original.
//! - Dedupe is exact across nodes within the window: duplicates are
//!   decided in log order by every indexer alike (see `index.rs`). There
//!   is no window of weakness for storage; the only cost is that a losing
//!   duplicate's copy reaches device queues and is skipped there.
//! - Sync and history are the same on every node once it has indexed the
//!   same prefix of the log; a node's own appends are visible to it when
//!   acked, other nodes' a few milliseconds later (the stream's delivery
//!   latency), never out of id order: final ids increase in log order.
//! - Device queues get a message in the order the broker enqueued it;
//!   copies from two nodes racing within milliseconds can arrive in
//!   either order (both carry their final id; clients order by id).
//! - A full device queue (`x-max-length`, `reject-publish`) nacks the
//!   publish: the writer then logs a `Withdraw` record, every indexer takes
//!   the message back (out of history, sync and dedupe; queued copies are
//!   skipped) and the append fails with code 4 "not stored". A live
//!   listener may have seen it in the milliseconds between the two
//!   records. If the withdraw cannot be written either (broker gone), the
//!   error says the message may still show, and a resend is answered as a
//!   duplicate.
//! - The log stream is kept whole (no retention): it is the history.
//!   Each node's index is a cache of it and can be deleted at any time.
//! - One channel per attached device, spread over `device_connections`
//!   connections (4 by default): about 2000 devices per connection (the
//!   broker's `channel_max`), so about 8000 per node by default.

pub mod config;

mod broker;
mod delivery;
mod index;
mod live;
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
    Appended, BoxFuture, DeviceFeed, Group, NewMessage, Recalled, StoreResult, SyncPage, UserFeed,
};
use imgate_core::{now_ms, Store, StoreError};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use tokio::sync::watch;

pub use config::{Overflow, RabbitConfig};
pub use mqtt_bus::{BusEvent, BusSink, MqttBus};

use broker::Broker;
use delivery::Devices;
use index::{Index, IndexPosition, Outcome};
use live::LiveFeeds;
use log_consumer::LogConsumer;
use publisher::{Outgoing, Publisher, PublisherParts, Waiters};
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
    publisher: Publisher,
    devices: Arc<Devices>,
    feeds: Arc<LiveFeeds>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
        let mut uri: lapin::uri::AMQPUri = config
            .url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("bad RabbitMQ URL: {e}")))?;
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(config.heartbeat_secs);
        }
        let names = Names::new(&config.prefix);
        let boot = boot_id();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let conn_name =
            |role: &str| format!("imgate {} node {} {role}", config.prefix, config.node_id);
        let (pub_broker, pub_task) = Broker::start(
            uri.clone(),
            conn_name("publish"),
            names.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        let (sub_broker, sub_task) = Broker::start(
            uri.clone(),
            conn_name("consume"),
            names.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        let mut device_brokers = Vec::new();
        let mut tasks = vec![pub_task, sub_task];
        for i in 0..config.device_connections {
            let (b, t) = Broker::start(
                uri.clone(),
                conn_name(&format!("devices {i}")),
                names.clone(),
                shutdown_rx.clone(),
            )
            .await?;
            device_brokers.push(b);
            tasks.push(t);
        }
        let config = Arc::new(config);
        let index = Arc::new(index);
        let position = Arc::new(Mutex::new(position));
        let last_final = Arc::new(AtomicU64::new(position_last_final(&position)));
        let waiters = Arc::new(Waiters::default());
        let feeds = Arc::new(LiveFeeds::default());
        let consumer = LogConsumer {
            broker: sub_broker.clone(),
            names: names.clone(),
            index: index.clone(),
            position: position.clone(),
            last_final: last_final.clone(),
            waiters: waiters.clone(),
            feeds: feeds.clone(),
            boot,
            node_id: config.node_id,
            prefetch: config.log_prefetch,
        };
        tasks.push(tokio::spawn(consumer.run(shutdown_rx)));
        let publisher = Publisher::new(PublisherParts {
            broker: pub_broker,
            names: names.clone(),
            boot,
            node_id: config.node_id,
            max_in_flight: config.max_in_flight,
            last_final,
            waiters,
            send_timeout: config.send_timeout,
            reconnect_wait: config.reconnect_wait,
        });
        let devices = Arc::new(Devices::new(
            device_brokers,
            names.clone(),
            config.clone(),
            index.clone(),
            feeds.clone(),
        ));
        let store = RabbitStore {
            inner: Arc::new(Inner {
                config: config.clone(),
                names,
                index,
                position,
                publisher,
                devices,
                feeds,
                shutdown,
                tasks: Mutex::new(tasks),
            }),
        };
        // Catch up: once our own marker comes back through the stream, the
        // index holds everything written before it.
        let started = std::time::Instant::now();
        store
            .write(
                |origin, _| Outgoing {
                    record: Record::Marker { origin },
                    recipients: Vec::new(),
                },
                Some(config.catch_up_timeout),
            )
            .await?;
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
        self.inner.devices.stop_all();
        let _ = self.inner.shutdown.send(true);
        let tasks: Vec<_> = match self.inner.tasks.lock() {
            Ok(mut g) => g.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        // Aborted device tasks and in-flight reads may still hold the
        // index: close it explicitly so the file is free when we return.
        let index = self.inner.index.clone();
        let _ = tokio::task::spawn_blocking(move || index.close()).await;
    }

    /// Start the cluster bus of the generic MQTT broker (see `mqtt_bus`):
    /// `sink` gets the other nodes' publishes and every retained update.
    /// Returns once the retained updates published before this call were
    /// handed to `sink`. Stops with the store.
    pub async fn mqtt_bus(&self, sink: BusSink) -> StoreResult<MqttBus> {
        let config = &self.inner.config;
        let mut uri: lapin::uri::AMQPUri = config
            .url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("bad RabbitMQ URL: {e}")))?;
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(config.heartbeat_secs);
        }
        let (bus, tasks) = MqttBus::start(
            uri,
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

    /// The queue name of a device (for operators and test cleanup).
    pub fn device_queue_name(&self, user: &str, device: &str) -> String {
        self.inner.names.device_queue(user, device)
    }

    pub fn config(&self) -> &RabbitConfig {
        &self.inner.config
    }

    async fn write(
        &self,
        build: impl FnOnce(record::Origin, i64) -> Outgoing,
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

    async fn append_new(&self, msg: NewMessage) -> StoreResult<Appended> {
        if !msg.client_msg_id.is_empty() {
            // Fast path: a resend this node already indexed.
            let (sender, cmid) = (msg.sender.clone(), msg.client_msg_id.clone());
            let now = now_ms();
            if let Some(original) = self.read(move |i| i.dedupe(&sender, &cmid, now)).await? {
                return Ok(Appended {
                    message: original,
                    duplicate: true,
                });
            }
        }
        let recipients = msg.recipients.clone();
        let outcome = self
            .write(
                move |origin, now| Outgoing {
                    record: Record::Message {
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
                    recipients,
                },
                None,
            )
            .await?;
        match outcome {
            Outcome::Message { message, duplicate } => Ok(Appended { message, duplicate }),
            _ => Err(unexpected("append")),
        }
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

/// Delete a prefix's log stream and exchange and the given device queues
/// (tests and decommissioning). Missing objects are fine.
pub async fn delete_topology(url: &str, prefix: &str, queues: &[String]) -> StoreResult<()> {
    let err = |e: lapin::Error| StoreError::Unavailable(e.to_string());
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(err)?;
    let names = Names::new(prefix);
    let retained = names.mqtt_retained();
    for q in queues
        .iter()
        .chain(std::iter::once(&names.log))
        .chain(std::iter::once(&retained))
    {
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
        Box::pin(self.append_new(msg))
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

    fn recall(&self, message_id: u64) -> BoxFuture<'_, StoreResult<Recalled>> {
        Box::pin(async move {
            let outcome = self
                .write(
                    |origin, _| Outgoing {
                        record: Record::Recall { origin, message_id },
                        recipients: Vec::new(),
                    },
                    None,
                )
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
        Box::pin(self.inner.devices.ack(user, device, message_id))
    }

    fn subscribe_user(&self, user: &str) -> UserFeed {
        self.inner.feeds.subscribe_user(user)
    }

    fn group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, StoreResult<Option<Group>>> {
        let id = group_id.to_string();
        Box::pin(self.read(move |i| i.group(&id)))
    }

    fn put_group(&self, group: Group) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let outcome = self
                .write(
                    |origin, _| Outgoing {
                        record: Record::PutGroup { origin, group },
                        recipients: Vec::new(),
                    },
                    None,
                )
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
                .write(
                    |origin, _| Outgoing {
                        record: Record::DeleteGroup { origin, group_id },
                        recipients: Vec::new(),
                    },
                    None,
                )
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
                .write(
                    |origin, _| Outgoing {
                        record: Record::PutSetting { origin, key, value },
                        recipients: Vec::new(),
                    },
                    None,
                )
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
        self.inner.feeds.settings.subscribe()
    }

    /// One record in the log: every node passes it on as it reads it
    /// (this one included, once its indexer got there).
    fn announce(&self, topic: String, payload: String) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let outcome = self
                .write(
                    |origin, at_ms| Outgoing {
                        record: Record::Announce {
                            origin,
                            topic,
                            payload,
                            at_ms,
                        },
                        recipients: Vec::new(),
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

    fn watch_announcements(
        &self,
    ) -> tokio::sync::broadcast::Receiver<Arc<imgate_core::store::Announcement>> {
        self.inner.feeds.announcements.subscribe()
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
                    |origin, _| Outgoing {
                        record: Record::Import {
                            origin,
                            items: batch,
                        },
                        recipients: Vec::new(),
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
}
