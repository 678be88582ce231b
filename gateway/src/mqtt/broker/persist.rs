//! Durable broker state in `<data_dir>/mqtt.redb`, owned by the MQTT
//! module (the core `Store` has no generic key-value space): retained
//! messages and persistent sessions (subscriptions, queued and in-flight
//! QoS ≥ 1 messages). Values are JSON; every write is one redb commit
//! (fsync). The IM inbox is not kept here: the core store owns it.

use std::path::Path;

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
