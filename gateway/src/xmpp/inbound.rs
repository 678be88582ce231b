//! Client `<message>` and `<presence>` stanzas.
//!
//! A message with content goes through the pipeline (pipelined: see
//! `session`) (its stanza `id` is
//! the `client_msg_id`, so a resend is idempotent); a rejection comes back
//! as a `type='error'` message with the DESIGN §4 code in its text. A
//! XEP-0184 `<received id='messageUid'/>` is the recipient's delivery ack
//! (`Store::ack`); the ack, like any other, becomes the sender's receipt
//! with the id the sender used, on whatever node the sender's message is
//! waiting (see `receipts`). A receipt counts only from a recipient of
//! the message (`AppState::ack_claimed`): any other is dropped (no ack,
//! no receipt for the sender) and, on a message with nothing else in it,
//! answered with an `<item-not-found/>` error (code 253). Presence goes
//! to the user's own other resources; a MUC-style join of a group is
//! answered with the self presence so MUC clients consider themselves
//! joined.

use imgate_codecs::xmpp::{ns, Element, Jid};
use imgate_core::pipeline::SendCommand;
use imgate_core::{ErrorCode, ImError};

use super::errors::{error_element, error_reply};
use super::session::Session;

/// The MUC user namespace (XEP-0045), for the join answer.
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC: &str = "http://jabber.org/protocol/muc";

impl Session {
    /// A client `<message>`: its receipt (if any) is applied at once; the
    /// message itself goes into the window, content through the pipeline,
    /// so that its error reply and its count in `h` come in stanza order.
    pub(super) async fn start_message(&mut self, el: Element) {
        let refused_receipt = match el.get_child("received", ns::RECEIPTS) {
            Some(received) => self.handle_receipt(received).await,
            None => None,
        };
        match self
            .ctx
            .normalizer
            .message_to_draft(&el, &self.principal.user_id)
        {
            Ok(Some(draft)) => {
                // A private message's receipt goes back to its sender:
                // remember what it needs (`receipts::PendingReceipts`).
                let recipient =
                    (draft.conversation.kind == 0).then(|| draft.conversation.target.clone());
                let sender = draft.sender.clone();
                let pipelined = self.state.send_owned(SendCommand {
                    principal: self.principal.clone(),
                    draft,
                });
                let jid = self.jid.clone();
                let ctx = self.ctx.clone();
                self.window.push(async move {
                    match pipelined.await {
                        Ok(ack) => {
                            if let Some(recipient) = recipient {
                                ctx.receipts.record(
                                    ack.message_id,
                                    &sender,
                                    &recipient,
                                    &ack.client_msg_id,
                                );
                            }
                            None
                        }
                        Err(e) => Some(error_reply(&el, &jid, error_element(&e))),
                    }
                });
            }
            // No content (a receipt, a chat state): nothing to store; a
            // refused receipt is the stanza's error.
            Ok(None) => {
                let reply = refused_receipt.map(|e| error_reply(&el, &self.jid, error_element(&e)));
                self.window.push(async move { reply });
            }
            Err(e) => {
                let reply = error_reply(&el, &self.jid, error_element(&e));
                self.window.push(async move { Some(reply) });
            }
        }
    }

    /// The recipient's receipt: ack it. The sender's receipt comes from
    /// the ack, on this node or, through the delivery cursor, on the node
    /// that sent the message (see `receipts`). The refusal if the user is
    /// not a recipient of that message (nothing acked).
    async fn handle_receipt(&mut self, received: &Element) -> Option<ImError> {
        // Not a message id: a receipt for another kind of stanza, ignored.
        let id = received.get_attr("id")?.parse::<u64>().ok()?;
        let (user, device) = (&self.principal.user_id, &self.principal.device_id);
        match self.state.ack_claimed(user, device, id).await {
            Ok(true) => None,
            Ok(false) => {
                tracing::debug!(%user, %device, message_id = id, "xmpp: receipt for a message not delivered to this user refused");
                Some(ImError::new(
                    ErrorCode::NotExist,
                    format!("no message {id} for {user}"),
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "xmpp: storing a delivery ack failed; it will be redelivered");
                None
            }
        }
    }

    pub(super) async fn handle_presence(&mut self, el: &Element) -> bool {
        if let Some(to) = el.get_attr("to").and_then(Jid::parse) {
            if to.domain == self.ctx.normalizer.group_domain() && el.get_child("x", MUC).is_some() {
                return self.answer_group_join(&to).await;
            }
            // Subscriptions and directed presence: no roster here.
            return true;
        }
        match el.get_attr("type") {
            None => {
                let first = !self.available;
                self.available = true;
                self.ctx.router.set_available(&self.route, true);
                self.broadcast_presence(true);
                if first {
                    return self.send_own_resources().await;
                }
                true
            }
            Some("unavailable") => {
                self.available = false;
                self.ctx.router.set_available(&self.route, false);
                self.broadcast_presence(false);
                true
            }
            Some(_) => true,
        }
    }

    /// Tell the user's other sessions this resource came or went.
    pub(super) fn broadcast_presence(&self, available: bool) {
        let from = self.jid.clone();
        let user = self.principal.user_id.clone();
        let domain = self.domain();
        self.ctx
            .router
            .send_to_user(&user, Some(&self.route), |resource| {
                let p = Element::new("presence", ns::CLIENT)
                    .attr("from", from.clone())
                    .attr("to", format!("{user}@{domain}/{resource}"));
                if available {
                    p
                } else {
                    p.attr("type", "unavailable")
                }
            });
    }

    /// The presence of the user's other available resources, to this one.
    async fn send_own_resources(&mut self) -> bool {
        let user = self.principal.user_id.clone();
        let domain = self.domain();
        for resource in self.ctx.router.available_resources(&user, &self.route) {
            let p = Element::new("presence", ns::CLIENT)
                .attr("from", format!("{user}@{domain}/{resource}"))
                .attr("to", self.jid.clone());
            if !self.send_stanza(&p, None).await {
                return false;
            }
        }
        true
    }

    /// A MUC join of `group@groups.domain/nick`: members get the self
    /// presence (status 110); others a `<forbidden/>` presence error.
    async fn answer_group_join(&mut self, room: &Jid) -> bool {
        let group_id = room.local.clone().unwrap_or_default();
        let member = matches!(
            self.state.store.group(&group_id).await,
            Ok(Some(g)) if g.members.contains(&self.principal.user_id)
        );
        let from = format!("{}/{}", room.bare(), self.principal.user_id);
        let reply = if member {
            Element::new("presence", ns::CLIENT)
                .attr("from", from)
                .attr("to", self.jid.clone())
                .child(
                    Element::new("x", MUC_USER)
                        .child(
                            Element::new("item", MUC_USER)
                                .attr("affiliation", "member")
                                .attr("role", "participant"),
                        )
                        .child(Element::new("status", MUC_USER).attr("code", "110")),
                )
        } else {
            Element::new("presence", ns::CLIENT)
                .attr("from", from)
                .attr("to", self.jid.clone())
                .attr("type", "error")
                .child(super::errors::condition_element(
                    "forbidden",
                    "auth",
                    "9 not in group",
                ))
        };
        self.send_stanza(&reply, None).await
    }
}
