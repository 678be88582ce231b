//! Device cursors to and from the control stream.
//!
//! Acks move a device's cursor in memory on the node that holds its
//! session (its `InFlight` window). The moved value lands here, one entry
//! per device however many acks came, and a flusher task writes what
//! accumulated as one [`Record::Cursors`] every `cursor_flush` (100 ms by
//! default; at most [`MAX_ENTRIES`] per record). Every node applies those
//! records to its index, so a device that reconnects to any node resumes
//! where it acked, give or take the last batch: a redelivery, never a
//! loss.
//!
//! A device seen for the first time registers its cursor ("what is sent
//! from now on"); its attach waits until that registration is confirmed,
//! so the device's starting point is durable before it gets anything.
//!
//! The control stream expires (`control_max_age`). So that a node started
//! later still learns every cursor, the cluster writes a **snapshot** of
//! its cursor table now and then: every node watches the stream for
//! complete snapshots (the last part seen), and the one whose turn it is
//! (no complete snapshot for `cursor_snapshot`, plus a delay by node id so
//! nodes rarely race; a race only costs a second copy) writes its whole
//! table, in parts. Retention then always keeps at least one complete
//! snapshot and the moves after it (the store checks that
//! `control_max_age` exceeds twice `cursor_snapshot`).
//!
//! Devices unseen for `device_expires` are forgotten: attached devices are
//! refreshed (re-recorded as seen) periodically, snapshots leave expired
//! ones out, and each node prunes them from its index.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use imgate_core::{now_ms, StoreError};
use tokio::sync::{oneshot, watch, Notify};

use super::index::Index;
use super::publisher::Publisher;
use super::record::{CursorEntry, Record, SnapshotPart};
use crate::router::Router;

/// Most cursor entries in one record (about 60 bytes each as JSON).
pub const MAX_ENTRIES: usize = 4096;
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Most cursor entries kept waiting while the broker is unreachable; more
/// moves are dropped (a redelivery later, never a loss).
const MAX_PENDING: usize = 1 << 20;
/// Devices pruned from the index per pass.
const PRUNE_BATCH: usize = 10_000;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

#[derive(Default)]
struct Pending {
    entries: HashMap<(String, String), CursorEntry>,
    waiters: Vec<Waiter>,
    /// Devices whose moves the flusher is writing now.
    writing: HashSet<(String, String)>,
}

pub struct CursorLog {
    pending: Mutex<Pending>,
    wake: Notify,
    /// Log clock (ms) of the last complete snapshot seen in the stream.
    last_snapshot: AtomicI64,
}

/// What the flusher works with.
pub struct Flusher {
    pub log: Arc<CursorLog>,
    pub publisher: Arc<Publisher>,
    pub index: Arc<Index>,
    pub router: Arc<Router>,
    pub flush_every: Duration,
    pub snapshot_every: Duration,
    pub device_expires: Duration,
    pub node_id: u16,
}

impl CursorLog {
    pub fn new() -> Self {
        CursorLog {
            pending: Mutex::default(),
            wake: Notify::new(),
            last_snapshot: AtomicI64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A device's cursor moved (an ack on this node). The first move
    /// after a flush wakes the flusher, which then waits `cursor_flush`
    /// for more.
    pub fn moved(&self, user: &str, device: &str, cursor: u64) {
        let mut p = self.lock();
        if p.entries.len() >= MAX_PENDING {
            return;
        }
        if p.entries.is_empty() {
            self.wake.notify_one();
        }
        let e = p
            .entries
            .entry((user.to_string(), device.to_string()))
            .or_insert_with(|| CursorEntry {
                user: user.to_string(),
                device: device.to_string(),
                cursor,
                seen_ms: 0,
                register: false,
                reset: false,
            });
        e.cursor = e.cursor.max(cursor);
        e.seen_ms = now_ms();
        e.register = false;
        e.reset = false;
    }

    /// Record `entry` (a registration, or a move of an expired device) and
    /// wait until it is in the control stream.
    pub async fn record_and_wait(
        &self,
        entry: CursorEntry,
        wait: Duration,
    ) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.lock();
            let key = (entry.user.clone(), entry.device.clone());
            match p.entries.get_mut(&key) {
                Some(e) => {
                    e.cursor = e.cursor.max(entry.cursor);
                    e.seen_ms = e.seen_ms.max(entry.seen_ms);
                }
                None => {
                    p.entries.insert(key, entry);
                }
            }
            p.waiters.push(tx);
        }
        self.wake.notify_one();
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError::Unavailable("RabbitMQ store closed".into())),
            Err(_) => Err(StoreError::Unavailable(
                "timed out registering the device with RabbitMQ".into(),
            )),
        }
    }

    /// Whether this node has moves of the device not yet in its index
    /// (waiting for the flusher, or being written).
    pub fn unflushed(&self, user: &str, device: &str) -> bool {
        let p = self.lock();
        let key = (user.to_string(), device.to_string());
        p.entries.contains_key(&key) || p.writing.contains(&key)
    }

    /// Wait until everything recorded so far is in the control stream
    /// and this node's index (a device re-attaching here must start from
    /// its latest cursor, not the one before its last acks).
    pub async fn flushed(&self, wait: Duration) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.lock().waiters.push(tx);
        self.wake.notify_one();
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError::Unavailable("RabbitMQ store closed".into())),
            Err(_) => Err(StoreError::Unavailable(
                "timed out writing device cursors to RabbitMQ".into(),
            )),
        }
    }

    /// A cursor record was read from the stream (any node's).
    pub fn saw(&self, snapshot: Option<SnapshotPart>, at_ms: i64) {
        if snapshot.is_some_and(|s| s.last) {
            self.last_snapshot.fetch_max(at_ms, Ordering::AcqRel);
        }
    }

    fn take(&self) -> (Vec<CursorEntry>, Vec<Waiter>) {
        let mut p = self.lock();
        let drained: Vec<((String, String), CursorEntry)> = p.entries.drain().collect();
        let mut entries = Vec::with_capacity(drained.len());
        for (key, e) in drained {
            p.writing.insert(key);
            entries.push(e);
        }
        (entries, std::mem::take(&mut p.waiters))
    }

    fn written(&self) {
        self.lock().writing.clear();
    }

    fn put_back(&self, entries: Vec<CursorEntry>) {
        let mut p = self.lock();
        for e in entries {
            let key = (e.user.clone(), e.device.clone());
            match p.entries.get_mut(&key) {
                Some(have) => {
                    have.cursor = have.cursor.max(e.cursor);
                    have.seen_ms = have.seen_ms.max(e.seen_ms);
                    have.register &= e.register;
                    have.reset &= e.reset;
                }
                None => {
                    p.entries.insert(key, e);
                }
            }
        }
    }

    fn has_waiters(&self) -> bool {
        !self.lock().waiters.is_empty()
    }
}

impl Flusher {
    /// Flush moves, refresh attached devices, write snapshots, prune,
    /// until the store closes.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let refresh_every = (self.device_expires / 4).min(self.snapshot_every);
        let tick =
            (self.snapshot_every / 8).clamp(Duration::from_millis(50), Duration::from_secs(60));
        let mut last_refresh = tokio::time::Instant::now();
        let mut last_check = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = self.log.wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => {
                    self.flush().await;
                    return;
                }
            }
            if !self.log.has_waiters() {
                // Moves only: let more of them gather into one record.
                tokio::select! {
                    _ = tokio::time::sleep(self.flush_every) => {}
                    _ = shutdown.changed() => {
                        self.flush().await;
                        return;
                    }
                }
            }
            if !self.flush().await {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            if last_refresh.elapsed() >= refresh_every {
                last_refresh = tokio::time::Instant::now();
                for (user, device, cursor) in self.router.attached() {
                    self.log.moved(&user, &device, cursor);
                }
            }
            if last_check.elapsed() >= tick {
                last_check = tokio::time::Instant::now();
                self.maybe_snapshot().await;
            }
        }
    }

    /// Write what accumulated; false if the broker refused (kept for the
    /// next try, registrations told).
    async fn flush(&self) -> bool {
        let (entries, waiters) = self.log.take();
        if entries.is_empty() {
            for w in waiters {
                let _ = w.send(Ok(()));
            }
            return true;
        }
        let mut result = Ok(());
        let mut unsent = Vec::new();
        let mut chunks = entries.chunks(MAX_ENTRIES);
        for chunk in chunks.by_ref() {
            if let Err(e) = self.write(chunk.to_vec(), None).await {
                unsent.extend_from_slice(chunk);
                result = Err(e);
                break;
            }
        }
        for chunk in chunks {
            unsent.extend_from_slice(chunk);
        }
        let ok = result.is_ok();
        if !ok {
            self.log.put_back(unsent);
        }
        self.log.written();
        for w in waiters {
            let _ = w.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            });
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "rabbit: cursor batch not written; retrying");
        }
        ok
    }

    async fn write(
        &self,
        entries: Vec<CursorEntry>,
        snapshot: Option<SnapshotPart>,
    ) -> Result<(), StoreError> {
        self.publisher
            .write(
                |origin, at_ms| Record::Cursors {
                    origin,
                    at_ms,
                    entries,
                    snapshot,
                },
                None,
            )
            .await
            .map(|_| ())
    }

    /// Our turn: no complete snapshot in the stream for `snapshot_every`
    /// (plus a delay by node id).
    async fn maybe_snapshot(&self) {
        let every = i64::try_from(self.snapshot_every.as_millis()).unwrap_or(i64::MAX);
        let stagger = (every / 16).min(60_000) * i64::from(self.node_id % 16);
        let now = now_ms();
        let last = self.log.last_snapshot.load(Ordering::Acquire);
        if now.saturating_sub(last) < every.saturating_add(stagger) {
            return;
        }
        let expires = i64::try_from(self.device_expires.as_millis()).unwrap_or(i64::MAX);
        let seen_after = now.saturating_sub(expires);
        match self.snapshot(seen_after).await {
            Ok(n) => tracing::info!(cursors = n, "rabbit: cursor snapshot written"),
            Err(e) => tracing::warn!(error = %e, "rabbit: cursor snapshot failed; retrying later"),
        }
        let index = self.index.clone();
        let pruned =
            tokio::task::spawn_blocking(move || index.prune_cursors(seen_after, PRUNE_BATCH)).await;
        if let Ok(Ok(n)) = pruned {
            if n > 0 {
                tracing::info!(devices = n, "rabbit: expired device cursors pruned");
            }
        }
    }

    /// Write the whole cursor table (unexpired entries) in parts; how
    /// many cursors it held.
    async fn snapshot(&self, seen_after: i64) -> Result<usize, StoreError> {
        let id = u64::try_from(now_ms()).unwrap_or(0) ^ (u64::from(self.node_id) << 48);
        let mut after: Option<(String, String)> = None;
        let mut part = 0;
        let mut total = 0;
        loop {
            let index = self.index.clone();
            let from = after.clone();
            let (entries, more) = tokio::task::spawn_blocking(move || {
                let key = from.as_ref().map(|(u, d)| (u.as_str(), d.as_str()));
                index.cursors_after(key, seen_after, MAX_ENTRIES)
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("snapshot read failed: {e}")))??;
            let done = more.is_none();
            after = more;
            total += entries.len();
            if entries.is_empty() && !done {
                continue; // a page of expired entries only
            }
            self.write(
                entries,
                Some(SnapshotPart {
                    id,
                    part,
                    last: done,
                }),
            )
            .await?;
            part += 1;
            if done {
                return Ok(total);
            }
        }
    }
}
