//! The records of the store's streams (JSON, one per AMQP message).
//!
//! Every change to the store is a record, so any node can rebuild the
//! whole state (messages, recalls, groups, settings, dedupe keys, device
//! cursors) by reading the streams, and all nodes reach the same state
//! because they apply the same records in the same (per-stream) order.
//! [`Record::stream_key`] says which stream a record goes to: history to
//! the log, groups and settings to the state stream, cursors and
//! announcements to the control stream (which expires).

use imgate_core::model::Message;
use imgate_core::store::{Group, ImportMessage};
use serde::{Deserialize, Serialize};

/// Who wrote a record: the writing process (a random-ish id taken at
/// start) and a token unique within it, so the writer can find the result
/// of applying its own record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub boot: u64,
    pub token: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A new message. `message.message_id` is the writer's provisional id
    /// (its token); the indexer assigns the final id (see `index.rs`).
    Message {
        origin: Origin,
        message: Box<Message>,
        recipients: Vec<String>,
        #[serde(default)]
        sender_device: Option<String>,
    },
    Recall {
        origin: Origin,
        message_id: u64,
    },
    /// The writer of the message with provisional id `provisional` got a
    /// nack (the broker could not store it): the message is taken
    /// back everywhere, as if never stored, and its sender is told so.
    Withdraw {
        origin: Origin,
        provisional: u64,
    },
    PutGroup {
        origin: Origin,
        group: Group,
    },
    DeleteGroup {
        origin: Origin,
        group_id: String,
    },
    /// A cluster-wide setting (e.g. the policy); the last one wins.
    PutSetting {
        origin: Origin,
        key: String,
        value: String,
    },
    /// A user read a conversation (its history key) up to `upto` (0: its
    /// newest message when the record is applied). In the log, so every
    /// node applies it in the same order as the messages it counts.
    MarkRead {
        origin: Origin,
        user: String,
        key: String,
        upto: u64,
    },
    /// Messages from another system (migration, `Store::import`): every
    /// indexer places them the same way (same order, same free ids).
    Import {
        origin: Origin,
        items: Vec<ImportMessage>,
    },
    /// A transient cluster event (`Store::announce`): delivered to every
    /// node's watchers as it is read, never kept in the index.
    Announce {
        origin: Origin,
        topic: String,
        payload: String,
        /// Writer's clock (ms): a node reading it much later (replay after
        /// a restart) ignores it.
        at_ms: i64,
    },
    /// Written by a node when it starts, to each stream: once its
    /// indexer reads it back, the node has seen everything written to
    /// that stream before its start.
    Marker {
        origin: Origin,
        /// The stream's routing key (a marker goes where it says).
        #[serde(default = "log_key")]
        stream: String,
    },
    /// Device cursors, batched (control stream). `snapshot` marks a full
    /// copy of a node's cursor table, written now and then so that a node
    /// reading the control stream after older records expired still
    /// learns every cursor (see `cursor_log`).
    Cursors {
        origin: Origin,
        at_ms: i64,
        entries: Vec<CursorEntry>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<SnapshotPart>,
    },
}

/// One device's cursor in a [`Record::Cursors`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorEntry {
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "d")]
    pub device: String,
    /// Every message for this device up to this id is acked.
    #[serde(rename = "c")]
    pub cursor: u64,
    /// When the device was last seen (writer's clock, ms).
    #[serde(rename = "s")]
    pub seen_ms: i64,
    /// A new device's first cursor: applied only if none is known (a
    /// move is applied as a maximum).
    #[serde(rename = "r", default, skip_serializing_if = "std::ops::Not::not")]
    pub register: bool,
    /// A forgotten (expired) device starting over: applied as a move, but
    /// like a registration it acks nothing.
    #[serde(rename = "x", default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

impl CursorEntry {
    /// Whether this entry comes from acks (a registration or a reset
    /// moves the cursor without the device having acked anything).
    pub fn is_ack(&self) -> bool {
        !(self.register || self.reset)
    }
}

/// Where a record stands in a snapshot: part `part`, `last` on the final
/// one (a snapshot is complete once its last part is in the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart {
    pub id: u64,
    pub part: u32,
    pub last: bool,
}

fn log_key() -> String {
    super::topology::LOG_KEY.to_string()
}

impl Record {
    pub fn origin(&self) -> Origin {
        match self {
            Record::Message { origin, .. }
            | Record::Recall { origin, .. }
            | Record::Withdraw { origin, .. }
            | Record::PutGroup { origin, .. }
            | Record::DeleteGroup { origin, .. }
            | Record::PutSetting { origin, .. }
            | Record::Announce { origin, .. }
            | Record::Import { origin, .. }
            | Record::MarkRead { origin, .. }
            | Record::Cursors { origin, .. }
            | Record::Marker { origin, .. } => *origin,
        }
    }

    /// The routing key of the stream this record belongs to.
    pub fn stream_key(&self) -> &str {
        use super::topology::{CONTROL_KEY, LOG_KEY, STATE_KEY};
        match self {
            Record::Message { .. }
            | Record::Recall { .. }
            | Record::Withdraw { .. }
            | Record::MarkRead { .. }
            | Record::Import { .. } => LOG_KEY,
            Record::PutGroup { .. } | Record::DeleteGroup { .. } | Record::PutSetting { .. } => {
                STATE_KEY
            }
            Record::Announce { .. } | Record::Cursors { .. } => CONTROL_KEY,
            Record::Marker { stream, .. } => match stream.as_str() {
                STATE_KEY => STATE_KEY,
                CONTROL_KEY => CONTROL_KEY,
                _ => LOG_KEY,
            },
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    #[cfg(test)]
    pub fn decode(bytes: &[u8]) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The records of one stream message: one record, or a JSON array of
    /// them (the publisher batches; see `publisher.rs`).
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Record>, serde_json::Error> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => serde_json::from_slice(bytes),
            _ => Ok(vec![serde_json::from_slice(bytes)?]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgate_core::model::{Conversation, MessagePayload};

    #[test]
    fn records_round_trip() {
        let r = Record::Message {
            origin: Origin { boot: 1, token: 2 },
            message: Box::new(Message {
                message_id: 2,
                sender: "a".into(),
                conversation: Conversation::private("b"),
                payload: MessagePayload::text("hi"),
                server_ts: 5,
                client_msg_id: "c".into(),
                to_users: vec![],
            }),
            recipients: vec!["a".into(), "b".into()],
            sender_device: Some("p".into()),
        };
        let back = Record::decode(&r.encode().unwrap()).unwrap();
        assert_eq!(back.origin(), Origin { boot: 1, token: 2 });
        assert_eq!(back.stream_key(), "log");
        let c = Record::Cursors {
            origin: Origin { boot: 1, token: 3 },
            at_ms: 9,
            entries: vec![CursorEntry {
                user: "b".into(),
                device: "p".into(),
                cursor: 7,
                seen_ms: 9,
                register: false,
                reset: false,
            }],
            snapshot: None,
        };
        let text = String::from_utf8(c.encode().unwrap()).unwrap();
        assert!(text.contains(r#"{"u":"b","d":"p","c":7,"s":9}"#), "{text}");
        assert_eq!(
            Record::decode(text.as_bytes()).unwrap().stream_key(),
            "control"
        );
        // A marker of the first format (no stream) is a log marker.
        let old = br#"{"kind":"marker","origin":{"boot":1,"token":4}}"#;
        assert_eq!(Record::decode(old).unwrap().stream_key(), "log");
        assert!(Record::decode(b"{\"kind\":\"nope\"}").is_err());
        let one = r.encode().unwrap();
        let mut two = b"[".to_vec();
        two.extend_from_slice(&one);
        two.push(b',');
        two.extend_from_slice(&one);
        two.push(b']');
        assert_eq!(Record::decode_all(&one).unwrap().len(), 1);
        assert_eq!(Record::decode_all(&two).unwrap().len(), 2);
        assert!(Record::decode_all(b"[{\"kind\":\"nope\"}]").is_err());
    }
}
