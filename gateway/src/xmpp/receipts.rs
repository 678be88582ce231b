//! XEP-0184 receipts for XMPP senders, whatever protocol the recipient
//! acks in and whatever node it is on.
//!
//! The sending node remembers its XMPP senders' private messages awaiting
//! a receipt ([`PendingReceipts`]: sender and receipt id by recipient and
//! message id; bounded, oldest forgotten first). Two things answer them,
//! one `<received/>` per message to the sender's XMPP sessions on this
//! node, `from` the recipient's JID with the acking device as resource:
//!
//! - **This node's acks** ([`SessionShared::delivery_acks`](crate::sessions::ctx::SessionShared::delivery_acks): PB DeliverAck, MQTT
//!   PUBACK on the inbox, an XMPP receipt or `<a h>`), at once. A message
//!   not remembered here (older, or sent through another node) is looked
//!   up in the store, as its sender may be connected here now.
//! - **The other nodes' acks**, through the delivery cursors
//!   ([`Store::watch_cursors`](imgate_core::Store::watch_cursors)): a remote move of recipient R's device D to
//!   cursor C means D has every message for it with id ≤ C, so every
//!   pending message to R with an id ≤ C (ids are time-ordered) is
//!   answered. Cursors travel batched with the store's own bookkeeping
//!   (about every 100 ms on RabbitMQ), so receipts cost no control traffic
//!   of their own. Only a shared store reports remote moves; on the
//!   embedded store the first path is all there is.
//!
//! An answered message is forgotten, and remembered as answered (bounded)
//! so that a second device's ack, on this node or as a cursor, gives no
//! second receipt here. Best effort, like the router: the delivery ack
//! itself is already in the store. Limits: a receipt is lost if the
//! sender's node restarts or forgets the message before the ack; a
//! sender connected to several nodes may hear once per node. A cursor a
//! device gets without acking (a device the store sees for the first
//! time, or again after it expired, starts at "now") is not reported by
//! the store as a move, so it answers nothing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use imgate_codecs::xmpp::{ns, Element};
use imgate_core::store::CursorMoved;
use imgate_core::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use super::XmppContext;
use crate::sessions::ctx::{DeliveryAck, SessionCtx};

/// Private messages of this node's XMPP senders awaiting a receipt.
const PENDING_MAX: usize = 16_384;
/// Answered message ids remembered against a second receipt.
const ANSWERED_MAX: usize = 16_384;

/// What a receipt needs of a message awaiting one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiting {
    sender: String,
    /// The id the sender knows the message by.
    receipt_id: String,
}

/// What [`PendingReceipts::take`] found.
#[derive(Debug, PartialEq, Eq)]
enum Taken {
    /// Waiting here: answer it.
    Waiting(Waiting),
    /// Answered already.
    Answered,
    /// Not waiting here (sent elsewhere, forgotten, or not a receipt's).
    Unknown,
}

/// This node's XMPP senders' private messages awaiting a receipt, by
/// recipient (see the module doc). Every operation is a few map
/// operations under one lock.
#[derive(Default)]
pub struct PendingReceipts {
    inner: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// Recipient → message id → what its receipt needs.
    by_recipient: HashMap<String, BTreeMap<u64, Waiting>>,
    /// Message id → recipient: the age order (ids are time-ordered).
    recipient_of: BTreeMap<u64, String>,
    answered: HashSet<u64>,
    answered_order: VecDeque<u64>,
}

impl Pending {
    fn mark_answered(&mut self, message_id: u64) {
        if !self.answered.insert(message_id) {
            return;
        }
        self.answered_order.push_back(message_id);
        if self.answered_order.len() > ANSWERED_MAX {
            if let Some(old) = self.answered_order.pop_front() {
                self.answered.remove(&old);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl PendingReceipts {
    /// `sender`'s private message `message_id` to `recipient` was stored;
    /// its sender knows it by `client_msg_id` (empty: by the message id).
    /// Nothing to wait for if it was answered already (a resend).
    pub fn record(&self, message_id: u64, sender: &str, recipient: &str, client_msg_id: &str) {
        if sender == recipient {
            return;
        }
        let receipt_id = if client_msg_id.is_empty() {
            message_id.to_string()
        } else {
            client_msg_id.to_string()
        };
        let mut p = lock(&self.inner);
        if p.answered.contains(&message_id) || p.recipient_of.contains_key(&message_id) {
            return;
        }
        p.recipient_of.insert(message_id, recipient.to_string());
        p.by_recipient
            .entry(recipient.to_string())
            .or_default()
            .insert(
                message_id,
                Waiting {
                    sender: sender.to_string(),
                    receipt_id,
                },
            );
        if p.recipient_of.len() > PENDING_MAX {
            if let Some((old, who)) = p.recipient_of.pop_first() {
                remove_waiting(&mut p.by_recipient, &who, old);
            }
        }
    }

    /// `recipient` acked `message_id` on this node (answered now if it
    /// was waiting here).
    fn take(&self, recipient: &str, message_id: u64) -> Taken {
        let mut p = lock(&self.inner);
        if p.answered.contains(&message_id) {
            return Taken::Answered;
        }
        match remove_waiting(&mut p.by_recipient, recipient, message_id) {
            Some(w) => {
                p.recipient_of.remove(&message_id);
                p.mark_answered(message_id);
                Taken::Waiting(w)
            }
            None => Taken::Unknown,
        }
    }

    /// Note a receipt made without waiting here (a store lookup); false if
    /// the message was answered already.
    fn answer(&self, message_id: u64) -> bool {
        let mut p = lock(&self.inner);
        if p.answered.contains(&message_id) {
            return false;
        }
        p.mark_answered(message_id);
        true
    }

    /// A device of `recipient` has everything up to `cursor`: the messages
    /// to it waiting here with ids ≤ `cursor`, oldest first (answered now).
    fn up_to(&self, recipient: &str, cursor: u64) -> Vec<(u64, Waiting)> {
        let mut p = lock(&self.inner);
        let Some(waiting) = p.by_recipient.get_mut(recipient) else {
            return Vec::new();
        };
        let done = match cursor.checked_add(1) {
            Some(after) => {
                let rest = waiting.split_off(&after);
                std::mem::replace(waiting, rest)
            }
            None => std::mem::take(waiting),
        };
        if waiting.is_empty() {
            p.by_recipient.remove(recipient);
        }
        for id in done.keys() {
            p.recipient_of.remove(id);
            p.mark_answered(*id);
        }
        done.into_iter().collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let p = lock(&self.inner);
        debug_assert_eq!(
            p.recipient_of.len(),
            p.by_recipient.values().map(BTreeMap::len).sum::<usize>()
        );
        p.recipient_of.len()
    }
}

fn remove_waiting(
    by_recipient: &mut HashMap<String, BTreeMap<u64, Waiting>>,
    recipient: &str,
    message_id: u64,
) -> Option<Waiting> {
    let waiting = by_recipient.get_mut(recipient)?;
    let w = waiting.remove(&message_id);
    if waiting.is_empty() {
        by_recipient.remove(recipient);
    }
    w
}

/// Hand a `<received/>` for `message_id` (known to its sender as
/// `receipt_id`) from `from` to the sender's sessions on this node.
fn deliver(ctx: &XmppContext, sender: &str, from: &str, message_id: u64, receipt_id: &str) {
    let domain = ctx.normalizer.domain();
    ctx.router.send_to_user(sender, None, |resource| {
        Element::new("message", ns::CLIENT)
            .attr("from", from.to_string())
            .attr("to", format!("{sender}@{domain}/{resource}"))
            .attr("id", format!("rcpt-{message_id}"))
            .child(Element::new("received", ns::RECEIPTS).attr("id", receipt_id.to_string()))
    });
}

/// The id the sender knows its message by: its stanza id (the client
/// message id), else the message id.
fn receipt_id(m: &Message) -> String {
    if m.client_msg_id.is_empty() {
        m.message_id.to_string()
    } else {
        m.client_msg_id.clone()
    }
}

/// One ack of this node: the receipt, if it acks someone else's private
/// message that is waiting here, or (with XMPP sessions here) one the
/// store knows and that was not answered yet.
async fn answer_ack(state: &SessionCtx, ctx: &XmppContext, domain: &str, ack: &DeliveryAck) {
    let from = || format!("{}@{domain}/{}", ack.user, ack.device);
    match ctx.receipts.take(&ack.user, ack.message_id) {
        Taken::Answered => {}
        Taken::Waiting(w) => deliver(ctx, &w.sender, &from(), ack.message_id, &w.receipt_id),
        // Most acks have no XMPP sender here: skip the lookup.
        Taken::Unknown if ctx.router.is_empty() => {}
        Taken::Unknown => {
            let Ok(Some(original)) = state.store.get(ack.message_id).await else {
                return;
            };
            // Only the peer's ack is a receipt (the acks of this node are
            // checked already: `SessionCtx::ack_claimed`; the sender's own
            // devices ack their copies too).
            let private = original.conversation.kind == 0;
            if !private || original.conversation.target != ack.user || original.sender == ack.user {
                return;
            }
            if ctx.receipts.answer(ack.message_id) {
                let id = receipt_id(&original);
                deliver(ctx, &original.sender, &from(), ack.message_id, &id);
            }
        }
    }
}

/// Turn this node's delivery acks into receipts for senders connected
/// here, until the gateway stops.
pub async fn follow_acks(state: SessionCtx, ctx: Arc<XmppContext>) {
    let mut rx = state.delivery_acks.subscribe();
    let domain = ctx.normalizer.domain().to_string();
    loop {
        let ack = match rx.recv().await {
            Ok(a) => a,
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(
                    missed = n,
                    "delivery acks lagged; some receipts were not sent"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        answer_ack(&state, &ctx, &domain, &ack).await;
    }
}

/// Turn the other nodes' cursor moves (`rx`, from
/// [`imgate_core::Store::watch_cursors`]) into receipts for the messages
/// waiting here, until the store closes. This node's own moves were
/// answered as acks ([`follow_acks`]).
pub async fn follow_cursors(mut rx: Receiver<Arc<CursorMoved>>, ctx: Arc<XmppContext>) {
    let domain = ctx.normalizer.domain().to_string();
    loop {
        let moved = match rx.recv().await {
            Ok(m) => m,
            Err(RecvError::Lagged(n)) => {
                // The next move of the same user's devices covers them.
                tracing::debug!(missed = n, "cursor moves lagged; some receipts come later");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if moved.local {
            continue;
        }
        let done = ctx.receipts.up_to(&moved.user, moved.cursor);
        if done.is_empty() {
            continue;
        }
        let from = format!("{}@{domain}/{}", moved.user, moved.device);
        for (message_id, w) in done {
            deliver(&ctx, &w.sender, &from, message_id, &w.receipt_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(sender: &str, id: &str) -> Waiting {
        Waiting {
            sender: sender.into(),
            receipt_id: id.into(),
        }
    }

    #[test]
    fn a_local_ack_answers_once_with_the_senders_id() {
        let r = PendingReceipts::default();
        r.record(1, "alice", "bob", "c1");
        r.record(2, "alice", "bob", "");
        r.record(3, "alice", "alice", "self");
        assert_eq!(r.len(), 2, "no receipt for a message to oneself");
        assert_eq!(r.take("carol", 1), Taken::Unknown, "someone else's ack");
        assert_eq!(r.take("bob", 1), Taken::Waiting(w("alice", "c1")));
        assert_eq!(r.take("bob", 1), Taken::Answered, "a second device's ack");
        assert_eq!(r.up_to("bob", 5), vec![(2, w("alice", "2"))]);
        assert_eq!(r.len(), 0);
        r.record(1, "alice", "bob", "c1");
        assert_eq!(
            r.len(),
            0,
            "a resend of an answered message waits for nothing"
        );
        assert!(r.answer(9));
        assert!(!r.answer(9));
    }

    #[test]
    fn a_cursor_answers_exactly_the_messages_up_to_it() {
        let r = PendingReceipts::default();
        for id in [10, 20, 30] {
            r.record(id, "alice", "bob", &format!("c{id}"));
        }
        r.record(15, "dave", "carol", "d");
        assert_eq!(r.up_to("bob", 5), vec![]);
        assert_eq!(
            r.up_to("bob", 20),
            vec![(10, w("alice", "c10")), (20, w("alice", "c20"))]
        );
        assert_eq!(r.up_to("bob", 20), vec![], "one receipt per message");
        assert_eq!(r.take("bob", 20), Taken::Answered);
        assert_eq!(r.up_to("bob", u64::MAX), vec![(30, w("alice", "c30"))]);
        assert_eq!(r.up_to("carol", 15), vec![(15, w("dave", "d"))]);
        assert_eq!(r.len(), 0);
        assert!(lock(&r.inner).by_recipient.is_empty());
    }

    #[test]
    fn bounded_oldest_forgotten_first() {
        let r = PendingReceipts::default();
        for id in 1..=(PENDING_MAX as u64 + 2) {
            r.record(id, "alice", &format!("u{}", id % 7), "x");
        }
        assert_eq!(r.len(), PENDING_MAX);
        assert_eq!(r.take("u1", 1), Taken::Unknown, "the oldest is forgotten");
        assert_eq!(r.take("u2", 2), Taken::Unknown);
        assert_eq!(r.take("u3", 3), Taken::Waiting(w("alice", "x")));
        for id in 0..(ANSWERED_MAX as u64 + 10) {
            r.answer(1_000_000 + id);
        }
        let p = lock(&r.inner);
        assert_eq!(p.answered.len(), ANSWERED_MAX);
        assert_eq!(p.answered_order.len(), ANSWERED_MAX);
    }
}
