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

/// A message from another system (migration), for `Store::import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportMessage {
    /// Its id in the system it comes from: the idempotency key.
    pub old_id: String,
    /// The message as it was; `server_ts` is its original time.
    /// `message_id` is ignored: the store assigns one.
    pub message: Message,
    /// Every user who can sync it and see it in history.
    pub recipients: Vec<String>,
}

/// Why an import refuses a message stamped before the id epoch.
pub const IMPORT_TOO_OLD: &str =
    "timestamp before 2024-01-01T00:00:00Z: message ids cannot express it";
/// Why an import refuses a live-only message (persist flag 0 or 4).
pub const IMPORT_LIVE_ONLY: &str =
    "persistFlag 0 and 4 are delivered live only, never kept: not history";
/// Why an import refuses a message whose millisecond has no id left.
pub const IMPORT_MS_FULL: &str = "4096 messages were already imported in this millisecond";

/// What became of one [`ImportMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub old_id: String,
    /// `(message_id, duplicate)`: the id it got, or had got when the same
    /// old id was imported before; or why it was refused.
    pub result: Result<(u64, bool), String>,
}

/// One conversation in a user's list (`Store::conversations`).
#[derive(Debug, Clone)]
pub struct ConversationSummary {
    /// As the user sees it: a private chat's target is the peer.
    pub conversation: Conversation,
    /// The newest message the user can still see in it (None when every
    /// one was recalled, expired or pruned).
    pub last_message: Option<Arc<Message>>,
    /// The newest message id the conversation had for the user (its
    /// place in the list, newest first).
    pub last_message_id: u64,
    /// The user's read position: messages up to this id are read.
    pub read_upto: u64,
    /// Messages with persist flag 3 from others after the read position.
    pub unread: u64,
}

/// A page of a user's conversations, newest activity first.
#[derive(Debug, Clone, Default)]
pub struct ConversationPage {
    pub conversations: Vec<ConversationSummary>,
    pub has_more: bool,
}

/// A conversation's read state after `Store::mark_read`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadState {
    pub read_upto: u64,
    pub unread: u64,
}

/// What one `Store::prune` pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Messages whose `expireDuration` passed.
    pub expired: usize,
    /// Messages older than the retention.
    pub aged_out: usize,
    /// More are due: call again.
    pub more: bool,
}
