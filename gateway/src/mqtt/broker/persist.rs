//! Durable broker state in `<data_dir>/mqtt.redb`, owned by the MQTT
//! module (the core `Store` has no generic key-value space): retained
//! messages and persistent sessions. The IM inbox is not kept here: the
//! core store owns it.
//!
//! A session is stored in pieces, so that a change costs what changed,
//! not the whole session: its settings and subscriptions (`sessions`,
//! JSON, rewritten when they change), each queued QoS ≥ 1 delivery as one
//! binary record under (session, sequence number) (`queued`: appended on
//! enqueue, deleted on the client's ack) and the packet id of the ones in
//! flight (`inflight`: a few bytes per send). Retained messages use the
//! same binary record. Earlier versions kept whole sessions and retained
//! messages as JSON; they are read as written and converted on open.
//!
//! Writes go through one writer thread ([`Writer`]) that does group
//! commit: every change submitted while a commit is running goes into the
//! next one, applied in submission order, with one fsync for them all. A
//! batch holding only acks and in-flight marks (whose loss at a crash
//! means a redelivery, never a loss) commits without its own fsync; the
//! next durable commit carries it.

use std::path::Path;
use std::sync::mpsc;

use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::message::{decode_any, encode_record, Delivery, StoredDelivery};

const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (session key, sequence number) → binary delivery record.
const QUEUED: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queued");
/// (session key, sequence number) → (packet id, PUBREC received).
const INFLIGHT: TableDefinition<(&str, u64), (u16, bool)> = TableDefinition::new("inflight");

/// A subscription as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSub {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub subscription_id: Option<u32>,
}

/// A persistent session's settings and subscriptions, as persisted (its
/// messages are rows of their own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSession {
    pub user: String,
    pub device: String,
    pub expiry_secs: u32,
    pub subs: Vec<StoredSub>,
    pub im_inbox: Option<(u8, Option<u32>)>,
    pub im_ack: Option<u8>,
}

/// The whole-session JSON of earlier versions: the settings with the
/// queue and the in-flight messages inline.
#[derive(Deserialize)]
struct LegacySession {
    #[serde(flatten)]
    session: StoredSession,
    #[serde(default)]
    queue: Vec<StoredDelivery>,
    /// (packet id, delivery, PUBREC received).
    #[serde(default)]
    inflight: Vec<(u16, StoredDelivery, bool)>,
}

/// The packet id of a message in flight, and whether PUBREC came.
pub type InflightMark = (u16, bool);

/// A session as loaded: settings, and its messages by sequence number
/// (with the mark of the ones in flight).
pub struct LoadedSession {
    pub session: StoredSession,
    pub messages: Vec<(u64, Delivery, Option<InflightMark>)>,
}

/// One change to write.
pub enum PersistOp {
    PutRetained(String, StoredDelivery),
    DeleteRetained(String),
    /// The settings and subscriptions of a session.
    PutSession(String, Box<StoredSession>),
    /// A session with all its messages.
    DeleteSession(String),
    /// Append a delivery to a session's queue.
    PutQueued(String, u64, Delivery),
    /// A delivery acked (or expired): its record and in-flight mark.
    DeleteQueued(String, u64),
    /// A queued delivery sent with a packet id (`true`: PUBREC came).
    PutInflight(String, u64, u16, bool),
}

impl PersistOp {
    /// Whether losing this change at a crash could lose a message (its
    /// commit must reach the disk before the caller goes on).
    fn needs_sync(&self) -> bool {
        !matches!(
            self,
            PersistOp::DeleteQueued(..) | PersistOp::PutInflight(_, _, _, false)
        )
    }
}

/// Everything `load` reads: retained messages and sessions by key.
pub type Loaded = (Vec<Delivery>, Vec<(String, LoadedSession)>);

pub struct BrokerDb {
    db: Database,
}

#[derive(Debug, thiserror::Error)]
#[error("mqtt.redb: {0}")]
pub struct PersistError(String);

fn err(e: impl std::fmt::Display) -> PersistError {
    PersistError(e.to_string())
}

/// All rows of one session in a (session, seq) table.
fn session_rows(key: &str) -> std::ops::RangeInclusive<(&str, u64)> {
    (key, 0)..=(key, u64::MAX)
}

impl BrokerDb {
    pub fn open(dir: &Path) -> Result<BrokerDb, PersistError> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let db = Database::create(dir.join("mqtt.redb")).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(RETAINED).map_err(err)?;
        tx.open_table(SESSIONS).map_err(err)?;
        tx.open_table(QUEUED).map_err(err)?;
        tx.open_table(INFLIGHT).map_err(err)?;
        tx.commit().map_err(err)?;
        let me = BrokerDb { db };
        me.convert_legacy()?;
        Ok(me)
    }

    /// Split the whole-session JSON of earlier versions into rows, and
    /// rewrite JSON retained messages as records (once, at open).
    fn convert_legacy(&self) -> Result<(), PersistError> {
        let tx = self.db.begin_write().map_err(err)?;
        let mut converted = 0usize;
        {
            let mut sessions = tx.open_table(SESSIONS).map_err(err)?;
            let mut queued = tx.open_table(QUEUED).map_err(err)?;
            let mut inflight = tx.open_table(INFLIGHT).map_err(err)?;
            let mut legacy = Vec::new();
            for row in sessions.iter().map_err(err)? {
                let (k, v) = row.map_err(err)?;
                if let Ok(l) = serde_json::from_slice::<LegacySession>(v.value()) {
                    if !l.queue.is_empty() || !l.inflight.is_empty() {
                        legacy.push((k.value().to_owned(), l));
                    }
                }
            }
            for (key, l) in legacy {
                let mut seq = 0u64;
                for (pkid, d, released) in l.inflight {
                    if let Some(d) = d.into_delivery() {
                        seq += 1;
                        queued
                            .insert((key.as_str(), seq), encode_record(&d).as_slice())
                            .map_err(err)?;
                        inflight
                            .insert((key.as_str(), seq), (pkid, released))
                            .map_err(err)?;
                    }
                }
                for d in l
                    .queue
                    .into_iter()
                    .filter_map(StoredDelivery::into_delivery)
                {
                    seq += 1;
                    queued
                        .insert((key.as_str(), seq), encode_record(&d).as_slice())
                        .map_err(err)?;
                }
                let v = serde_json::to_vec(&l.session).map_err(err)?;
                sessions.insert(key.as_str(), v.as_slice()).map_err(err)?;
                converted += 1;
            }
            let mut retained = tx.open_table(RETAINED).map_err(err)?;
            let mut old = Vec::new();
            for row in retained.iter().map_err(err)? {
                let (k, v) = row.map_err(err)?;
                if v.value().first() == Some(&b'{') {
                    if let Some(d) = decode_any(v.value()) {
                        old.push((k.value().to_owned(), encode_record(&d)));
                    }
                }
            }
            for (topic, rec) in &old {
                retained
                    .insert(topic.as_str(), rec.as_slice())
                    .map_err(err)?;
            }
            converted += old.len();
        }
        if converted > 0 {
            tracing::info!(
                entries = converted,
                "mqtt.redb: converted sessions and retained messages of an earlier version"
            );
        }
        tx.commit().map_err(err)
    }

    pub fn load(&self) -> Result<Loaded, PersistError> {
        let tx = self.db.begin_read().map_err(err)?;
        let mut retained = Vec::new();
        for row in tx.open_table(RETAINED).map_err(err)?.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            match decode_any(v.value()) {
                Some(d) => retained.push(d),
                None => tracing::warn!("mqtt.redb: skipping a corrupt retained message"),
            }
        }
        let queued = tx.open_table(QUEUED).map_err(err)?;
        let inflight = tx.open_table(INFLIGHT).map_err(err)?;
        let mut sessions = Vec::new();
        for row in tx.open_table(SESSIONS).map_err(err)?.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            let key = k.value().to_owned();
            let session = match serde_json::from_slice(v.value()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt.redb: skipping a corrupt session");
                    continue;
                }
            };
            let mut messages = Vec::new();
            for row in queued.range(session_rows(&key)).map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let seq = k.value().1;
                let Some(d) = decode_any(v.value()) else {
                    tracing::warn!("mqtt.redb: skipping a corrupt queued message");
                    continue;
                };
                let mark = inflight
                    .get((key.as_str(), seq))
                    .map_err(err)?
                    .map(|m| m.value());
                messages.push((seq, d, mark));
            }
            sessions.push((key, LoadedSession { session, messages }));
        }
        Ok((retained, sessions))
    }

    /// Write `ops` in one transaction; with `sync`, the commit (and every
    /// unsynced one before it) reaches the disk before this returns.
    pub fn apply(&self, ops: Vec<PersistOp>, sync: bool) -> Result<(), PersistError> {
        let mut tx = self.db.begin_write().map_err(err)?;
        if !sync {
            tx.set_durability(Durability::None);
        }
        {
            let mut retained = tx.open_table(RETAINED).map_err(err)?;
            let mut sessions = tx.open_table(SESSIONS).map_err(err)?;
            let mut queued = tx.open_table(QUEUED).map_err(err)?;
            let mut inflight = tx.open_table(INFLIGHT).map_err(err)?;
            for op in ops {
                match op {
                    PersistOp::PutRetained(topic, d) => {
                        if let Some(d) = d.into_delivery() {
                            let v = encode_record(&d);
                            retained.insert(topic.as_str(), v.as_slice()).map_err(err)?;
                        }
                    }
                    PersistOp::DeleteRetained(topic) => {
                        retained.remove(topic.as_str()).map_err(err)?;
                    }
                    PersistOp::PutSession(key, s) => {
                        let v = serde_json::to_vec(&s).map_err(err)?;
                        sessions.insert(key.as_str(), v.as_slice()).map_err(err)?;
                    }
                    PersistOp::DeleteSession(key) => {
                        sessions.remove(key.as_str()).map_err(err)?;
                        queued
                            .retain_in(session_rows(&key), |_, _| false)
                            .map_err(err)?;
                        inflight
                            .retain_in(session_rows(&key), |_, _| false)
                            .map_err(err)?;
                    }
                    PersistOp::PutQueued(key, seq, d) => {
                        let v = encode_record(&d);
                        queued
                            .insert((key.as_str(), seq), v.as_slice())
                            .map_err(err)?;
                    }
                    PersistOp::DeleteQueued(key, seq) => {
                        queued.remove((key.as_str(), seq)).map_err(err)?;
                        inflight.remove((key.as_str(), seq)).map_err(err)?;
                    }
                    PersistOp::PutInflight(key, seq, pkid, released) => {
                        inflight
                            .insert((key.as_str(), seq), (pkid, released))
                            .map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)
    }
}

/// A change submitted to the [`Writer`], with where to report the result.
struct Job {
    ops: Vec<PersistOp>,
    done: mpsc::SyncSender<Result<(), String>>,
}

/// The writer thread of `mqtt.redb` (see the module docs).
pub struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Dropping the writer finishes the submitted jobs and closes the file.
impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A submitted change; [`Pending::wait`] blocks until it is on disk.
pub struct Pending(mpsc::Receiver<Result<(), String>>);

impl Pending {
    pub fn wait(self) -> Result<(), PersistError> {
        match self.0.recv() {
            Ok(r) => r.map_err(PersistError),
            Err(_) => Err(PersistError("writer thread stopped".into())),
        }
    }
}

/// Most jobs in one commit, so one huge burst cannot delay everyone.
const MAX_JOBS_PER_COMMIT: usize = 1024;

/// Most commits in a row without an fsync: redb frees pages only at a
/// durable commit, so a long run of acks alone is synced now and then.
const MAX_UNSYNCED_COMMITS: usize = 64;

impl Writer {
    /// A writer whose thread is gone: every submission fails (tests of
    /// what a failed write does).
    #[cfg(test)]
    pub fn stopped() -> Writer {
        Writer {
            jobs: None,
            thread: None,
        }
    }

    pub fn start(db: BrokerDb) -> Result<Writer, PersistError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("mqtt-redb-writer".into())
            .spawn(move || {
                let mut unsynced = 0usize;
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_JOBS_PER_COMMIT {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    let mut dones = Vec::with_capacity(batch.len());
                    let mut ops = Vec::new();
                    for j in batch {
                        ops.extend(j.ops);
                        dones.push(j.done);
                    }
                    if ops.is_empty() {
                        for d in dones {
                            let _ = d.send(Ok(()));
                        }
                        continue;
                    }
                    let sync =
                        unsynced >= MAX_UNSYNCED_COMMITS || ops.iter().any(PersistOp::needs_sync);
                    let result = db.apply(ops, sync).map_err(|e| e.0);
                    unsynced = if sync { 0 } else { unsynced + 1 };
                    for d in dones {
                        let _ = d.send(result.clone());
                    }
                }
                // Closing: what was committed without an fsync goes to disk.
                if unsynced > 0 {
                    if let Err(e) = db.apply(vec![], true) {
                        tracing::warn!(error = %e, "mqtt.redb: final sync failed");
                    }
                }
            })
            .map_err(err)?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queue `ops` behind everything submitted before (call it while
    /// holding the lock that ordered the changes).
    pub fn submit(&self, ops: Vec<PersistOp>) -> Pending {
        let (done, rx) = mpsc::sync_channel(1);
        let job = Job { ops, done };
        let refused = match &self.jobs {
            Some(jobs) => jobs.send(job).err().map(|mpsc::SendError(j)| j),
            None => Some(job),
        };
        if let Some(job) = refused {
            let _ = job.done.send(Err("writer thread stopped".into()));
        }
        Pending(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_submissions_all_land_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::start(BrokerDb::open(dir.path()).unwrap()).unwrap();
        let session = |n: u32| StoredSession {
            user: "u".into(),
            device: "d".into(),
            expiry_secs: n,
            subs: vec![],
            im_inbox: None,
            im_ack: None,
        };
        let pending: Vec<Pending> = (1..=50)
            .map(|n| {
                writer.submit(vec![PersistOp::PutSession(
                    "k".into(),
                    Box::new(session(n)),
                )])
            })
            .collect();
        for p in pending {
            p.wait().unwrap();
        }
        drop(writer);
        let (_, sessions) = BrokerDb::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(
            sessions[0].1.session.expiry_secs, 50,
            "the last submission wins"
        );
    }
}
