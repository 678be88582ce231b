//! Device deliveries: the node holding a device's session consumes that
//! device's quorum queue and acks a delivery when the device acks it.
//!
//! Attaching declares the queue (idempotent; bound to the inbox with the
//! user's key, so from then on every message to the user lands in it, also
//! while the device is offline) and consumes it on a channel of its own
//! with a bounded prefetch, so the broker never sends more than the feed
//! can hold. Pending (unacked) messages come first simply because they are
//! first in the queue. Detaching closes the channel, and the broker
//! requeues whatever the device did not ack.
//!
//! One task owns each device's channel and does everything on it in
//! order: consume, ack (the session's acks reach it through a queue),
//! close. Nothing else touches the channel. A frame sent on a channel
//! after its close (an ack, or the cancel lapin sends when a consumer is
//! dropped) makes RabbitMQ close the whole connection with
//! `CHANNEL_ERROR - expected 'channel.open'`, taking every other device
//! on that connection with it; sequencing rules that out.
//!
//! A queued copy carries the writer's provisional id; it is translated to
//! the final id through this node's index before it is handed to the
//! session, and copies that must not be shown are acked and skipped:
//! duplicates of an earlier message (dedupe lost in log order), recalled
//! messages, the sending device's own message, and keys that collided.
//!
//! When the connection drops, the feed stays open: the consumer is set up
//! again on the next connection and the broker redelivers every unacked
//! message (same ids; at-least-once, clients display each id once).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use imgate_core::model::Message;
use imgate_core::store::DeviceFeed;
use imgate_core::StoreError;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::sync::{mpsc, watch};

use super::broker::Broker;
use super::config::RabbitConfig;
use super::index::Index;
use super::live::LiveFeeds;
use super::record::Record;
use super::topology::{self, close_consuming, short, user_key, Names};

/// How long a queued copy may wait for its log record to be indexed here
/// before it is dropped as an orphan (a publish the broker nacked: the
/// writer failed the append, so the message was never acked).
const ORPHAN_WAIT: Duration = Duration::from_secs(60);
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Device acks waiting for the device's task. When it is this far behind
/// (blocked on the index), further acks are dropped: those messages are
/// redelivered on the next attach and acked again (at-least-once).
const ACK_QUEUE: usize = 1024;

/// One attached device, as seen from outside its task.
struct Attached {
    generation: u64,
    acks: mpsc::Sender<u64>,
    stop: watch::Sender<bool>,
}

impl Attached {
    fn stop(&self) {
        self.stop.send_replace(true);
    }
}

pub struct Devices {
    /// The device-consuming connections (see `RabbitConfig::device_connections`).
    brokers: Vec<Broker>,
    pub names: Names,
    pub config: Arc<RabbitConfig>,
    pub index: Arc<Index>,
    pub feeds: Arc<LiveFeeds>,
    attached: Mutex<HashMap<(String, String), Arc<Attached>>>,
    generation: AtomicU64,
}

/// Why a device task left its consume loop.
enum Halt {
    /// Detached, replaced, or the session dropped the feed.
    Stopped,
    /// The channel or consumer failed; consume again when possible.
    Lost(String),
}

/// What a device task works with on one channel.
struct Pump<'a> {
    ch: &'a Channel,
    tx: &'a mpsc::Sender<Arc<Message>>,
    acks: &'a mut mpsc::Receiver<u64>,
    stop: &'a mut watch::Receiver<bool>,
    /// final message id → delivery tags on `ch` not acked yet.
    tags: HashMap<u64, Vec<u64>>,
}

impl Pump<'_> {
    /// Wait for `work` while serving the device's acks; stops early when
    /// the device is detached. Acks come first: an ack the session sent
    /// before it detached is always sent to the broker before the close.
    async fn serving<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Halt> {
        tokio::pin!(work);
        loop {
            let acked = tokio::select! {
                biased;
                id = self.acks.recv() => id,
                out = &mut work => return Ok(out),
                _ = self.stop.wait_for(|s| *s) => None,
                _ = self.tx.closed() => None,
            };
            match acked {
                Some(id) => self.ack(id).await?,
                None => {
                    while let Ok(id) = self.acks.try_recv() {
                        self.ack(id).await?;
                    }
                    return Err(Halt::Stopped);
                }
            }
        }
    }

    async fn ack(&mut self, message_id: u64) -> Result<(), Halt> {
        let Some(tags) = self.tags.get_mut(&message_id) else {
            return Ok(());
        };
        let tag = tags.pop();
        if tags.is_empty() {
            self.tags.remove(&message_id);
        }
        match tag {
            Some(tag) => self.ack_tag(tag).await,
            None => Ok(()),
        }
    }

    async fn ack_tag(&self, tag: u64) -> Result<(), Halt> {
        self.ch
            .basic_ack(tag, BasicAckOptions::default())
            .await
            .map_err(|e| Halt::Lost(e.to_string()))
    }
}

/// A device task's own state.
struct Task {
    key: (String, String),
    queue: String,
    /// The generation of the connection the current channel is on.
    generation: u64,
    tx: mpsc::Sender<Arc<Message>>,
    acks: mpsc::Receiver<u64>,
    stop: watch::Receiver<bool>,
}

impl Devices {
    /// `brokers` must not be empty.
    pub fn new(
        brokers: Vec<Broker>,
        names: Names,
        config: Arc<RabbitConfig>,
        index: Arc<Index>,
        feeds: Arc<LiveFeeds>,
    ) -> Self {
        Devices {
            brokers,
            names,
            config,
            index,
            feeds,
            attached: Mutex::default(),
            generation: AtomicU64::new(1),
        }
    }

    /// The connection a device's consumer lives on: a hash of the device,
    /// so channels spread evenly and a device keeps its connection.
    fn broker_for(&self, user: &str, device: &str) -> &Broker {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (user, device).hash(&mut h);
        let i = (h.finish() % self.brokers.len() as u64) as usize;
        &self.brokers[i]
    }

    fn map(&self) -> MutexGuard<'_, HashMap<(String, String), Arc<Attached>>> {
        match self.attached.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub async fn attach(
        self: &Arc<Self>,
        user: &str,
        device: &str,
    ) -> Result<DeviceFeed, StoreError> {
        let live = self
            .broker_for(user, device)
            .live(self.config.reconnect_wait)
            .await?;
        let queue = self.names.device_queue(user, device);
        let (ch, consumer) = self
            .open(&live.conn, &queue, user)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot consume {queue}: {e}")))?;
        let (tx, rx) = mpsc::channel(usize::from(self.config.device_prefetch) + 1);
        let (ack_tx, ack_rx) = mpsc::channel(ACK_QUEUE);
        let (stop_tx, stop_rx) = watch::channel(false);
        let attached = Arc::new(Attached {
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
            acks: ack_tx,
            stop: stop_tx,
        });
        let key = (user.to_string(), device.to_string());
        if let Some(old) = self.map().insert(key.clone(), attached.clone()) {
            old.stop();
        }
        tokio::spawn(self.clone().run(
            Task {
                key: key.clone(),
                queue,
                generation: live.generation,
                tx,
                acks: ack_rx,
                stop: stop_rx,
            },
            ch,
            consumer,
        ));
        let devices = self.clone();
        let detach = Box::new(move || {
            let mut map = devices.map();
            if map
                .get(&key)
                .is_some_and(|a| a.generation == attached.generation)
            {
                map.remove(&key);
            }
            drop(map);
            attached.stop();
        });
        Ok(DeviceFeed::new(Vec::new(), rx, Some(detach)))
    }

    /// The device acked `message_id`: its task acks the delivery to the
    /// broker. An ack for a delivery this node no longer holds
    /// (reconnected, other node) is a no-op: the message is redelivered
    /// and acked again.
    pub async fn ack(&self, user: &str, device: &str, message_id: u64) -> Result<(), StoreError> {
        let attached = self
            .map()
            .get(&(user.to_string(), device.to_string()))
            .cloned();
        if let Some(a) = attached {
            if a.acks.try_send(message_id).is_err() {
                tracing::debug!(%user, %device, message_id, "device task busy; the ack is dropped and the message redelivered later");
            }
        }
        Ok(())
    }

    /// Stop every device consumer (store shutdown).
    pub fn stop_all(&self) {
        let all: Vec<Arc<Attached>> = self.map().drain().map(|(_, a)| a).collect();
        for a in all {
            a.stop();
        }
    }

    async fn open(
        &self,
        conn: &Connection,
        queue: &str,
        user: &str,
    ) -> Result<(Channel, Consumer), lapin::Error> {
        let mut ch = conn.create_channel().await?;
        if let Err(e) = topology::declare_device(&ch, &self.names, &self.config, queue, user).await
        {
            if !is_precondition_failed(&e) {
                return Err(e);
            }
            // The queue exists with other arguments (settings changed
            // since it was made): use it as it is rather than lock the
            // device out; it takes the new settings once it expires.
            tracing::warn!(%queue, error = %e, "device queue exists with other arguments; using it as is");
            ch = conn.create_channel().await?;
            ch.queue_declare(
                short(queue)?,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
            ch.queue_bind(
                short(queue)?,
                short(&self.names.inbox)?,
                short(&user_key(user))?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        ch.basic_qos(self.config.device_prefetch, BasicQosOptions::default())
            .await?;
        let consumer = ch
            .basic_consume(
                short(queue)?,
                short("")?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((ch, consumer))
    }

    /// The device's task: pump deliveries until it is detached; after a
    /// lost channel or connection, consume again when possible.
    async fn run(self: Arc<Self>, mut task: Task, mut ch: Channel, mut consumer: Consumer) {
        loop {
            let halt = self.pump(&mut task, &ch, &mut consumer).await;
            close_consuming(&ch, consumer, "device detached").await;
            match halt {
                Halt::Stopped => return,
                Halt::Lost(e) => {
                    tracing::info!(user = %task.key.0, device = %task.key.1, error = %e, "device consumer lost; re-establishing");
                }
            }
            match self.reopen(&mut task).await {
                Some((c, k)) => {
                    ch = c;
                    consumer = k;
                }
                None => return,
            }
        }
    }

    /// Consume the device queue again as soon as a connection allows;
    /// `None` when the device is detached meanwhile or the store closes.
    async fn reopen(&self, task: &mut Task) -> Option<(Channel, Consumer)> {
        loop {
            let broker = self.broker_for(&task.key.0, &task.key.1);
            // Same connection still up (only the channel failed): retry on
            // it; otherwise wait for the next connection.
            let after = match broker.live(Duration::ZERO).await {
                Ok(l) if l.generation == task.generation => task.generation - 1,
                _ => task.generation,
            };
            let live = tokio::select! {
                l = broker.next_after(after) => l?,
                _ = task.stop.wait_for(|s| *s) => return None,
                _ = task.tx.closed() => return None,
            };
            task.generation = live.generation;
            match self.open(&live.conn, &task.queue, &task.key.0).await {
                Ok(pair) => return Some(pair),
                Err(e) => {
                    tracing::warn!(queue = %task.queue, error = %e, "cannot re-consume device queue");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                        _ = task.stop.wait_for(|s| *s) => return None,
                        _ = task.tx.closed() => return None,
                    }
                }
            }
        }
    }

    /// Hand the channel's deliveries to the feed and ack what the device
    /// acks, until the device is detached or the channel fails.
    async fn pump(&self, task: &mut Task, ch: &Channel, consumer: &mut Consumer) -> Halt {
        let (user, device) = (&task.key.0, &task.key.1);
        let tx = &task.tx;
        let mut p = Pump {
            ch,
            tx,
            acks: &mut task.acks,
            stop: &mut task.stop,
            tags: HashMap::new(),
        };
        loop {
            let delivery = match p.serving(consumer.next()).await {
                Ok(Some(Ok(d))) => d,
                Ok(Some(Err(e))) => return Halt::Lost(e.to_string()),
                Ok(None) => return Halt::Lost("consumer cancelled".into()),
                Err(halt) => return halt,
            };
            let tag = delivery.delivery_tag;
            let shown = match copy_to_show(&delivery.data, user, device) {
                Some(prov) => match p.serving(self.resolve(prov)).await {
                    Ok(Ok(m)) => m,
                    Ok(Err(e)) => return Halt::Lost(e.to_string()),
                    Err(halt) => return halt,
                },
                None => None,
            };
            let Some(message) = shown else {
                if let Err(halt) = p.ack_tag(tag).await {
                    return halt;
                }
                continue;
            };
            p.tags.entry(message.message_id).or_default().push(tag);
            match p.serving(tx.send(message)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Halt::Stopped,
                Err(halt) => return halt,
            }
        }
    }

    /// The message to show for a queued copy with provisional id `prov`:
    /// waits (bounded) until this node indexed it; None if it must not be
    /// shown.
    async fn resolve(&self, prov: u64) -> Result<Option<Arc<Message>>, StoreError> {
        let mut progress = self.feeds.progress();
        let deadline = tokio::time::Instant::now() + ORPHAN_WAIT;
        loop {
            progress.borrow_and_update();
            let index = self.index.clone();
            let found = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
                match index.provisional(prov)? {
                    Some((id, false)) => Ok(Some(index.get(id)?.map(|s| Arc::new(s.message)))),
                    Some((_, true)) => Ok(Some(None)),
                    None => Ok(None),
                }
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("index read failed: {e}")))??;
            if let Some(shown) = found {
                return Ok(shown);
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(StoreError::Unavailable("store closed".into())),
                Err(_) => {
                    tracing::warn!(prov, "queued copy never appeared in the log; dropped");
                    return Ok(None);
                }
            }
        }
    }
}

/// The provisional id of a queued copy the device should see, or `None`
/// for copies to ack and skip (the sender's own device, a collided key,
/// another kind of record, an undecodable one).
fn copy_to_show(data: &[u8], user: &str, device: &str) -> Option<u64> {
    match Record::decode(data) {
        Ok(Record::Message {
            message,
            recipients,
            sender_device,
            ..
        }) => {
            let own_copy = message.sender == user && sender_device.as_deref() == Some(device);
            let for_user = recipients.iter().any(|r| r == user);
            (!own_copy && for_user).then_some(message.message_id)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(%user, %device, error = %e, "skipping an undecodable delivery");
            None
        }
    }
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(err)
        if matches!(err.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}
