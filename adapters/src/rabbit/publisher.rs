//! Writing records: one publisher task, records batched into few AMQP
//! messages, a bounded window, and the wait for this node's indexer.
//!
//! Each record goes to its stream ([`Record::stream_key`]). An append is
//! answered only after (1) the broker confirmed the AMQP message that
//! carries it (the stream has it: the durability point of DESIGN §3.1)
//! and (2) this node's indexer applied it (so the sender gets the final
//! id, duplicates are detected in log order, and a sync on this node
//! right after the ack sees it).
//!
//! **Batching.** Writers encode their record and queue it; one task takes
//! everything queued, groups it by stream and publishes each group as one
//! AMQP message (a JSON array of records, at most [`MAX_BATCH_BYTES`]),
//! with at most [`MAX_BATCHES_IN_FLIGHT`] messages awaiting confirms. So
//! under load many records share one publish and one confirm (the
//! broker's cost is per message, not per byte), and alone a record goes
//! out at once. Records keep their queue order within a stream: a
//! record's place in the stream is fixed once it is queued
//! ([`Publisher::queue`]), which lets a session pipeline its sends.
//!
//! Backpressure: at most `max_in_flight` records are queued or awaiting
//! confirms; more writers wait for a slot, and every step is bounded by
//! `send_timeout`, after which the append fails with `Unavailable` (code
//! 4). A failed or timed-out append may still have been stored: the
//! sender's resend with the same `client_msg_id` then answers with the
//! original (dedupe). A nacked batch is followed by a
//! [`Record::Withdraw`] for every message in it, so a sender's error is
//! true: not stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgate_core::id::MessageIdGenerator;
use imgate_core::now_ms;
use imgate_core::StoreError;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout_at, Instant};

use super::broker::Broker;
use super::index::Outcome;
use super::record::{Origin, Record};
use super::topology::{short, Names};

const PERSISTENT: u8 = 2;
/// Most bytes of records in one AMQP message (well below the frame size
/// negotiated with the broker, 128 KiB by default, so one body frame).
pub const MAX_BATCH_BYTES: usize = 120 * 1024;
/// AMQP messages awaiting their confirm at once.
const MAX_BATCHES_IN_FLIGHT: usize = 16;

/// Writers waiting for the indexer to apply their own record.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Outcome>>> {
        match self.map.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn register(self: &Arc<Self>, token: u64) -> Waiting {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(token, tx);
        Waiting {
            rx,
            token,
            waiters: self.clone(),
        }
    }

    /// The indexer applied a record of this process.
    pub fn resolve(&self, token: u64, outcome: Outcome) {
        if let Some(tx) = self.lock().remove(&token) {
            let _ = tx.send(outcome);
        }
    }
}

/// A registered waiter; unregisters itself when dropped.
struct Waiting {
    rx: oneshot::Receiver<Outcome>,
    token: u64,
    waiters: Arc<Waiters>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.token);
    }
}

/// Why a publish did not go through.
#[derive(Debug)]
enum Failed {
    /// The broker nacked it: the record may be in the log (see `withdraw`).
    Nacked,
    Error(String),
}

/// One encoded record waiting for the publisher task.
struct Queued {
    key: &'static str,
    body: Vec<u8>,
    confirmed: oneshot::Sender<Result<(), Failed>>,
}

pub struct Publisher {
    queue: mpsc::UnboundedSender<Queued>,
    boot: u64,
    window: Arc<Semaphore>,
    ids: Mutex<MessageIdGenerator>,
    last_final: Arc<AtomicU64>,
    waiters: Arc<Waiters>,
    send_timeout: Duration,
}

pub struct PublisherParts {
    pub broker: Broker,
    pub names: Names,
    pub boot: u64,
    pub node_id: u16,
    pub max_in_flight: usize,
    pub last_final: Arc<AtomicU64>,
    pub waiters: Arc<Waiters>,
    pub send_timeout: Duration,
    pub reconnect_wait: Duration,
    pub shutdown: watch::Receiver<bool>,
}

/// A record queued for publishing: resolves with the outcome of applying
/// it (see [`Publisher::queue`]).
pub struct InQueue<'a> {
    publisher: &'a Publisher,
    token: u64,
    message: bool,
    waiting: Waiting,
    confirmed: oneshot::Receiver<Result<(), Failed>>,
    _slot: OwnedSemaphorePermit,
    deadline: Instant,
    index_wait: Option<Duration>,
}

impl Publisher {
    /// The publisher and its task (which ends with the store's shutdown
    /// or when the publisher is dropped).
    pub fn new(p: PublisherParts) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::unbounded_channel();
        let task = Task {
            broker: p.broker,
            names: p.names,
            reconnect_wait: p.reconnect_wait,
            batches: Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT)),
            channel: None,
        };
        let handle = tokio::spawn(task.run(rx, p.shutdown));
        let publisher = Publisher {
            queue,
            boot: p.boot,
            window: Arc::new(Semaphore::new(p.max_in_flight.max(1))),
            ids: Mutex::new(MessageIdGenerator::new(p.node_id)),
            last_final: p.last_final,
            waiters: p.waiters,
            send_timeout: p.send_timeout,
        };
        (publisher, handle)
    }

    /// Publish one record, wait for its confirm and for this node's indexer
    /// to apply it; the outcome of applying it. The indexer wait is bounded
    /// by `send_timeout`, or by `index_wait` after the confirm if given
    /// (catching up at start may take longer than one send).
    pub async fn write(
        &self,
        build: impl FnOnce(Origin, i64) -> Record,
        index_wait: Option<Duration>,
    ) -> Result<Outcome, StoreError> {
        self.queue(build, index_wait).await?.done().await
    }

    /// Queue one record: once this returns, its place in its stream after
    /// every record queued before it is fixed. The returned handle
    /// resolves like [`Self::write`].
    pub async fn queue(
        &self,
        build: impl FnOnce(Origin, i64) -> Record,
        index_wait: Option<Duration>,
    ) -> Result<InQueue<'_>, StoreError> {
        let deadline = Instant::now() + self.send_timeout;
        let slot = timeout_at(deadline, self.window.clone().acquire_owned())
            .await
            .map_err(|_| unavailable("too many messages awaiting RabbitMQ confirms"))?
            .map_err(|_| unavailable("store closed"))?;
        let now = now_ms();
        let token = {
            let mut ids = match self.ids.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            ids.resume_after(self.last_final.load(Ordering::Acquire));
            ids.next_at(now)
        };
        let origin = Origin {
            boot: self.boot,
            token,
        };
        let record = build(origin, now);
        let body = record
            .encode()
            .map_err(|e| StoreError::Corrupt(format!("cannot encode record: {e}")))?;
        let message = matches!(record, Record::Message { .. });
        let waiting = self.waiters.register(token);
        let (confirmed_tx, confirmed) = oneshot::channel();
        self.queue
            .send(Queued {
                key: record_key(&record),
                body,
                confirmed: confirmed_tx,
            })
            .map_err(|_| unavailable("store closed"))?;
        Ok(InQueue {
            publisher: self,
            token,
            message,
            waiting,
            confirmed,
            _slot: slot,
            deadline,
            index_wait,
        })
    }

    /// Take back the nacked message `prov`; the error for its sender.
    async fn withdraw(&self, prov: u64) -> StoreError {
        const REFUSED: &str = "RabbitMQ refused the message (the log is unavailable)";
        let build = |origin, _| Record::Withdraw {
            origin,
            provisional: prov,
        };
        let sent = match self.queue(build, None).await {
            Ok(q) => q.settle().await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(outcome) => {
                if let Outcome::Withdrawn(final_id) = outcome {
                    tracing::info!(prov, ?final_id, "rabbit: nacked message withdrawn");
                }
                unavailable(format!("{REFUSED}; it was not stored"))
            }
            Err(e) => {
                tracing::warn!(prov, error = %e, "rabbit: could not withdraw a nacked message");
                unavailable(format!(
                    "{REFUSED}, and taking it back failed ({e}): it may still show in history; resend with the same client_msg_id"
                ))
            }
        }
    }
}

impl InQueue<'_> {
    /// The confirm, then this node's indexer; a nacked message is
    /// withdrawn.
    pub async fn done(self) -> Result<Outcome, StoreError> {
        let (publisher, token, message) = (self.publisher, self.token, self.message);
        match self.settle_inner().await {
            Ok(outcome) => Ok(outcome),
            Err(Settle::Nacked) if message => Err(publisher.withdraw(token).await),
            Err(Settle::Nacked) => Err(unavailable("RabbitMQ refused the record")),
            Err(Settle::Error(e)) => Err(e),
        }
    }

    /// Like `done`, but a nack is only an error (for withdrawals).
    async fn settle(self) -> Result<Outcome, StoreError> {
        match self.settle_inner().await {
            Ok(o) => Ok(o),
            Err(Settle::Nacked) => Err(unavailable("nacked")),
            Err(Settle::Error(e)) => Err(e),
        }
    }

    async fn settle_inner(mut self) -> Result<Outcome, Settle> {
        match timeout_at(self.deadline, &mut self.confirmed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(Failed::Nacked))) => return Err(Settle::Nacked),
            Ok(Ok(Err(Failed::Error(e)))) => return Err(Settle::Error(unavailable(e))),
            Ok(Err(_)) => return Err(Settle::Error(unavailable("store closed"))),
            Err(_) => {
                return Err(Settle::Error(unavailable(
                    "timed out waiting for the RabbitMQ confirm",
                )))
            }
        }
        drop(self._slot);
        let index_deadline = match self.index_wait {
            Some(d) => Instant::now() + d,
            None => self.deadline,
        };
        match timeout_at(index_deadline, &mut self.waiting.rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(Settle::Error(unavailable("store closed"))),
            Err(_) => Err(Settle::Error(unavailable(
                "stored, but this node has not indexed it yet; resend to get the ack",
            ))),
        }
    }
}

enum Settle {
    Nacked,
    Error(StoreError),
}

fn record_key(record: &Record) -> &'static str {
    use super::topology::{CONTROL_KEY, LOG_KEY, STATE_KEY};
    match record.stream_key() {
        STATE_KEY => STATE_KEY,
        CONTROL_KEY => CONTROL_KEY,
        _ => LOG_KEY,
    }
}

/// The publisher task's own state.
struct Task {
    broker: Broker,
    names: Names,
    reconnect_wait: Duration,
    batches: Arc<Semaphore>,
    channel: Option<Channel>,
}

impl Task {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Queued>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut pending: Vec<Queued> = Vec::new();
        loop {
            if pending.is_empty() {
                tokio::select! {
                    q = rx.recv() => match q {
                        Some(q) => pending.push(q),
                        None => return,
                    },
                    _ = shutdown.changed() => return,
                }
            }
            // A free batch slot first: while all are taken, more records
            // gather into the next batches.
            let slot = tokio::select! {
                s = self.batches.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => return,
                },
                _ = shutdown.changed() => return,
            };
            while let Ok(q) = rx.try_recv() {
                pending.push(q);
            }
            // A writer that gave up (timed out while the broker was away)
            // was told "not stored": keep it true.
            pending.retain(|q| !q.confirmed.is_closed());
            let batch = take_batch(&mut pending);
            if batch.is_empty() {
                continue;
            }
            self.publish(batch, slot).await;
        }
    }

    /// Publish one batch (all of one stream) and hand its confirm to a
    /// task that answers its records.
    async fn publish(&mut self, mut batch: Vec<Queued>, slot: OwnedSemaphorePermit) {
        let key = batch.first().map_or(super::topology::LOG_KEY, |q| q.key);
        let body = encode_batch(&mut batch);
        let sent = match self.channel().await {
            Ok(ch) => ch
                .basic_publish(
                    short(&self.names.inbox).unwrap_or_default(),
                    short(key).unwrap_or_default(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(PERSISTENT),
                )
                .await
                .map_err(|e| format!("publish failed: {e}")),
            Err(e) => Err(e),
        };
        let confirm = match sent {
            Ok(c) => c,
            Err(e) => {
                self.channel = None;
                for q in batch {
                    let _ = q.confirmed.send(Err(Failed::Error(e.clone())));
                }
                return;
            }
        };
        tokio::spawn(async move {
            let result = match confirm.await {
                Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => Ok(()),
                Ok(Confirmation::Nack(_)) => Err(Failed::Nacked),
                Err(e) => Err(Failed::Error(format!("no confirm from RabbitMQ: {e}"))),
            };
            drop(slot);
            for q in batch {
                let r = match &result {
                    Ok(()) => Ok(()),
                    Err(Failed::Nacked) => Err(Failed::Nacked),
                    Err(Failed::Error(e)) => Err(Failed::Error(e.clone())),
                };
                let _ = q.confirmed.send(r);
            }
        });
    }

    /// The confirm channel, opened on the current connection when needed.
    async fn channel(&mut self) -> Result<Channel, String> {
        if let Some(ch) = &self.channel {
            if ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        let live = self
            .broker
            .live(self.reconnect_wait)
            .await
            .map_err(|e| e.to_string())?;
        let ch = live
            .conn
            .create_channel()
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("cannot enable confirms: {e}"))?;
        self.channel = Some(ch.clone());
        Ok(ch)
    }
}

/// The next batch: the first pending record's stream, records of that
/// stream in queue order up to [`MAX_BATCH_BYTES`] (at least one).
fn take_batch(pending: &mut Vec<Queued>) -> Vec<Queued> {
    let Some(key) = pending.first().map(|q| q.key) else {
        return Vec::new();
    };
    let mut batch = Vec::new();
    let mut rest = Vec::with_capacity(pending.len());
    let mut bytes = 0;
    let mut full = false;
    for q in pending.drain(..) {
        if !full && q.key == key && (batch.is_empty() || bytes + q.body.len() < MAX_BATCH_BYTES) {
            bytes += q.body.len() + 1;
            batch.push(q);
        } else {
            // Later records of this stream wait too: they keep their order.
            if q.key == key {
                full = true;
            }
            rest.push(q);
        }
    }
    *pending = rest;
    batch
}

/// One record as is; several as a JSON array (see `Record::decode_all`).
/// The bodies are taken (no copy for a lone record).
fn encode_batch(batch: &mut [Queued]) -> Vec<u8> {
    if let [one] = batch {
        return std::mem::take(&mut one.body);
    }
    let len = batch.iter().map(|q| q.body.len() + 1).sum::<usize>() + 1;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, q) in batch.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&q.body);
    }
    out.push(b']');
    out
}

fn unavailable(msg: impl Into<String>) -> StoreError {
    StoreError::Unavailable(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(key: &'static str, body: &str) -> Queued {
        Queued {
            key,
            body: body.as_bytes().to_vec(),
            confirmed: oneshot::channel().0,
        }
    }

    #[test]
    fn batches_keep_stream_order_and_size() {
        let mut pending = vec![
            queued("log", "1"),
            queued("control", "c"),
            queued("log", "2"),
        ];
        let mut b = take_batch(&mut pending);
        assert_eq!(encode_batch(&mut b), b"[1,2]");
        assert_eq!(pending.len(), 1);
        assert_eq!(
            encode_batch(&mut take_batch(&mut pending)),
            b"c",
            "one record as is"
        );
        let big = "x".repeat(MAX_BATCH_BYTES / 2 + 1);
        let mut pending = vec![queued("log", &big), queued("log", &big), queued("log", "3")];
        assert_eq!(take_batch(&mut pending).len(), 1);
        assert_eq!(pending.len(), 2, "the third waits behind the second");
    }
}
