//! Durable broker state in `<data_dir>/mqtt.redb`, owned by the MQTT
//! module (the core `Store` has no generic key-value space): retained
//! messages and persistent sessions (subscriptions, queued and in-flight
//! QoS ≥ 1 messages). Values are JSON. The IM inbox is not kept here: the
//! core store owns it.
//!
//! Writes go through one writer thread ([`Writer`]) that does group
//! commit: every change submitted while a commit is running goes into the
//! next one, applied in submission order, with one fsync for them all.

use std::path::Path;
use std::sync::mpsc;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::message::StoredDelivery;

const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

/// A subscription as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSub {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub subscription_id: Option<u32>,
}

/// A persistent session as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSession {
    pub user: String,
    pub device: String,
    pub expiry_secs: u32,
    pub subs: Vec<StoredSub>,
    pub im_inbox: Option<(u8, Option<u32>)>,
    pub im_ack: Option<u8>,
    pub queue: Vec<StoredDelivery>,
    /// (packet id, delivery, PUBREC received).
    pub inflight: Vec<(u16, StoredDelivery, bool)>,
}

/// One change to write.
pub enum PersistOp {
    PutRetained(String, StoredDelivery),
    DeleteRetained(String),
    PutSession(String, Box<StoredSession>),
    DeleteSession(String),
}

/// Everything `load` reads: retained messages and sessions by key.
pub type Loaded = (Vec<StoredDelivery>, Vec<(String, StoredSession)>);

pub struct BrokerDb {
    db: Database,
}

#[derive(Debug, thiserror::Error)]
#[error("mqtt.redb: {0}")]
pub struct PersistError(String);

fn err(e: impl std::fmt::Display) -> PersistError {
    PersistError(e.to_string())
}

impl BrokerDb {
    pub fn open(dir: &Path) -> Result<BrokerDb, PersistError> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let db = Database::create(dir.join("mqtt.redb")).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(RETAINED).map_err(err)?;
        tx.open_table(SESSIONS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(BrokerDb { db })
    }

    pub fn load(&self) -> Result<Loaded, PersistError> {
        let tx = self.db.begin_read().map_err(err)?;
        let mut retained = Vec::new();
        for row in tx.open_table(RETAINED).map_err(err)?.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            match serde_json::from_slice(v.value()) {
                Ok(d) => retained.push(d),
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt.redb: skipping a corrupt retained message")
                }
            }
        }
        let mut sessions = Vec::new();
        for row in tx.open_table(SESSIONS).map_err(err)?.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            match serde_json::from_slice(v.value()) {
                Ok(s) => sessions.push((k.value().to_owned(), s)),
                Err(e) => tracing::warn!(error = %e, "mqtt.redb: skipping a corrupt session"),
            }
        }
        Ok((retained, sessions))
    }

    pub fn apply(&self, ops: Vec<PersistOp>) -> Result<(), PersistError> {
        if ops.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut retained = tx.open_table(RETAINED).map_err(err)?;
            let mut sessions = tx.open_table(SESSIONS).map_err(err)?;
            for op in ops {
                match op {
                    PersistOp::PutRetained(topic, d) => {
                        let v = serde_json::to_vec(&d).map_err(err)?;
                        retained.insert(topic.as_str(), v.as_slice()).map_err(err)?;
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

impl Writer {
    pub fn start(db: BrokerDb) -> Result<Writer, PersistError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("mqtt-redb-writer".into())
            .spawn(move || {
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
                    let result = db.apply(ops).map_err(|e| e.0);
                    for d in dones {
                        let _ = d.send(result.clone());
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
            queue: vec![],
            inflight: vec![],
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
        assert_eq!(sessions[0].1.expiry_secs, 50, "the last submission wins");
    }
}
