//! The records of the log stream (JSON, one per AMQP message).
//!
//! Every change to the store is a record, so any node can rebuild the
//! whole state (messages, recalls, groups, settings, dedupe keys) by reading the
//! stream from the start, and all nodes reach the same state because they
//! apply the same records in the same (stream) order.

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
    /// nack (a recipient's device queue was full): the message is taken
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
    /// Written by a node when it starts: once its indexer reads it back,
    /// the node has seen everything written before its start.
    Marker {
        origin: Origin,
    },
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
            | Record::Marker { origin } => *origin,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(bytes)
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
        assert!(Record::decode(b"{\"kind\":\"nope\"}").is_err());
    }
}
