//! XEP-0333 chat markers and XEP-0085 chat states (and any other
//! body-less extension message): never stored.
//!
//! A marker (`<received/>`, `<displayed/>`, `<acknowledged/>`) naming a
//! message the user received is that device's delivery ack, like a
//! XEP-0184 receipt (`Store::ack`, so every protocol's delivery state
//! agrees), and goes on to the message's sender's available resources
//! with the id the sender's client knows (its own stanza id). A
//! `<displayed/>` also means "read up to here": the conversation's read
//! position moves there (`conversations::read_by`, as HTTP and PB reads
//! do; docs/xmpp.md). A marker naming no message of the user's is routed as it
//! is, like a chat state.
//!
//! Chat states and other body-less messages are routed unchanged
//! ([`super::routing`]) with the sender's full JID as `from`: to a full
//! JID, to every available resource of a bare JID, or, in a group, to
//! every other member (from `group@groups.<domain>/<sender>`; groups of
//! up to [`TRANSIENT_GROUP_LIMIT`] members).

use imgate_codecs::xmpp::extensions::{Marker, Reference};
use imgate_codecs::xmpp::{ns, Element};

use super::routing::{self, Addressee};
use super::session::Session;

/// Largest group whose members get routed chat states (each member is
/// one routed stanza, on a cluster one announcement).
pub const TRANSIENT_GROUP_LIMIT: usize = 100;

impl Session {
    /// A body-less marker for message `id`.
    pub(super) async fn start_marker(&mut self, el: Element, kind: Marker, id: String) {
        let user = self.principal.user_id.clone();
        let found = match id.parse::<u64>() {
            Ok(message_id) => match self.state.store.get_for(message_id, &user).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "xmpp: marker target not looked up");
                    None
                }
            },
            Err(_) => None,
        };
        let Some(m) = found else {
            return self.start_transient(el).await;
        };
        if let Err(e) = self
            .state
            .ack_delivery(&user, &self.principal.device_id, m.message_id)
            .await
        {
            tracing::warn!(error = %e, "xmpp: storing a marker's delivery ack failed; it will be redelivered");
        }
        if kind == Marker::Displayed {
            // "Read up to here": the conversation's read position, as a
            // read from HTTP or PB (and its `read` webhook event).
            let conversation = m.conversation.seen_by(&m.sender, &user);
            if let Err(e) = crate::conversations::read_by(
                &self.state,
                &self.principal,
                &conversation,
                m.message_id,
            )
            .await
            {
                tracing::debug!(%user, error = %e, "xmpp: displayed marker not recorded as read");
            }
        }
        let private = m.conversation.kind == 0;
        if private && m.sender != user {
            let reference = Reference {
                message_uid: m.message_id.to_string(),
                sender: m.sender.clone(),
                client_msg_id: m.client_msg_id.clone(),
                reactions: Vec::new(),
            };
            let marker = Element::new("message", ns::CLIENT)
                .attr("from", self.jid.clone())
                .attr("to", self.ctx.normalizer.user_jid(&m.sender))
                .attr("type", "chat")
                .attr_opt("id", el.get_attr("id"))
                .child(
                    Element::new(kind.name(), ns::CHAT_MARKERS)
                        .attr("id", reference.id_for(&m.sender, false)),
                );
            routing::route(
                self.state.store.as_ref(),
                &self.ctx,
                &m.sender,
                None,
                marker,
            )
            .await;
        }
        self.push_entry(async { None });
    }

    /// A body-less message with nothing to store: routed as it is.
    pub(super) async fn start_transient(&mut self, el: Element) {
        if !self.route_budget.take() {
            tracing::debug!(user = %self.principal.user_id, "xmpp: routing budget spent; stanza dropped");
            return self.push_entry(async { None });
        }
        let mut stamped = el.clone();
        stamped.set_attr("from", self.jid.clone());
        match self.addressee_of(&el) {
            Addressee::Resource { user, resource } => {
                routing::route(
                    self.state.store.as_ref(),
                    &self.ctx,
                    &user,
                    Some(&resource),
                    stamped,
                )
                .await;
            }
            Addressee::Account { user } => {
                routing::route(self.state.store.as_ref(), &self.ctx, &user, None, stamped).await;
            }
            Addressee::Room { group, .. } => self.route_to_room(&group, stamped).await,
            Addressee::Server | Addressee::RoomService | Addressee::Elsewhere => {}
        }
        self.push_entry(async { None });
    }

    /// A transient groupchat stanza to the group's other members, from
    /// the sender's occupant JID.
    async fn route_to_room(&mut self, group: &str, mut stanza: Element) {
        let user = self.principal.user_id.clone();
        let members = match self.state.store.group(group).await {
            Ok(Some(g)) if g.members.contains(&user) => g.members,
            _ => return,
        };
        if members.len() > TRANSIENT_GROUP_LIMIT {
            return;
        }
        let room = format!("{group}@{}", self.ctx.normalizer.group_domain());
        stanza.set_attr("from", format!("{room}/{user}"));
        for member in members.iter().filter(|m| **m != user) {
            let mut copy = stanza.clone();
            copy.set_attr("to", self.ctx.normalizer.user_jid(member));
            routing::route(self.state.store.as_ref(), &self.ctx, member, None, copy).await;
        }
    }
}
