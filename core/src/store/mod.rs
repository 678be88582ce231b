//! The `Store` trait: durable, idempotent append; per-device pending
//! deliveries and acks; per-user sync; conversation history; recall; groups.
//!
//! Every adapter (embedded redb, RabbitMQ) implements it and must pass the
//! same behavioral tests. Methods return boxed futures so the gateway can
//! hold an `Arc<dyn Store>` chosen at start-up.

mod feed;
mod in_flight;
mod types;

pub use feed::{CatchUp, CatchUpPage, DeviceFeed, Lag, UserFeed, UserFeedEnd};
pub use in_flight::{unacked_deliveries, InFlight};
pub use types::{
    Appended, ConversationPage, ConversationSummary, Group, ImportMessage, Imported, NewMessage,
    Pruned, ReadState, Recalled, SyncPage, IMPORT_LIVE_ONLY, IMPORT_MS_FULL, IMPORT_TOO_OLD,
};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::{Conversation, Message};

/// A boxed, sendable future (what `Store` methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a store operation failed. `Unavailable` means "try again later"
/// (broker down, disk full); both map to code 4 for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store corrupt or inconsistent: {0}")]
    Corrupt(String),
}

impl From<StoreError> for crate::ImError {
    fn from(e: StoreError) -> Self {
        crate::ImError::server(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Most conversations a list reads per user (the newest by activity).
pub const MAX_CONVERSATIONS: usize = 10_000;

/// Durable storage and delivery bookkeeping. See DESIGN §3 and §7, and
/// `docs/messages.md` for the message semantics.
///
/// Message semantics every store keeps alike: a message whose persist
/// flag is 0 or 4 ([`crate::MessagePayload::is_live_only`]) gets an id and
/// is fanned out to the recipients' attached devices, but is never
/// stored: sync, history, `get`, conversations and offline devices never
/// see it. A message whose `expireDuration` passed
/// ([`crate::Message::is_expired`]) is no longer delivered, synced or
/// listed, and [`Store::prune`] removes it.
pub trait Store: Send + Sync + 'static {
    /// Append durably (fsync / publisher confirm) and fan out to every
    /// recipient device. Idempotent on `(sender, client_msg_id)` within the
    /// dedupe window: a repeat returns the original message with
    /// `duplicate = true` and stores nothing. A live-only message (persist
    /// flag 0 or 4) is given an id and fanned out, not stored.
    fn append(&self, msg: NewMessage) -> BoxFuture<'_, StoreResult<Appended>>;

    /// [`Store::append`] in two steps, for callers that must keep the order
    /// of their appends (a session's pipelined sends): the outer future
    /// resolves once the message's place in the store's order is fixed
    /// (it gets an id after every append queued before it), the inner one
    /// once it is durable. A caller may start its next append as soon as
    /// the outer one resolved. The default queues nothing: the outer
    /// future resolves when the append is complete.
    fn append_queued(
        &self,
        msg: NewMessage,
    ) -> BoxFuture<'_, StoreResult<BoxFuture<'_, StoreResult<Appended>>>> {
        Box::pin(async move {
            let done = self.append(msg).await;
            let ready: BoxFuture<'_, StoreResult<Appended>> = Box::pin(std::future::ready(done));
            Ok(ready)
        })
    }

    /// Messages of `user` (sent or received) with id > `since`, ascending,
    /// at most `limit`, and whether more follow.
    fn sync<'a>(
        &'a self,
        user: &'a str,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<SyncPage>>;

    /// History of one conversation as seen by `user`, newest first, ids
    /// strictly below `before` (0 = from the newest).
    fn history<'a>(
        &'a self,
        user: &'a str,
        conversation: &'a Conversation,
        before: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<SyncPage>>;

    /// One message by id (None if unknown or recalled).
    fn get(&self, message_id: u64) -> BoxFuture<'_, StoreResult<Option<Arc<Message>>>>;

    /// One message by id if `user` is one of its recipients: a user whose
    /// timeline holds it (a private message's peer and sender, the group
    /// members it went to, its sender). None if unknown, recalled, or not
    /// `user`'s. What a client's claim "I received message X" (a PB
    /// DeliverAck, an XMPP receipt) is checked against.
    fn get_for<'a>(
        &'a self,
        message_id: u64,
        user: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Arc<Message>>>>;

    /// Remove a message from history and from pending deliveries. Returns
    /// the removed message and its recipients so the caller can notify them.
    fn recall(&self, message_id: u64) -> BoxFuture<'_, StoreResult<Recalled>>;

    /// The newest message id `user` can see (0 if none).
    fn last_message_id<'a>(&'a self, user: &'a str) -> BoxFuture<'a, StoreResult<u64>>;

    /// Register a device session: from now on it receives the user's new
    /// messages live, after the ones still pending for it (unacked).
    fn attach_device<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
    ) -> BoxFuture<'a, StoreResult<DeviceFeed>>;

    /// The device has the message: stop redelivering it.
    fn ack<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        message_id: u64,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Live messages of a user (for streams with their own cursor, like SSE).
    fn subscribe_user(&self, user: &str) -> UserFeed;

    /// A group by id.
    fn group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, StoreResult<Option<Group>>>;

    /// Groups with an id above `after` (by id), at most `limit`, and
    /// whether more follow (export).
    fn scan_groups<'a>(
        &'a self,
        after: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<(Vec<Group>, bool)>>;

    /// Create or replace a group durably.
    fn put_group(&self, group: Group) -> BoxFuture<'_, StoreResult<()>>;

    /// Delete a group (dismiss); true if it existed.
    fn delete_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, StoreResult<bool>>;

    /// The last value of a cluster-wide setting (e.g. the policy: word
    /// list, user statuses), if it was ever set.
    fn setting<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<String>>>;

    /// Set a cluster-wide setting durably. Every node's
    /// [`Store::watch_settings`] sees the change (this node's included).
    fn put_setting(&self, key: String, value: String) -> BoxFuture<'_, StoreResult<()>>;

    /// Setting changes as this node applies them, from any node.
    fn watch_settings(&self) -> broadcast::Receiver<SettingChange>;

    /// Tell every node, this one included, about a transient event (e.g.
    /// a login that must end older sessions on other nodes). Not kept: a
    /// node that is down, or reads it more than a minute late, does not
    /// see it. Every node sees announcements in the same order.
    fn announce(&self, topic: String, payload: String) -> BoxFuture<'_, StoreResult<()>>;

    /// Announcements as this node applies them, from any node.
    fn watch_announcements(&self) -> broadcast::Receiver<Arc<Announcement>>;

    /// Delivery cursors as they move: once a [`CursorMoved`] arrives,
    /// every message for that device with an id up to its `cursor` is
    /// acked (or was never for it). This node's moves come as its acks
    /// arrive (`local`); on a shared store the other nodes' moves follow a
    /// moment later, batched. Best effort for watchers (a lagging
    /// receiver misses moves); the cursors themselves are durable.
    fn watch_cursors(&self) -> broadcast::Receiver<Arc<CursorMoved>>;

    /// Migration: store messages from another system, with their original
    /// times, as history (sync and history show them; no device gets them
    /// as pending deliveries). Each gets an id in its own millisecond
    /// ([`crate::id::import_ids`]), so history stays in time order.
    /// Idempotent on `old_id`: one imported before answers with the id it
    /// got and `duplicate`.
    fn import(&self, batch: Vec<ImportMessage>) -> BoxFuture<'_, StoreResult<Vec<Imported>>>;

    /// Every stored message with id > `after`, ascending, at most `limit`
    /// (export).
    fn scan(&self, after: u64, limit: usize) -> BoxFuture<'_, StoreResult<SyncPage>>;

    /// The conversations of `user`, newest activity first: those whose
    /// last message id is below `before` (0 = from the newest), at most
    /// `limit`, with each one's last visible message, read position and
    /// unread count (persist flag 3 from others after the read position).
    fn conversations<'a>(
        &'a self,
        user: &'a str,
        before: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<ConversationPage>>;

    /// `user` read `conversation` (as `user` addresses it) up to message
    /// `upto` (0 = up to its newest message): the read position only moves
    /// forward, the unread count is recounted after it. Durable and, on a
    /// shared store, the same on every node. None if `user` has no such
    /// conversation.
    fn mark_read<'a>(
        &'a self,
        user: &'a str,
        conversation: &'a Conversation,
        upto: u64,
    ) -> BoxFuture<'a, StoreResult<Option<ReadState>>>;

    /// Maintenance: remove messages expired at `now` and, when
    /// `retention_ms` is set, messages older than `now - retention_ms`
    /// (history, sync, timelines, conversations), a bounded batch per
    /// call. The stores call it periodically themselves when configured;
    /// callers may run a pass at any time.
    fn prune(&self, now: i64, retention_ms: Option<i64>) -> BoxFuture<'_, StoreResult<Pruned>>;

    /// How many messages `user` sent on UTC day `day` ([`crate::utc_day`]
    /// of their `server_ts`), counted in the same transaction that stores
    /// each one: resends answered from dedupe and imports do not count,
    /// recalls do not give one back. The daily quota's counter: it
    /// survives restarts and, on a shared store, is the same on every
    /// node. Only today's and yesterday's counts are kept.
    fn sent_on_day<'a>(&'a self, user: &'a str, day: i64) -> BoxFuture<'a, StoreResult<u64>>;
}

/// A changed setting: its key and new value.
pub type SettingChange = (String, Arc<String>);

/// A device's delivery cursor moved (see [`Store::watch_cursors`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorMoved {
    pub user: String,
    pub device: String,
    pub cursor: u64,
    /// Moved by an ack on this node.
    pub local: bool,
}

/// Buffer of a store's cursor watchers.
pub const CURSOR_WATCH_BUFFER: usize = 4096;

/// A transient cluster event (see [`Store::announce`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub topic: String,
    pub payload: String,
    /// Made by this process (a node acts on the others' announcements and
    /// learns from its own that they went through).
    pub local: bool,
}
