//! The indexer: consumes the store's three streams (log, state, control)
//! on one channel, each from this node's last offset of it, applies the
//! records to the local index, then answers this node's waiting writers,
//! fans new messages out to the devices and listeners attached here, and
//! passes on settings, announcements and cursor moves.
//!
//! Each stream is read from its offset stored in the index with the data
//! it covers, so a restarted node, or one whose connection dropped,
//! resumes exactly where its index stands; records re-delivered from
//! before that offset (streams deliver whole chunks) are skipped by the
//! index. What is immediately available, from any of the streams, is
//! applied as one batch, one index transaction; records of one stream
//! keep their order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};
use imgate_core::now_ms;
use imgate_core::store::{Announcement, CursorMoved};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Connection;
use tokio::sync::watch;

use super::broker::Broker;
use super::cursor_log::CursorLog;
use super::index::{Index, IndexPosition, Outcome, Read};
use super::publisher::Waiters;
use super::record::Record;
use super::topology::{close_consuming, short, Names};
use crate::router::Router;

/// The deliveries of the three streams, each tagged with its stream's key.
type Merged = SelectAll<BoxStream<'static, (&'static str, Result<Delivery, lapin::Error>)>>;

/// Most stream messages applied in one index transaction…
const MAX_BATCH: usize = 1024;
/// …and most bytes of them (a message may carry a batch of records).
const MAX_BATCH_BYTES: usize = 8 << 20;
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Announcements read later than this after they were made (a node
/// replaying the stream after a restart) are not passed on.
const ANNOUNCEMENT_TTL_MS: i64 = 60_000;

pub struct LogConsumer {
    pub broker: Broker,
    pub names: Names,
    pub index: Arc<Index>,
    pub position: Arc<Mutex<IndexPosition>>,
    pub last_final: Arc<AtomicU64>,
    pub waiters: Arc<Waiters>,
    pub router: Arc<Router>,
    pub cursors: Arc<CursorLog>,
    pub boot: u64,
    pub node_id: u16,
    pub prefetch: u16,
}

type Failure = String;

impl LogConsumer {
    fn position(&self) -> IndexPosition {
        match self.position.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut after = 0;
        loop {
            let live = tokio::select! {
                l = self.broker.next_after(after) => l,
                _ = shutdown.changed() => return,
            };
            let Some(live) = live else { return };
            match self.consume(&live.conn, &mut shutdown).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "log consumer stopped; resuming"),
            }
            // Same connection still up (a channel-level failure): retry on
            // it after a pause; otherwise wait for the next connection.
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

    async fn consume(
        &self,
        conn: &Connection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        let mut merged = match self.start(&ch).await {
            Ok(c) => c,
            Err(e) => {
                let _ = ch.close(200, "log consumer restarting".into()).await;
                return Err(e.to_string());
            }
        };
        let result = self.read(&ch, &mut merged, shutdown).await;
        // Whatever stopped us, release the consumers and their unacked
        // deliveries (they are read again from our offsets).
        close_consuming(&ch, merged, "log consumer restarting").await;
        result
    }

    /// Consume each stream from our offset of it (`prefetch` records in
    /// flight per stream).
    async fn start(&self, ch: &lapin::Channel) -> Result<Merged, lapin::Error> {
        ch.basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let pos = self.position();
        let mut merged: Merged = SelectAll::new();
        for (queue, key) in self.names.streams() {
            let from = pos.offset_of(key);
            let mut args = FieldTable::default();
            args.insert(
                "x-stream-offset".into(),
                AMQPValue::LongLongInt(i64::try_from(from).unwrap_or(i64::MAX)),
            );
            let tag = format!("indexer.{}.{:x}.{key}", self.node_id, self.boot);
            let consumer = ch
                .basic_consume(
                    short(queue)?,
                    short(&tag)?,
                    BasicConsumeOptions::default(),
                    args,
                )
                .await?;
            merged.push(consumer.map(move |d| (key, d)).boxed());
            tracing::debug!(stream = key, from, "log consumer started");
        }
        Ok(merged)
    }

    async fn read(
        &self,
        ch: &lapin::Channel,
        merged: &mut Merged,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        let e = |e: lapin::Error| e.to_string();
        loop {
            let first = tokio::select! {
                d = merged.next() => d,
                _ = shutdown.changed() => return Ok(()),
            };
            let (key, first) = first.ok_or("log consumer cancelled")?;
            let first = first.map_err(e)?;
            let mut bytes = first.data.len();
            let mut batch = vec![(key, first)];
            let mut failed = None;
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match merged.next().now_or_never() {
                    Some(Some((key, Ok(d)))) => {
                        bytes += d.data.len();
                        batch.push((key, d));
                    }
                    Some(Some((_, Err(err)))) => {
                        failed = Some(err.to_string());
                        break;
                    }
                    Some(None) => {
                        failed = Some("log consumer cancelled".into());
                        break;
                    }
                    None => break,
                }
            }
            let last_tag = batch.iter().map(|(_, d)| d.delivery_tag).max().unwrap_or(0);
            self.apply(batch).await?;
            ch.basic_ack(last_tag, BasicAckOptions { multiple: true })
                .await
                .map_err(e)?;
            if let Some(f) = failed {
                return Err(f);
            }
        }
    }

    async fn apply(&self, deliveries: Vec<(&'static str, Delivery)>) -> Result<(), Failure> {
        let mut pos = self.position();
        let mut expected = pos;
        let batch: Vec<Read> = deliveries
            .into_iter()
            .map(|(key, d)| {
                let offset = match stream_offset(&d) {
                    Some(o) => o,
                    None => expected.offset_of(key),
                };
                expected.advance(key, offset + 1);
                let records = match Record::decode_all(&d.data) {
                    Ok(r) => r,
                    Err(err) => {
                        tracing::warn!(stream = key, offset, error = %err, "skipping an undecodable record");
                        Vec::new()
                    }
                };
                (key, offset, records)
            })
            .collect();
        let index = self.index.clone();
        let (pos, applied) = tokio::task::spawn_blocking(move || {
            let applied = index.apply(&mut pos, &batch);
            (pos, applied)
        })
        .await
        .map_err(|err| format!("index task failed: {err}"))?;
        let applied = applied.map_err(|err| err.to_string())?;
        match self.position.lock() {
            Ok(mut g) => *g = pos,
            Err(p) => *p.into_inner() = pos,
        }
        self.last_final.fetch_max(pos.last_final, Ordering::AcqRel);
        let watching_cursors = self.router.cursors.receiver_count() > 0;
        for a in applied {
            let local = a.origin.boot == self.boot;
            if let Some((message, recipients, sender_device)) = &a.fan_out {
                // A live-only message read back late (a replay after a
                // restart) is not news any more: it is not delivered.
                let stale = message.payload.is_live_only()
                    && now_ms().saturating_sub(message.server_ts) > ANNOUNCEMENT_TTL_MS;
                if !stale {
                    self.router
                        .fan_out(message, recipients, sender_device.as_deref());
                }
            }
            match &a.outcome {
                Outcome::SettingPut(key, value) => {
                    let _ = self.router.settings.send((key.clone(), value.clone()));
                }
                Outcome::Cursors(entries, snapshot) => {
                    self.cursors.saw(*snapshot, a.at_ms);
                    // This node's moves were told as its acks came in;
                    // registrations and resets ack nothing.
                    if watching_cursors && !local && snapshot.is_none() {
                        for e in entries.iter().filter(|e| e.is_ack()) {
                            let _ = self.router.cursors.send(Arc::new(CursorMoved {
                                user: e.user.clone(),
                                device: e.device.clone(),
                                cursor: e.cursor,
                                local: false,
                            }));
                        }
                    }
                }
                Outcome::Announced(topic, payload, at_ms)
                    if now_ms().saturating_sub(*at_ms) <= ANNOUNCEMENT_TTL_MS =>
                {
                    let _ = self.router.announcements.send(Arc::new(Announcement {
                        topic: topic.clone(),
                        payload: payload.clone(),
                        local,
                    }));
                }
                _ => {}
            }
            if local {
                self.waiters.resolve(a.origin.token, a.outcome);
            }
        }
        Ok(())
    }
}

/// The `x-stream-offset` header RabbitMQ puts on stream deliveries.
fn stream_offset(d: &Delivery) -> Option<u64> {
    let headers = d.properties.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(u64::from(*v)),
        AMQPValue::Timestamp(v) => Some(*v),
        _ => None,
    }
}
