//! The roster (RFC 6121 §2) and presence subscriptions (§3), the imgate
//! way: a user's contacts are the users they had private conversations
//! with in the last [`ROSTER_DAYS`] days (newest [`ROSTER_SCAN`] messages
//! at most), read from the store; nothing is kept besides the messages.
//! Every contact is `subscription='both'`: imgate has no consent step
//! (anyone may message anyone, the policy decides), so a client's
//! `subscribe` is approved at once, and presence flows between the
//! user's available resources and their contacts' (on any node, see
//! [`super::routing`]). Roster changes by the client (`set`) are refused
//! with `<not-allowed/>`: the roster follows the conversations.

use std::collections::BTreeSet;

use imgate_codecs::xmpp::{ns, Element};
use imgate_core::id::first_id_at;
use imgate_core::{now_ms, Store};

use std::sync::Arc;

use super::errors::{condition_element, error_reply};
use super::routing;
use super::session::Session;
use super::XmppContext;
use crate::sessions::SessionCtx;

/// How far back conversations make contacts.
pub const ROSTER_DAYS: i64 = 30;
/// Most messages read to find the contacts.
pub const ROSTER_SCAN: usize = 2000;
/// Most contacts listed.
pub const MAX_CONTACTS: usize = 500;
const PAGE: usize = 500;

/// The users `user` had private conversations with recently.
pub async fn contacts(store: &dyn Store, user: &str) -> BTreeSet<String> {
    let mut since = first_id_at(now_ms() - ROSTER_DAYS * 86_400_000);
    let mut found = BTreeSet::new();
    let mut read = 0;
    while read < ROSTER_SCAN && found.len() < MAX_CONTACTS {
        let page = match store.sync(user, since, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "xmpp: roster not read");
                break;
            }
        };
        read += page.messages.len();
        for m in &page.messages {
            if m.conversation.kind != 0 {
                continue;
            }
            let peer = if m.sender == user {
                &m.conversation.target
            } else {
                &m.sender
            };
            if peer != user && found.len() < MAX_CONTACTS {
                found.insert(peer.clone());
            }
        }
        match page.messages.last() {
            Some(last) if page.has_more => since = last.message_id,
            _ => break,
        }
    }
    found
}

impl Session {
    /// `<iq type='get'><query xmlns='jabber:iq:roster'/></iq>` and sets.
    pub(super) async fn handle_roster(&mut self, iq: &Element) -> bool {
        if iq.get_attr("type") != Some("get") {
            let err = condition_element(
                "not-allowed",
                "cancel",
                "248 the roster is the user's conversations",
            );
            return self.send_stanza(&error_reply(iq, &self.jid, err), None);
        }
        let mut query = Element::new("query", ns::ROSTER);
        for c in contacts(self.state.store.as_ref(), &self.principal.user_id).await {
            query = query.child(roster_item(&self.ctx.normalizer.user_jid(&c)));
        }
        let reply = Element::new("iq", ns::CLIENT)
            .attr("type", "result")
            .attr_opt("id", iq.get_attr("id"))
            .attr("to", self.jid.clone())
            .child(query);
        self.send_stanza(&reply, None)
    }

    /// Presence of type subscribe / unsubscribe / probe to `contact`.
    pub(super) async fn handle_subscription(&mut self, el: &Element, contact: &str) -> bool {
        if !self.route_budget.take() {
            return true;
        }
        let contact_jid = self.ctx.normalizer.user_jid(contact);
        match el.get_attr("type") {
            Some("subscribe") => {
                // Approved at once: a roster push, `subscribed`, then the
                // contact's current presence.
                let push = Element::new("iq", ns::CLIENT)
                    .attr("type", "set")
                    .attr("id", crate::xmpp::random_id())
                    .attr("to", self.jid.clone())
                    .child(Element::new("query", ns::ROSTER).child(roster_item(&contact_jid)));
                let subscribed = Element::new("presence", ns::CLIENT)
                    .attr("from", contact_jid)
                    .attr("to", self.ctx.normalizer.user_jid(&self.principal.user_id))
                    .attr("type", "subscribed");
                self.send_stanza(&push, None);
                self.send_stanza(&subscribed, None);
                self.probe(contact).await;
                true
            }
            Some("probe") => {
                self.probe(contact).await;
                true
            }
            // Directed presence to a contact (available or unavailable).
            None | Some("unavailable") => {
                let mut p = el.clone();
                p.set_attr("from", self.jid.clone());
                routing::route(self.state.store.as_ref(), &self.ctx, contact, None, p).await;
                true
            }
            // unsubscribe(d), subscribed: nothing changes (always both).
            Some(_) => true,
        }
    }

    /// Ask for `contact`'s presence: its available resources on this
    /// node answer at once; the probe is routed (announced on a cluster)
    /// so other nodes' sessions answer too (`routing::follow`).
    pub(super) async fn probe(&mut self, contact: &str) {
        let probe = Element::new("presence", ns::CLIENT)
            .attr("from", self.jid.clone())
            .attr("to", self.ctx.normalizer.user_jid(contact))
            .attr("type", "probe");
        routing::route(self.state.store.as_ref(), &self.ctx, contact, None, probe).await;
    }

    /// After initial presence: tell every contact, and probe them.
    pub(super) async fn announce_to_contacts(&mut self, available: bool) {
        if !self.route_budget.take() {
            return;
        }
        let user = self.principal.user_id.clone();
        for c in contacts(self.state.store.as_ref(), &user).await {
            let mut p = Element::new("presence", ns::CLIENT)
                .attr("from", self.jid.clone())
                .attr("to", self.ctx.normalizer.user_jid(&c));
            if !available {
                p = p.attr("type", "unavailable");
            }
            routing::route(self.state.store.as_ref(), &self.ctx, &c, None, p).await;
            if available {
                self.probe(&c).await;
            }
        }
    }
}

/// A session that was available ended: its contacts see it go (in a
/// task of its own: the session is gone).
pub fn spawn_gone(state: &SessionCtx, ctx: &Arc<XmppContext>, user: &str, jid: &str) {
    let (state, ctx, user, jid) = (
        state.clone(),
        ctx.clone(),
        user.to_string(),
        jid.to_string(),
    );
    tokio::spawn(async move {
        for c in contacts(state.store.as_ref(), &user).await {
            let p = Element::new("presence", ns::CLIENT)
                .attr("from", jid.clone())
                .attr("to", ctx.normalizer.user_jid(&c))
                .attr("type", "unavailable");
            routing::route(state.store.as_ref(), &ctx, &c, None, p).await;
        }
    });
}

fn roster_item(jid: &str) -> Element {
    Element::new("item", ns::ROSTER)
        .attr("jid", jid.to_string())
        .attr("subscription", "both")
}
