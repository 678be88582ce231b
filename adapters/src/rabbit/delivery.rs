//! Device deliveries: the node holding a device's session consumes that
//! device's quorum queue and acks a delivery when the device acks it.
//!
//! Attaching declares the queue (idempotent; bound to the inbox with the
//! user's key, so from then on every message to the user lands in it, also
//! while the device is offline) and consumes it on a channel of its own
//! with a bounded prefetch, so the broker never sends more than the feed
//! can hold. Pending (unacked) messages come first simply because they are
//! first in the queue. Dropping the feed closes the channel, and the broker
//! requeues whatever the device did not ack.
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
use tokio::sync::mpsc;

use super::broker::Broker;
use super::config::RabbitConfig;
use super::index::Index;
use super::live::LiveFeeds;
use super::record::Record;
use super::topology::{self, short, user_key, Names};

/// How long a queued copy may wait for its log record to be indexed here
/// before it is dropped as an orphan (a publish the broker nacked: the
/// writer failed the append, so the message was never acked).
const ORPHAN_WAIT: Duration = Duration::from_secs(60);
const RETRY_PAUSE: Duration = Duration::from_millis(500);

struct AckState {
    channel: Option<Channel>,
    /// final message id → delivery tags on `channel` not acked yet.
    tags: HashMap<u64, Vec<u64>>,
}

struct Attached {
    generation: u64,
    state: Mutex<AckState>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Attached {
    fn state(&self) -> MutexGuard<'_, AckState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn stop(&self, rt: &tokio::runtime::Handle) {
        let task = match self.task.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(t) = task {
            t.abort();
        }
        let ch = self.state().channel.take();
        if let Some(ch) = ch {
            rt.spawn(async move {
                let _ = ch.close(200, "device detached".into()).await;
            });
        }
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

enum Pumped {
    FeedClosed,
    ConsumerLost(String),
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
        let attached = Arc::new(Attached {
            generation: self.generation.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(AckState {
                channel: Some(ch),
                tags: HashMap::new(),
            }),
            task: Mutex::new(None),
        });
        let rt = tokio::runtime::Handle::current();
        let key = (user.to_string(), device.to_string());
        if let Some(old) = self.map().insert(key.clone(), attached.clone()) {
            old.stop(&rt);
        }
        let task = tokio::spawn(self.clone().run(
            attached.clone(),
            key.clone(),
            queue,
            consumer,
            live.generation,
            tx,
        ));
        match attached.task.lock() {
            Ok(mut g) => *g = Some(task.abort_handle()),
            Err(p) => *p.into_inner() = Some(task.abort_handle()),
        }
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
            attached.stop(&rt);
        });
        Ok(DeviceFeed::new(Vec::new(), rx, Some(detach)))
    }

    /// The device acked `message_id`: ack its delivery to the broker. An
    /// ack for a delivery this node no longer holds (reconnected, other
    /// node) is a no-op: the message is redelivered and acked again.
    pub async fn ack(&self, user: &str, device: &str, message_id: u64) -> Result<(), StoreError> {
        let Some(attached) = self
            .map()
            .get(&(user.to_string(), device.to_string()))
            .cloned()
        else {
            return Ok(());
        };
        let (ch, tag) = {
            let mut st = attached.state();
            let Some(tags) = st.tags.get_mut(&message_id) else {
                return Ok(());
            };
            let tag = tags.pop();
            if tags.is_empty() {
                st.tags.remove(&message_id);
            }
            match (st.channel.clone(), tag) {
                (Some(ch), Some(tag)) => (ch, tag),
                _ => return Ok(()),
            }
        };
        if let Err(e) = ch.basic_ack(tag, BasicAckOptions::default()).await {
            tracing::debug!(%user, %device, error = %e, "delivery ack lost; it will be redelivered");
        }
        Ok(())
    }

    /// Stop every device consumer (store shutdown).
    pub fn stop_all(&self) {
        let rt = tokio::runtime::Handle::current();
        let all: Vec<Arc<Attached>> = self.map().drain().map(|(_, a)| a).collect();
        for a in all {
            a.stop(&rt);
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

    async fn run(
        self: Arc<Self>,
        attached: Arc<Attached>,
        key: (String, String),
        queue: String,
        mut consumer: Consumer,
        mut generation: u64,
        tx: mpsc::Sender<Arc<Message>>,
    ) {
        loop {
            let ch = attached.state().channel.clone();
            let Some(ch) = ch else { return };
            match self.pump(&attached, &key, &ch, &mut consumer, &tx).await {
                Pumped::FeedClosed => return,
                Pumped::ConsumerLost(e) => {
                    tracing::info!(user = %key.0, device = %key.1, error = %e, "device consumer lost; re-establishing");
                    // If only the consumer failed, give its unacked
                    // deliveries back before consuming again.
                    let _ = ch.close(200, "device consumer restarting".into()).await;
                }
            }
            {
                let mut st = attached.state();
                st.channel = None;
                st.tags.clear();
            }
            // Set the consumer up again as soon as a connection allows.
            loop {
                if tx.is_closed() {
                    return;
                }
                let broker = self.broker_for(&key.0, &key.1);
                let after = match broker.live(Duration::ZERO).await {
                    Ok(l) if l.generation == generation => generation - 1,
                    _ => generation,
                };
                let Some(live) = broker.next_after(after).await else {
                    return;
                };
                generation = live.generation;
                match self.open(&live.conn, &queue, &key.0).await {
                    Ok((ch, c)) => {
                        attached.state().channel = Some(ch);
                        consumer = c;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%queue, error = %e, "cannot re-consume device queue");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        }
    }

    async fn pump(
        &self,
        attached: &Attached,
        (user, device): &(String, String),
        ch: &Channel,
        consumer: &mut Consumer,
        tx: &mpsc::Sender<Arc<Message>>,
    ) -> Pumped {
        loop {
            let next = tokio::select! {
                d = consumer.next() => d,
                _ = tx.closed() => return Pumped::FeedClosed,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Pumped::ConsumerLost(e.to_string()),
                None => return Pumped::ConsumerLost("consumer cancelled".into()),
            };
            let tag = delivery.delivery_tag;
            let shown = match Record::decode(&delivery.data) {
                Ok(Record::Message {
                    message,
                    recipients,
                    sender_device,
                    ..
                }) => {
                    let own_copy = message.sender == *user
                        && sender_device.as_deref() == Some(device.as_str());
                    if own_copy || !recipients.iter().any(|r| r == user) {
                        None
                    } else {
                        match self.resolve(message.message_id).await {
                            Ok(m) => m,
                            Err(e) => return Pumped::ConsumerLost(e.to_string()),
                        }
                    }
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(%user, %device, error = %e, "skipping an undecodable delivery");
                    None
                }
            };
            let Some(message) = shown else {
                if let Err(e) = ch.basic_ack(tag, BasicAckOptions::default()).await {
                    return Pumped::ConsumerLost(e.to_string());
                }
                continue;
            };
            attached
                .state()
                .tags
                .entry(message.message_id)
                .or_default()
                .push(tag);
            if tx.send(message).await.is_err() {
                return Pumped::FeedClosed;
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

fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(err)
        if matches!(err.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}
