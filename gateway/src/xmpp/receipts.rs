//! XEP-0184 receipts for XMPP senders, whatever protocol the recipient
//! acks in: every delivery ack of this node (PB DeliverAck, MQTT PUBACK on
//! the inbox, an XMPP receipt or `<a h>`; [`AppState::delivery_acks`])
//! of a private message becomes a `<received/>` for the sender's XMPP
//! sessions on this node. An XMPP recipient's own receipt is also
//! announced through the store (`Store::announce`), so the sender's
//! sessions on the other nodes get it too. Best effort, like the router:
//! the delivery ack itself is already in the store.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use imgate_codecs::xmpp::{ns, Element};
use imgate_core::{Message, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::XmppContext;
use crate::sessions::cluster::follow_topic;
use crate::state::{AppState, DeliveryAck};

/// The announcement topic of receipts.
const RECEIPT_TOPIC: &str = "xmpp-receipt";
/// Private messages of this node's XMPP senders remembered for receipts.
const RECENT_SENDS: usize = 16_384;

/// What a receipt needs of the private messages that this node's XMPP
/// sessions sent lately (sender, receipt id by message id, bounded, oldest
/// forgotten first), so that [`follow_acks`] answers their acks without a
/// store lookup per ack. A message not here (older, or sent elsewhere) is
/// looked up in the store as before.
#[derive(Default)]
pub struct RecentSends {
    inner: Mutex<RecentInner>,
}

#[derive(Default)]
struct RecentInner {
    by_id: HashMap<u64, (String, String)>,
    order: VecDeque<u64>,
}

impl RecentSends {
    /// `sender`'s private message `message_id` was stored; its sender
    /// knows it by `client_msg_id` (empty: by the message id).
    pub fn record(&self, message_id: u64, sender: &str, client_msg_id: &str) {
        let receipt_id = if client_msg_id.is_empty() {
            message_id.to_string()
        } else {
            client_msg_id.to_string()
        };
        let mut inner = lock(&self.inner);
        if inner
            .by_id
            .insert(message_id, (sender.to_string(), receipt_id))
            .is_some()
        {
            return;
        }
        inner.order.push_back(message_id);
        if inner.order.len() > RECENT_SENDS {
            if let Some(old) = inner.order.pop_front() {
                inner.by_id.remove(&old);
            }
        }
    }

    /// The sender and receipt id of `message_id`, if it is remembered.
    fn get(&self, message_id: u64) -> Option<(String, String)> {
        lock(&self.inner).by_id.get(&message_id).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A receipt for the sender of a message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    /// The user who sent the message and gets the receipt.
    pub sender: String,
    /// The full JID of the recipient's resource that acked it.
    pub from: String,
    /// The message's id.
    pub message_id: u64,
    /// The id the sender knows the message by (its stanza id, or the
    /// message id).
    pub receipt_id: String,
}

/// Hand `r` to the sender's sessions on this node.
fn deliver(ctx: &XmppContext, r: &Receipt) {
    let domain = ctx.normalizer.domain();
    ctx.router.send_to_user(&r.sender, None, |resource| {
        Element::new("message", ns::CLIENT)
            .attr("from", r.from.clone())
            .attr("to", format!("{}@{domain}/{resource}", r.sender))
            .attr("id", format!("rcpt-{}", r.message_id))
            .child(Element::new("received", ns::RECEIPTS).attr("id", r.receipt_id.clone()))
    });
}

/// Tell the other nodes about an XMPP recipient's receipt (this node's
/// sessions get it from the ack, see [`follow_acks`]).
pub fn announce(store: &Arc<dyn Store>, r: Receipt) {
    let Ok(payload) = serde_json::to_string(&r) else {
        return;
    };
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.announce(RECEIPT_TOPIC.to_string(), payload).await {
            tracing::debug!(error = %e, "receipt not announced to the other nodes");
        }
    });
}

/// The receipt for `ack`, if it acks someone else's private message.
async fn receipt_for(
    state: &AppState,
    ctx: &XmppContext,
    domain: &str,
    ack: &DeliveryAck,
) -> Option<Receipt> {
    if let Some((sender, receipt_id)) = ctx.recent_sends.get(ack.message_id) {
        return (sender != ack.user).then(|| Receipt {
            sender,
            from: format!("{}@{domain}/{}", ack.user, ack.device),
            message_id: ack.message_id,
            receipt_id,
        });
    }
    let original = state.store.get(ack.message_id).await.ok()??;
    if original.sender == ack.user || original.conversation.kind != 0 {
        return None;
    }
    Some(Receipt {
        receipt_id: receipt_id(&original),
        sender: original.sender.clone(),
        from: format!("{}@{domain}/{}", ack.user, ack.device),
        message_id: ack.message_id,
    })
}

/// The id the sender knows its message by: its stanza id (the client
/// message id), else the message id.
pub fn receipt_id(m: &Message) -> String {
    if m.client_msg_id.is_empty() {
        m.message_id.to_string()
    } else {
        m.client_msg_id.clone()
    }
}

/// Turn this node's delivery acks into receipts for senders connected
/// here, until the gateway stops.
pub async fn follow_acks(state: AppState, ctx: Arc<XmppContext>) {
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
        // Most nodes' acks have no XMPP sender here: skip the lookup.
        if ctx.router.is_empty() {
            continue;
        }
        if let Some(r) = receipt_for(&state, &ctx, &domain, &ack).await {
            deliver(&ctx, &r);
        }
    }
}

/// Deliver the other nodes' receipts here until the store closes (our
/// own were delivered when they were made).
pub async fn follow(store: Arc<dyn Store>, ctx: Arc<XmppContext>) {
    follow_topic(store, RECEIPT_TOPIC, |r: Receipt, local| {
        if !local {
            deliver(&ctx, &r);
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_sends_answer_with_the_senders_id_and_forget_the_oldest() {
        let r = RecentSends::default();
        r.record(1, "alice", "c1");
        r.record(2, "alice", "");
        assert_eq!(r.get(1), Some(("alice".into(), "c1".into())));
        assert_eq!(r.get(2), Some(("alice".into(), "2".into())));
        for id in 3..(RECENT_SENDS as u64 + 3) {
            r.record(id, "bob", "x");
        }
        assert_eq!(r.get(1), None, "the oldest is forgotten");
        assert_eq!(r.get(2), None);
        assert!(r.get(3).is_some());
        assert_eq!(lock(&r.inner).by_id.len(), RECENT_SENDS);
    }
}
