//! XEP-0184 receipts for XMPP senders, whatever protocol the recipient
//! acks in: every delivery ack of this node (PB DeliverAck, MQTT PUBACK on
//! the inbox, an XMPP receipt or `<a h>`; [`AppState::delivery_acks`])
//! of a private message becomes a `<received/>` for the sender's XMPP
//! sessions on this node. An XMPP recipient's own receipt is also
//! announced through the store (`Store::announce`), so the sender's
//! sessions on the other nodes get it too. Best effort, like the router:
//! the delivery ack itself is already in the store.

use std::sync::Arc;

use imgate_codecs::xmpp::{ns, Element};
use imgate_core::{Message, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::XmppContext;
use crate::sessions::cluster::follow_topic;
use crate::state::{AppState, DeliveryAck};

/// The announcement topic of receipts.
const RECEIPT_TOPIC: &str = "xmpp-receipt";

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
async fn receipt_for(state: &AppState, domain: &str, ack: &DeliveryAck) -> Option<Receipt> {
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
        if let Some(r) = receipt_for(&state, &domain, &ack).await {
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
