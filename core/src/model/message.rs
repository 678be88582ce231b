//! `Message`: a stored, id-stamped message (DESIGN §2).

use serde::{Deserialize, Serialize};

use super::{Conversation, MessagePayload};

/// A message as stored and delivered. The internal serde form is compact;
/// the contract JSON shape lives in [`super::json::MessageJson`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message_id: u64,
    pub sender: String,
    pub conversation: Conversation,
    pub payload: MessagePayload,
    /// Server time in ms since the Unix epoch.
    pub server_ts: i64,
    pub client_msg_id: String,
    pub to_users: Vec<String>,
}
