//! The cluster bus of the generic MQTT broker (topics outside `im/`): a
//! publish on one node reaches subscribers on every node, and every node's
//! retained messages converge, when the store is RabbitMQ.
//!
//! Topology (on the store's inbox exchange, next to the streams' keys, so
//! no other exchange is needed):
//! - key [`LIVE_KEY`]: one exclusive, auto-delete queue per running node
//!   (`<prefix>.mqtt.node.<node>.<boot>`) is bound with it. Every generic
//!   publish goes there, each node matches it against its own
//!   subscription trie. The publishing process skips its own copies (an
//!   origin header with its boot id), so nothing loops.
//! - key [`RETAINED_KEY`]: the durable stream `<prefix>.mqtt-retained`
//!   receives every retained update (set or clear) in the same publish
//!   (`CC` header): one publish, one confirm. Each node reads that stream
//!   from the beginning when it starts and applies the updates in stream
//!   order, so every node's retained table converges to the same last
//!   value per topic, also a node started after the publish. The start
//!   waits until a marker of its own came back through the stream (the
//!   table holds everything retained before it).
//!
//! The bus knows nothing about MQTT: the gateway hands it opaque bodies
//! and gets them back as [`BusEvent`]s.
//!
//! Limits, stated plainly: the retained stream keeps every retained update
//! (no compaction; a start replays them all); a node that loses its
//! broker connection gets a new live queue when it reconnects, and live
//! messages published while it was disconnected do not reach its
//! subscribers (retained updates do: the stream is resumed from its
//! offset).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use imgate_core::StoreError;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::{mpsc, oneshot, watch};

use super::broker::Broker;
use super::topology::{close_consuming, short, Names};

/// Routing key of every generic MQTT publish (the nodes' live queues).
pub const LIVE_KEY: &str = "mqtt";
/// Routing key of retained updates and markers (the retained stream).
pub const RETAINED_KEY: &str = "mqtt-retained";

const ORIGIN_HEADER: &str = "imgate-origin";
const KIND_HEADER: &str = "imgate-kind";
const KIND_MESSAGE: &str = "message";
const KIND_MARKER: &str = "marker";
const PERSISTENT: u8 = 2;
/// Publishes queued for the bus's publisher task; more are refused.
const QUEUE: usize = 8192;
const PREFETCH: u16 = 1000;
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What a node receives from the others.
#[derive(Debug, Clone)]
pub enum BusEvent {
    /// A generic publish made on another node: deliver it to local
    /// subscribers (do not touch the retained table).
    Message(Vec<u8>),
    /// A retained update, in stream order, from any node including this
    /// one: apply it to the retained table (do not deliver it).
    Retained(Vec<u8>),
}

/// Receives bus events, called from the bus's consumer tasks.
pub type BusSink = Arc<dyn Fn(BusEvent) + Send + Sync>;

struct Request {
    body: Vec<u8>,
    retained: bool,
    marker: bool,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// A handle on the bus. Dropping every clone does not stop it; the store's
/// shutdown does.
#[derive(Clone)]
pub struct MqttBus {
    requests: mpsc::Sender<Request>,
}

struct Parts {
    broker: Broker,
    names: Names,
    boot: u64,
    node_id: u16,
    sink: BusSink,
    reconnect_wait: Duration,
}

impl Names {
    /// The retained stream of the MQTT bus.
    pub fn mqtt_retained(&self) -> String {
        format!("{}.mqtt-retained", self.prefix)
    }

    fn mqtt_node_queue(&self, node_id: u16, boot: u64) -> String {
        format!("{}.mqtt.node.{node_id}.{boot:x}", self.prefix)
    }
}

impl MqttBus {
    /// Start the bus on its own connection and wait until this node's
    /// retained updates have caught up with the stream.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start(
        uri: lapin::uri::AMQPUri,
        config: Arc<super::RabbitConfig>,
        names: Names,
        node_id: u16,
        reconnect_wait: Duration,
        catch_up: Duration,
        sink: BusSink,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(MqttBus, Vec<tokio::task::JoinHandle<()>>), StoreError> {
        let name = format!("imgate {} node {node_id} mqtt", names.prefix);
        let (broker, broker_task) =
            Broker::start(uri, name, names.clone(), config, shutdown.clone()).await?;
        let boot = super::boot_id();
        let parts = Arc::new(Parts {
            broker,
            names,
            boot,
            node_id,
            sink,
            reconnect_wait,
        });
        // The live queue first: everything published from now on reaches
        // this node.
        let (live_ready_tx, live_ready) = oneshot::channel();
        let live_task = tokio::spawn(live_loop(parts.clone(), shutdown.clone(), live_ready_tx));
        tokio::time::timeout(catch_up, live_ready)
            .await
            .map_err(|_| StoreError::Unavailable("MQTT bus: live queue not ready in time".into()))?
            .map_err(|_| StoreError::Unavailable("MQTT bus stopped".into()))?;
        // Then the retained stream, declared and bound before our marker is
        // published (or the marker would be routed nowhere).
        let (marker_tx, marker_rx) = oneshot::channel();
        let (stream_ready_tx, stream_ready) = oneshot::channel();
        let retained_task = tokio::spawn(retained_loop(
            parts.clone(),
            shutdown.clone(),
            stream_ready_tx,
            marker_tx,
        ));
        tokio::time::timeout(catch_up, stream_ready)
            .await
            .map_err(|_| {
                StoreError::Unavailable("MQTT bus: retained stream not ready in time".into())
            })?
            .map_err(|_| StoreError::Unavailable("MQTT bus stopped".into()))?;
        let (requests, rx) = mpsc::channel(QUEUE);
        let publish_task = tokio::spawn(publish_loop(parts.clone(), rx, shutdown));
        let bus = MqttBus { requests };
        let tasks = vec![broker_task, live_task, retained_task, publish_task];
        let caught_up = async {
            bus.send(Vec::new(), false, true)
                .await
                .map_err(|_| StoreError::Unavailable("MQTT bus stopped".into()))??;
            marker_rx
                .await
                .map_err(|_| StoreError::Unavailable("MQTT bus stopped".into()))
        };
        match tokio::time::timeout(catch_up, caught_up).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "MQTT bus: retained messages did not catch up in time".into(),
                ))
            }
        }
        tracing::info!(
            node = node_id,
            "mqtt bus ready (retained messages caught up)"
        );
        Ok((bus, tasks))
    }

    fn send(
        &self,
        body: Vec<u8>,
        retained: bool,
        marker: bool,
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        let (done, rx) = oneshot::channel();
        let req = Request {
            body,
            retained,
            marker,
            done,
        };
        if let Err(e) = self.requests.try_send(req) {
            let (req, why) = match e {
                mpsc::error::TrySendError::Full(r) => (r, "MQTT bus: too many publishes queued"),
                mpsc::error::TrySendError::Closed(r) => (r, "MQTT bus stopped"),
            };
            let _ = req.done.send(Err(StoreError::Unavailable(why.into())));
        }
        rx
    }

    /// Send a generic publish to the other nodes (and, with `retained`,
    /// to every node's retained table). Queued in call order; the receiver
    /// resolves when the broker confirmed it (or it failed). Never blocks.
    pub fn publish(
        &self,
        body: Vec<u8>,
        retained: bool,
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        self.send(body, retained, false)
    }
}

fn origin_of(d: &lapin::message::Delivery) -> Option<(u64, String)> {
    let headers = d.properties.headers().as_ref()?.inner();
    let origin = match headers.get(ORIGIN_HEADER)? {
        AMQPValue::LongLongInt(v) => *v as u64,
        _ => return None,
    };
    let kind = match headers.get(KIND_HEADER)? {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => return None,
    };
    Some((origin, kind))
}

/// Publishes requests in order on one confirm-mode channel.
async fn publish_loop(
    parts: Arc<Parts>,
    mut rx: mpsc::Receiver<Request>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut channel: Option<Channel> = None;
    loop {
        let req = tokio::select! {
            r = rx.recv() => r,
            _ = shutdown.changed() => return,
        };
        let Some(req) = req else { return };
        let ch = match channel.as_ref() {
            Some(ch) if ch.status().connected() => ch.clone(),
            _ => match open_confirm_channel(&parts).await {
                Ok(ch) => {
                    channel = Some(ch.clone());
                    ch
                }
                Err(e) => {
                    let _ = req.done.send(Err(e));
                    continue;
                }
            },
        };
        match publish_one(&parts, &ch, &req).await {
            Ok(confirm) => {
                tokio::spawn(async move {
                    let result = match confirm.await {
                        Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => Ok(()),
                        Ok(Confirmation::Nack(_)) => Err(StoreError::Unavailable(
                            "RabbitMQ refused the MQTT publish".into(),
                        )),
                        Err(e) => Err(StoreError::Unavailable(format!(
                            "no confirm from RabbitMQ: {e}"
                        ))),
                    };
                    let _ = req.done.send(result);
                });
            }
            Err(e) => {
                channel = None;
                let _ = req.done.send(Err(StoreError::Unavailable(format!(
                    "MQTT bus publish failed: {e}"
                ))));
            }
        }
    }
}

async fn open_confirm_channel(parts: &Parts) -> Result<Channel, StoreError> {
    let live = parts.broker.live(parts.reconnect_wait).await?;
    let ch = live
        .conn
        .create_channel()
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot open a channel: {e}")))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot enable confirms: {e}")))?;
    Ok(ch)
}

async fn publish_one(
    parts: &Parts,
    ch: &Channel,
    req: &Request,
) -> Result<lapin::PublisherConfirm, lapin::Error> {
    let mut headers = FieldTable::default();
    headers.insert(
        ORIGIN_HEADER.into(),
        AMQPValue::LongLongInt(parts.boot as i64),
    );
    let kind = if req.marker {
        KIND_MARKER
    } else {
        KIND_MESSAGE
    };
    headers.insert(KIND_HEADER.into(), AMQPValue::LongString(kind.into()));
    let key = if req.marker { RETAINED_KEY } else { LIVE_KEY };
    if req.retained && !req.marker {
        let cc = vec![AMQPValue::LongString(LongString::from(RETAINED_KEY))];
        headers.insert("CC".into(), AMQPValue::FieldArray(FieldArray::from(cc)));
    }
    let props = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers);
    ch.basic_publish(
        short(&parts.names.inbox)?,
        short(key)?,
        BasicPublishOptions::default(),
        &req.body,
        props,
    )
    .await
}

/// Consume this node's live queue, re-created on every connection.
async fn live_loop(
    parts: Arc<Parts>,
    mut shutdown: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut after = 0;
    loop {
        let live = tokio::select! {
            l = parts.broker.next_after(after) => l,
            _ = shutdown.changed() => return,
        };
        let Some(live) = live else { return };
        let result = consume_live(&parts, &live.conn, &mut shutdown, &mut ready).await;
        match result {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "mqtt bus: live consumer stopped; resuming"),
        }
        after = if live.conn.status().connected() {
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
                _ = shutdown.changed() => return,
            }
            live.generation - 1
        } else {
            live.generation
        };
    }
}

async fn consume_live(
    parts: &Parts,
    conn: &Connection,
    shutdown: &mut watch::Receiver<bool>,
    ready: &mut Option<oneshot::Sender<()>>,
) -> Result<(), String> {
    let e = |e: lapin::Error| e.to_string();
    let ch = conn.create_channel().await.map_err(e)?;
    let queue = parts.names.mqtt_node_queue(parts.node_id, parts.boot);
    ch.queue_declare(
        short(&queue).map_err(e)?,
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(e)?;
    ch.queue_bind(
        short(&queue).map_err(e)?,
        short(&parts.names.inbox).map_err(e)?,
        short(LIVE_KEY).map_err(e)?,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(e)?;
    ch.basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .map_err(e)?;
    let mut consumer = ch
        .basic_consume(
            short(&queue).map_err(e)?,
            short(&format!("mqtt-live.{:x}", parts.boot)).map_err(e)?,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(e)?;
    if let Some(r) = ready.take() {
        let _ = r.send(());
    }
    let result = async {
        loop {
            let d = tokio::select! {
                d = consumer.next() => d,
                _ = shutdown.changed() => return Ok(()),
            };
            let d = d.ok_or("live consumer cancelled")?.map_err(e)?;
            let tag = d.delivery_tag;
            match origin_of(&d) {
                Some((origin, kind)) if origin != parts.boot && kind == KIND_MESSAGE => {
                    (parts.sink)(BusEvent::Message(d.data));
                }
                Some(_) => {} // our own publish, or a marker
                None => tracing::warn!("mqtt bus: skipping a message without origin headers"),
            }
            ch.basic_ack(tag, BasicAckOptions::default())
                .await
                .map_err(e)?;
        }
    }
    .await;
    close_consuming(&ch, consumer, "mqtt bus live consumer stopped").await;
    result
}

/// Signals of the retained consumer's first start.
struct Once<'a> {
    /// The stream is declared, bound and consumed.
    ready: &'a mut Option<oneshot::Sender<()>>,
    /// Our own marker came back: everything before it was applied.
    marker: &'a mut Option<oneshot::Sender<()>>,
}

/// Read the retained stream from the beginning (then from where it
/// stopped, after a lost connection) and apply every update.
async fn retained_loop(
    parts: Arc<Parts>,
    mut shutdown: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
    marker: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut marker = Some(marker);
    let mut next: Option<u64> = None;
    let mut after = 0;
    loop {
        let live = tokio::select! {
            l = parts.broker.next_after(after) => l,
            _ = shutdown.changed() => return,
        };
        let Some(live) = live else { return };
        let mut once = Once {
            ready: &mut ready,
            marker: &mut marker,
        };
        let result =
            consume_retained(&parts, &live.conn, &mut shutdown, &mut next, &mut once).await;
        match result {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "mqtt bus: retained consumer stopped; resuming"),
        }
        after = if live.conn.status().connected() {
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
                _ = shutdown.changed() => return,
            }
            live.generation - 1
        } else {
            live.generation
        };
    }
}

async fn consume_retained(
    parts: &Parts,
    conn: &Connection,
    shutdown: &mut watch::Receiver<bool>,
    next: &mut Option<u64>,
    once: &mut Once<'_>,
) -> Result<(), String> {
    let e = |e: lapin::Error| e.to_string();
    let ch = conn.create_channel().await.map_err(e)?;
    let stream = parts.names.mqtt_retained();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    ch.queue_declare(
        short(&stream).map_err(e)?,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .map_err(e)?;
    ch.queue_bind(
        short(&stream).map_err(e)?,
        short(&parts.names.inbox).map_err(e)?,
        short(RETAINED_KEY).map_err(e)?,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(e)?;
    ch.basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .map_err(e)?;
    let mut args = FieldTable::default();
    let offset = match *next {
        Some(n) => AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
        None => AMQPValue::LongString("first".into()),
    };
    args.insert("x-stream-offset".into(), offset);
    let mut consumer = ch
        .basic_consume(
            short(&stream).map_err(e)?,
            short(&format!("mqtt-retained.{:x}", parts.boot)).map_err(e)?,
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .map_err(e)?;
    if let Some(r) = once.ready.take() {
        let _ = r.send(());
    }
    let result = async {
        loop {
            let d = tokio::select! {
                d = consumer.next() => d,
                _ = shutdown.changed() => return Ok(()),
            };
            let d = d.ok_or("retained consumer cancelled")?.map_err(e)?;
            let tag = d.delivery_tag;
            let offset = stream_offset(&d);
            // Streams deliver whole chunks: skip what was applied already.
            let seen = matches!((offset, *next), (Some(o), Some(n)) if o < n);
            if !seen {
                match origin_of(&d) {
                    Some((_, kind)) if kind == KIND_MESSAGE => {
                        (parts.sink)(BusEvent::Retained(d.data));
                    }
                    Some((origin, kind)) if kind == KIND_MARKER && origin == parts.boot => {
                        if let Some(m) = once.marker.take() {
                            let _ = m.send(());
                        }
                    }
                    Some(_) => {}
                    None => tracing::warn!("mqtt bus: skipping a retained update without headers"),
                }
                if let Some(o) = offset {
                    *next = Some(o + 1);
                }
            }
            // Streams only need the credit back; retained updates are few.
            ch.basic_ack(tag, BasicAckOptions::default())
                .await
                .map_err(e)?;
        }
    }
    .await;
    close_consuming(&ch, consumer, "mqtt bus retained consumer stopped").await;
    result
}

fn stream_offset(d: &lapin::message::Delivery) -> Option<u64> {
    let headers = d.properties.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(u64::from(*v)),
        AMQPValue::Timestamp(v) => Some(*v),
        _ => None,
    }
}
