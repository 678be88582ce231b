//! The JSON shapes of DESIGN §5.5, shared by HTTP, SSE, MQTT and webhooks.

use serde::{Deserialize, Serialize};

use super::{Conversation, Message, MessagePayload};

/// A send request: `{"conv":{...},"payload":{...},"clientMsgId":"...","toUsers":[]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequestJson {
    pub conv: Conversation,
    #[serde(default)]
    pub payload: MessagePayload,
    #[serde(rename = "clientMsgId", default)]
    pub client_msg_id: String,
    #[serde(rename = "toUsers", default)]
    pub to_users: Vec<String>,
}

/// A message as clients see it. `messageUidStr` carries the id as a string
/// for JavaScript, whose numbers lose precision above 2^53.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageJson {
    #[serde(rename = "messageUid")]
    pub message_uid: u64,
    #[serde(rename = "messageUidStr")]
    pub message_uid_str: String,
    pub sender: String,
    pub conv: Conversation,
    pub payload: MessagePayload,
    pub timestamp: i64,
    #[serde(rename = "clientMsgId")]
    pub client_msg_id: String,
    #[serde(rename = "toUsers")]
    pub to_users: Vec<String>,
}

impl MessageJson {
    /// The message as stored (conversation as the sender addressed it).
    pub fn from_message(m: &Message) -> Self {
        MessageJson {
            message_uid: m.message_id,
            message_uid_str: m.message_id.to_string(),
            sender: m.sender.clone(),
            conv: m.conversation.clone(),
            payload: m.payload.clone(),
            timestamp: m.server_ts,
            client_msg_id: m.client_msg_id.clone(),
            to_users: m.to_users.clone(),
        }
    }

    pub fn into_message(self) -> Message {
        Message {
            message_id: self.message_uid,
            sender: self.sender,
            conversation: self.conv,
            payload: self.payload,
            server_ts: self.timestamp,
            client_msg_id: self.client_msg_id,
            to_users: self.to_users,
        }
    }
}

/// A send result: `{"clientMsgId","code","messageUid","timestamp"}` (HTTP
/// `result`, MQTT `im/ack/<clientId>`). `msg` explains a non-zero code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResultJson {
    #[serde(rename = "clientMsgId")]
    pub client_msg_id: String,
    pub code: i32,
    #[serde(rename = "messageUid")]
    pub message_uid: u64,
    #[serde(rename = "messageUidStr")]
    pub message_uid_str: String,
    pub timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub msg: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_json_has_contract_keys_and_round_trips() {
        let m = Message {
            message_id: (1u64 << 60) + 3,
            sender: "alice".into(),
            conversation: Conversation::private("bob"),
            payload: MessagePayload::text("hi"),
            server_ts: 1_700_000_000_000,
            client_msg_id: "c1".into(),
            to_users: vec![],
        };
        let v = serde_json::to_value(MessageJson::from_message(&m)).unwrap();
        assert_eq!(v["messageUidStr"], m.message_id.to_string());
        assert_eq!(v["conv"]["target"], "bob");
        assert_eq!(v["payload"]["searchableContent"], "hi");
        assert_eq!(v["timestamp"], 1_700_000_000_000i64);
        let back: MessageJson = serde_json::from_value(v).unwrap();
        assert_eq!(back.into_message(), m);
    }

    #[test]
    fn send_request_parses_with_defaults() {
        let r: SendRequestJson = serde_json::from_str(
            r#"{"conv":{"type":0,"target":"bob"},"payload":{"type":1,"searchableContent":"x"}}"#,
        )
        .unwrap();
        assert_eq!(r.conv.line, 0);
        assert!(r.client_msg_id.is_empty());
        assert_eq!(r.payload.searchable_content, "x");
    }
}
