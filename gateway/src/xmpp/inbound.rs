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
//! the message (`SessionCtx::ack_claimed`): any other is dropped (no ack,
//! no receipt for the sender) and, on a message with nothing else in it,
//! answered with an `<item-not-found/>` error (code 253). What a message
//! is (content, correction, reaction, retraction, marker, chat state) is
//! `extensions::classify`'s answer; the non-content kinds live in
//! `references` and `chat_markers`. Presence goes to the user's own other
//! resources and contacts (`roster`); presence to a room is `muc`'s.

use imgate_codecs::xmpp::extensions::{classify, Classified};
use imgate_codecs::xmpp::{ns, Element};
use imgate_core::{ErrorCode, ImError};

use super::errors::{error_element, error_reply};
use super::routing::Addressee;
use super::session::{reply_entry, Entry, Session};

impl Session {
    /// A client `<message>`: its receipt (if any) is applied at once; the
    /// message itself goes into the window, content through the pipeline,
    /// so that its error reply and its count in `h` come in stanza order.
    pub(super) async fn start_message(&mut self, el: Element) {
        let refused_receipt = match el.get_child("received", ns::RECEIPTS) {
            Some(received) => self.handle_receipt(received).await,
            None => None,
        };
        match classify(&el) {
            Classified::Content { replaces } => {
                self.start_content(el, replaces.as_deref()).await;
            }
            Classified::Reaction { id, reactions } => self.start_reaction(el, id, reactions).await,
            Classified::Retraction { id } => self.start_retraction(el, id).await,
            Classified::Marker { kind, id } => self.start_marker(el, kind, id).await,
            Classified::Transient => self.start_transient(el).await,
            // A receipt alone: nothing more; a refused receipt is the
            // stanza's error.
            Classified::Nothing => match refused_receipt {
                Some(e) => self.push_error(&el, &e),
                None => self.push_entry(async { None }),
            },
        }
    }

    /// A message with content: through the pipeline (a correction as an
    /// `EDIT` of the message it names). A group message is reflected to
    /// the sending resource once stored, as a MUC room does (XEP-0045
    /// §7.4), with the client's own id.
    async fn start_content(&mut self, el: Element, replaces: Option<&str>) {
        let Some(replaces) = replaces else {
            let entry = self.plain_content_entry(el);
            return self.set_entry(entry);
        };
        let draft = match self
            .ctx
            .normalizer
            .message_to_draft(&el, &self.principal.user_id)
        {
            Ok(Some(draft)) => draft,
            Ok(None) => return self.push_entry(async { None }),
            Err(e) => return self.push_error(&el, &e),
        };
        let draft = self.as_correction(draft, replaces).await;
        self.send_draft(el, draft, true);
    }

    /// The entry of a message with content that names no other (the hot
    /// path: nothing to look up first, nothing boxed but the window's
    /// future).
    pub(super) fn plain_content_entry(&self, el: Element) -> Entry {
        match self
            .ctx
            .normalizer
            .message_to_draft(&el, &self.principal.user_id)
        {
            Ok(Some(draft)) => self.draft_entry(el, draft, true),
            Ok(None) => reply_entry(async { None }),
            Err(e) => {
                let reply = error_reply(&el, &self.jid, error_element(&e));
                reply_entry(async move { Some(reply) })
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
        match self.addressee_of(el) {
            Addressee::Room { group, nick } => {
                return self.handle_room_presence(el, &group, nick.as_deref()).await;
            }
            Addressee::Account { user } => return self.handle_subscription(el, &user).await,
            Addressee::Server => {}
            // Directed presence elsewhere: nothing to do.
            _ => return true,
        }
        if el.get_attr("to").is_some() && el.get_attr("type").is_some() {
            return true;
        }
        match el.get_attr("type") {
            None => {
                let first = !self.available;
                self.available = true;
                self.ctx.router.set_available(&self.route, true);
                if !self.share_presence(el).await {
                    return false;
                }
                if first {
                    if !self.send_own_resources().await {
                        return false;
                    }
                    self.announce_to_contacts(true).await;
                }
                true
            }
            Some("unavailable") => {
                self.available = false;
                self.ctx.router.set_available(&self.route, false);
                self.broadcast_presence(false);
                self.announce_to_contacts(false).await;
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

    /// An available presence as the client sent it (show, status, caps,
    /// avatar hash, ...) to all of the user's resources, this one included
    /// (RFC 6121 §4.2.2, §4.4.2).
    async fn share_presence(&mut self, el: &Element) -> bool {
        let user = self.principal.user_id.clone();
        let domain = self.domain();
        let mut shared = Element::new("presence", ns::CLIENT).attr("from", self.jid.clone());
        shared.children = el.children.clone();
        self.ctx
            .router
            .send_to_user(&user, Some(&self.route), |resource| {
                let mut p = shared.clone();
                p.set_attr("to", format!("{user}@{domain}/{resource}"));
                p
            });
        let mut own = shared;
        own.set_attr("to", self.jid.clone());
        self.send_stanza(&own, None)
    }

    /// The presence of the user's other available resources, to this one.
    async fn send_own_resources(&mut self) -> bool {
        let user = self.principal.user_id.clone();
        let domain = self.domain();
        for resource in self.ctx.router.available_resources(&user, &self.route) {
            let p = Element::new("presence", ns::CLIENT)
                .attr("from", format!("{user}@{domain}/{resource}"))
                .attr("to", self.jid.clone());
            self.send_stanza(&p, None);
        }
        true
    }
}
