//! Writing records: one confirm-mode channel, a bounded window of
//! unconfirmed publishes, and the wait for this node's indexer.
//!
//! Each record goes to its stream ([`Record::stream_key`]). An append is
//! answered only after (1) the broker confirmed the publish (the stream
//! has it: that is the durability point of DESIGN §3.1) and (2) this
//! node's indexer applied
//! the record (so the sender gets the final id, duplicates are detected in
//! log order, and a sync on this node right after the ack sees it).
//!
//! Backpressure: at most `max_in_flight` publishes await confirms; more
//! senders wait for a slot, and every step is bounded by `send_timeout`,
//! after which the append fails with `Unavailable` (code 4). A failed or
//! timed-out append may still have been stored: the sender's resend with
//! the same `client_msg_id` then answers with the original (dedupe).
//!
//! Ids are taken under a short lock; the publishes themselves then run
//! concurrently on the one channel (serializing them up to the socket
//! write cost 5x the throughput). Concurrent appends of one node can thus
//! reach the stream slightly out of provisional-id order, exactly like
//! appends of two nodes: the indexer's final id (see `index.rs`) keeps ids
//! unique and increasing in log order either way. A sender's own messages
//! are sequential (each waits for its ack), so they keep their order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgate_core::id::MessageIdGenerator;
use imgate_core::now_ms;
use imgate_core::StoreError;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::{oneshot, Semaphore, SemaphorePermit};
use tokio::time::{timeout_at, Instant};

use super::broker::Broker;
use super::index::Outcome;
use super::record::{Origin, Record};
use super::topology::{short, Names};

const PERSISTENT: u8 = 2;

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

pub struct Publisher {
    broker: Broker,
    names: Names,
    boot: u64,
    window: Semaphore,
    channel: tokio::sync::Mutex<Option<Channel>>,
    ids: Mutex<MessageIdGenerator>,
    last_final: Arc<AtomicU64>,
    waiters: Arc<Waiters>,
    send_timeout: Duration,
    reconnect_wait: Duration,
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
}

impl Publisher {
    pub fn new(p: PublisherParts) -> Self {
        Publisher {
            broker: p.broker,
            names: p.names,
            boot: p.boot,
            window: Semaphore::new(p.max_in_flight),
            channel: tokio::sync::Mutex::new(None),
            ids: Mutex::new(MessageIdGenerator::new(p.node_id)),
            last_final: p.last_final,
            waiters: p.waiters,
            send_timeout: p.send_timeout,
            reconnect_wait: p.reconnect_wait,
        }
    }

    /// Publish one record, wait for its confirm and for this node's indexer
    /// to apply it; the outcome of applying it. The indexer wait is bounded
    /// by `send_timeout`, or by `index_wait` after the confirm if given
    /// (catching up at start may take longer than one send).
    ///
    /// A nack (the broker could not store it) is followed by a
    /// [`Record::Withdraw`], so a message the stream may hold anyway is
    /// taken back on every node and the sender's error is true: not
    /// stored.
    pub async fn write(
        &self,
        build: impl FnOnce(Origin, i64) -> Record,
        index_wait: Option<Duration>,
    ) -> Result<Outcome, StoreError> {
        let deadline = Instant::now() + self.send_timeout;
        let slot = timeout_at(deadline, self.window.acquire())
            .await
            .map_err(|_| unavailable("too many messages awaiting RabbitMQ confirms"))?
            .map_err(|_| unavailable("store closed"))?;
        let (ch, token, out) = self.prepare(deadline, build).await?;
        match self
            .send(&ch, token, out, Some(slot), deadline, index_wait)
            .await
        {
            Ok(outcome) => Ok(outcome),
            Err(Failed::Nacked) => Err(self.withdraw(token).await),
            Err(Failed::Error(e)) => Err(e),
        }
    }

    /// Take back the nacked record `prov` (see [`Self::write`]); the error
    /// for its sender.
    async fn withdraw(&self, prov: u64) -> StoreError {
        const REFUSED: &str = "RabbitMQ refused the message (the log is unavailable)";
        let deadline = Instant::now() + self.send_timeout;
        let build = |origin, _| Record::Withdraw {
            origin,
            provisional: prov,
        };
        let sent = match self.prepare(deadline, build).await {
            Ok((ch, token, out)) => self.send(&ch, token, out, None, deadline, None).await,
            Err(e) => Err(Failed::Error(e)),
        };
        match sent {
            Ok(outcome) => {
                if let Outcome::Withdrawn(final_id) = outcome {
                    tracing::info!(prov, ?final_id, "rabbit: nacked message withdrawn");
                }
                unavailable(format!("{REFUSED}; it was not stored"))
            }
            Err(f) => {
                let why = match f {
                    Failed::Nacked => "nacked".to_string(),
                    Failed::Error(e) => e.to_string(),
                };
                tracing::warn!(prov, error = %why, "rabbit: could not withdraw a nacked message");
                unavailable(format!(
                    "{REFUSED}, and taking it back failed ({why}): it may still show in history; resend with the same client_msg_id"
                ))
            }
        }
    }

    /// A connected confirm channel, a fresh token and the record built for
    /// it (ids are taken under the channel lock, see the module docs).
    async fn prepare(
        &self,
        deadline: Instant,
        build: impl FnOnce(Origin, i64) -> Record,
    ) -> Result<(Channel, u64, Record), StoreError> {
        let mut guard = timeout_at(deadline, self.channel.lock())
            .await
            .map_err(|_| unavailable("timed out waiting to publish"))?;
        let ch = match guard.as_ref() {
            Some(ch) if ch.status().connected() => ch.clone(),
            _ => {
                let ch = self.open_channel(deadline).await?;
                *guard = Some(ch.clone());
                ch
            }
        };
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
        Ok((ch, token, build(origin, now)))
    }

    /// Publish a prepared record, wait for the broker's confirms (then
    /// free `slot`) and for this node's indexer.
    async fn send(
        &self,
        ch: &Channel,
        token: u64,
        record: Record,
        slot: Option<SemaphorePermit<'_>>,
        deadline: Instant,
        index_wait: Option<Duration>,
    ) -> Result<Outcome, Failed> {
        let body = record
            .encode()
            .map_err(|e| StoreError::Corrupt(format!("cannot encode record: {e}")))?;
        let mut waiting = self.waiters.register(token);
        let confirm = match self.publish(ch, &body, record.stream_key()).await {
            Ok(c) => c,
            Err(e) => {
                let mut guard = self.channel.lock().await;
                if guard.as_ref().is_some_and(|c| c.id() == ch.id()) {
                    *guard = None;
                }
                return Err(unavailable(format!("publish failed: {e}")).into());
            }
        };
        match timeout_at(deadline, confirm).await {
            Ok(Ok(Confirmation::Ack(_))) | Ok(Ok(Confirmation::NotRequested)) => {}
            Ok(Ok(Confirmation::Nack(_))) => return Err(Failed::Nacked),
            Ok(Err(e)) => return Err(unavailable(format!("no confirm from RabbitMQ: {e}")).into()),
            Err(_) => return Err(unavailable("timed out waiting for the RabbitMQ confirm").into()),
        }
        drop(slot);
        let index_deadline = match index_wait {
            Some(d) => Instant::now() + d,
            None => deadline,
        };
        match timeout_at(index_deadline, &mut waiting.rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(unavailable("store closed").into()),
            Err(_) => Err(unavailable(
                "stored, but this node has not indexed it yet; resend to get the ack",
            )
            .into()),
        }
    }

    async fn open_channel(&self, deadline: Instant) -> Result<Channel, StoreError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let live = self.broker.live(left.min(self.reconnect_wait)).await?;
        let ch = live
            .conn
            .create_channel()
            .await
            .map_err(|e| unavailable(format!("cannot open a channel: {e}")))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| unavailable(format!("cannot enable confirms: {e}")))?;
        Ok(ch)
    }

    /// One persistent publish to the stream bound with `key`.
    async fn publish(
        &self,
        ch: &Channel,
        body: &[u8],
        key: &str,
    ) -> Result<lapin::PublisherConfirm, lapin::Error> {
        ch.basic_publish(
            short(&self.names.inbox)?,
            short(key)?,
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(PERSISTENT),
        )
        .await
    }
}

/// Why a publish did not go through.
enum Failed {
    /// The broker nacked it: the record may be in the log (see `withdraw`).
    Nacked,
    Error(StoreError),
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Failed::Error(e)
    }
}

fn unavailable(msg: impl Into<String>) -> StoreError {
    StoreError::Unavailable(msg.into())
}
