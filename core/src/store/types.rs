//! Values passed to and from a [`super::Store`].

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{Conversation, Message, MessagePayload};

/// A message accepted by the pipeline, not yet stored (no id yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub sender: String,
    /// The sending device: it does not get its own message delivered.
    pub sender_device: Option<String>,
    pub conversation: Conversation,
    pub payload: MessagePayload,
    /// Empty = no idempotency key.
    pub client_msg_id: String,
    pub to_users: Vec<String>,
    /// Every user whose devices receive the message (the sender included
    /// for multi-device sync), resolved by the pipeline.
    pub recipients: Vec<String>,
}

/// The outcome of an append.
#[derive(Debug, Clone)]
pub struct Appended {
    pub message: Arc<Message>,
    /// True when `(sender, client_msg_id)` was seen within the window and
    /// nothing new was stored.
    pub duplicate: bool,
}

/// A page of messages, ascending (sync) or descending (history).
#[derive(Debug, Clone, Default)]
pub struct SyncPage {
    pub messages: Vec<Arc<Message>>,
    pub has_more: bool,
}

/// A group conversation's membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub members: BTreeSet<String>,
}

/// What a recall removed: the message and the users it had gone to (None
/// if no such message).
pub type Recalled = Option<(Arc<Message>, Vec<String>)>;
