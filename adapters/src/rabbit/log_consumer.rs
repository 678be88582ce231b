//! The indexer: consumes the log stream from this node's last offset and
//! applies records to the local index, then answers this node's waiting
//! writers and feeds live listeners.
//!
//! It reads from `next_offset` (stored in the index with the data it
//! covers), so a restarted node, or one whose connection dropped, resumes
//! exactly where its index stands; records re-delivered from before that
//! offset (streams deliver whole chunks) are skipped by the index. What is
//! immediately available is applied as one batch, one index transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use imgate_core::now_ms;
use imgate_core::store::Announcement;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, Consumer};
use tokio::sync::watch;

use super::broker::Broker;
use super::index::{Index, IndexPosition, Outcome};
use super::live::LiveFeeds;
use super::publisher::Waiters;
use super::record::Record;
use super::topology::{close_consuming, short, Names};

/// Most log records applied in one index transaction.
const MAX_BATCH: usize = 1024;
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
    pub feeds: Arc<LiveFeeds>,
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
        let mut consumer = match self.start(&ch).await {
            Ok(c) => c,
            Err(e) => {
                let _ = ch.close(200, "log consumer restarting".into()).await;
                return Err(e.to_string());
            }
        };
        let result = self.read(&ch, &mut consumer, shutdown).await;
        // Whatever stopped us, release the consumer and its unacked
        // deliveries (they are read again from our offset).
        close_consuming(&ch, consumer, "log consumer restarting").await;
        result
    }

    /// Consume the log from our offset on.
    async fn start(&self, ch: &lapin::Channel) -> Result<Consumer, lapin::Error> {
        ch.basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let from = self.position().next_offset;
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongLongInt(i64::try_from(from).unwrap_or(i64::MAX)),
        );
        let tag = format!("indexer.{}.{:x}", self.node_id, self.boot);
        let consumer = ch
            .basic_consume(
                short(&self.names.log)?,
                short(&tag)?,
                BasicConsumeOptions::default(),
                args,
            )
            .await?;
        tracing::debug!(from, "log consumer started");
        Ok(consumer)
    }

    async fn read(
        &self,
        ch: &lapin::Channel,
        consumer: &mut Consumer,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        let e = |e: lapin::Error| e.to_string();
        loop {
            let first = tokio::select! {
                d = consumer.next() => d,
                _ = shutdown.changed() => return Ok(()),
            };
            let mut batch = vec![first.ok_or("log consumer cancelled")?.map_err(e)?];
            let mut failed = None;
            while batch.len() < MAX_BATCH {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(d))) => batch.push(d),
                    Some(Some(Err(err))) => {
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
            let last_tag = batch.last().map(|d| d.delivery_tag).unwrap_or(0);
            self.apply(batch).await?;
            ch.basic_ack(last_tag, BasicAckOptions { multiple: true })
                .await
                .map_err(e)?;
            if let Some(f) = failed {
                return Err(f);
            }
        }
    }

    async fn apply(&self, deliveries: Vec<Delivery>) -> Result<(), Failure> {
        let mut pos = self.position();
        let mut expected = pos.next_offset;
        let batch: Vec<(u64, Option<Record>)> = deliveries
            .into_iter()
            .map(|d| {
                let offset = stream_offset(&d).unwrap_or(expected);
                expected = offset + 1;
                let record = match Record::decode(&d.data) {
                    Ok(r) => Some(r),
                    Err(err) => {
                        tracing::warn!(offset, error = %err, "skipping an undecodable log record");
                        None
                    }
                };
                (offset, record)
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
        for a in applied {
            if let Some((message, recipients)) = &a.fan_out {
                self.feeds.fan_out(message, recipients);
            }
            match &a.outcome {
                Outcome::SettingPut(key, value) => {
                    let _ = self.feeds.settings.send((key.clone(), value.clone()));
                }
                Outcome::Announced(topic, payload, at_ms)
                    if now_ms().saturating_sub(*at_ms) <= ANNOUNCEMENT_TTL_MS =>
                {
                    let _ = self.feeds.announcements.send(Arc::new(Announcement {
                        topic: topic.clone(),
                        payload: payload.clone(),
                        local: a.origin.boot == self.boot,
                    }));
                }
                _ => {}
            }
            if a.origin.boot == self.boot {
                self.waiters.resolve(a.origin.token, a.outcome);
            }
        }
        self.feeds.advanced();
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
