//! Groups as XEP-0045 rooms (the subset standard clients need to join,
//! talk and leave): a group `g` is the room `g@groups.<domain>`, its
//! members are its occupants (nick = user id: a requested nick is
//! replaced, status 210), membership comes from the admin API.
//!
//! Join (available presence to `room/nick`), in the order of §7.2:
//! every other member's presence, the self-presence (status 110, plus 100
//! "non-anonymous" and 210 when the nick was changed), the history (the
//! group's newest messages from the archive, each with a `<delay
//! from=room>`; `<history maxstanzas>` honoured up to
//! [`MAX_HISTORY`]), then the subject (the group's name). A non-member
//! gets a `<registration-required/>` presence error (a members-only
//! room). Leave (unavailable presence): the unavailable self-presence.
//! Sending stays the group send of DESIGN §2; the sender's resource gets
//! its message reflected once stored ([`reflection`]). Room disco
//! (§6.4): identity `conference/text` and the room features; the groups
//! service answers disco#info as a MUC service. Membership changes made
//! through the admin API ([`follow_group_changes`]) come as presence to
//! the members' available resources: an added member's available
//! presence, a removed one's unavailable presence with status 321 (to
//! the removed user with 110 too). Joins and leaves of other members'
//! clients are not shown (members are the occupants).

use imgate_codecs::xmpp::timestamp::xep0082;
use imgate_codecs::xmpp::{ns, DeliveryOptions, Element};
use imgate_core::model::{Conversation, Message};
use imgate_core::pipeline::{Draft, SendAck};
use imgate_core::store::Group;

use std::sync::Arc;

use imgate_core::Store;

use super::errors::{condition_element, error_reply};
use super::session::Session;
use super::XmppContext;
use crate::group_events::{GroupChange, GROUP_TOPIC};
use crate::sessions::cluster::follow_topic;

/// Most history messages sent on join.
pub const MAX_HISTORY: usize = 50;
/// History messages sent on join when the client does not say.
pub const DEFAULT_HISTORY: usize = 20;
/// Occupant presences sent on join (larger groups list the first ones).
pub const MAX_OCCUPANTS: usize = 500;

/// Features of a room, in disco#info order.
const ROOM_FEATURES: &[&str] = &[
    ns::MUC,
    "muc_membersonly",
    "muc_nonanonymous",
    "muc_persistent",
    "muc_unmoderated",
    ns::MAM,
    ns::STANZA_ID,
];

/// The stanza reflecting a stored group message to the resource that
/// sent it: as every member gets it, with the client's own id.
pub fn reflection(ctx: &XmppContext, draft: Draft, ack: &SendAck, jid: &str) -> Element {
    let msg = Message {
        message_id: ack.message_id,
        sender: draft.sender,
        conversation: draft.conversation,
        payload: draft.payload,
        server_ts: ack.server_ts,
        client_msg_id: ack.client_msg_id.clone(),
        to_users: draft.to_users,
    };
    let mut el =
        ctx.normalizer
            .message_to_stanza(&msg, &msg.sender, jid, DeliveryOptions::default());
    if !msg.client_msg_id.is_empty() {
        el.set_attr("id", msg.client_msg_id.clone());
    }
    el
}

/// Show the admin API's membership changes to this node's XMPP sessions
/// until the store closes (every node applies every change, its own too).
pub async fn follow_group_changes(store: Arc<dyn Store>, ctx: Arc<XmppContext>) {
    follow_topic(store, GROUP_TOPIC, |c: GroupChange, _local| {
        let room = format!("{}@{}", c.group, ctx.normalizer.group_domain());
        let affiliation = |u: &str| if u == c.owner { "owner" } else { "member" };
        let watchers: Vec<&String> = c.members.iter().chain(&c.removed).collect();
        for watcher in watchers {
            for added in c.added.iter().filter(|a| *a != watcher) {
                ctx.router.send_to_available(watcher, |resource| {
                    Element::new("presence", ns::CLIENT)
                        .attr("from", format!("{room}/{added}"))
                        .attr(
                            "to",
                            format!("{watcher}@{}/{resource}", ctx.normalizer.domain()),
                        )
                        .child(
                            Element::new("x", ns::MUC_USER).child(
                                occupant_item(affiliation(added))
                                    .attr("jid", ctx.normalizer.user_jid(added)),
                            ),
                        )
                });
            }
            for removed in &c.removed {
                ctx.router.send_to_available(watcher, |resource| {
                    let mut x = Element::new("x", ns::MUC_USER)
                        .child(
                            Element::new("item", ns::MUC_USER)
                                .attr("affiliation", "none")
                                .attr("role", "none"),
                        )
                        .child(Element::new("status", ns::MUC_USER).attr("code", "321"));
                    if removed == watcher {
                        x = x.child(Element::new("status", ns::MUC_USER).attr("code", "110"));
                    }
                    Element::new("presence", ns::CLIENT)
                        .attr("from", format!("{room}/{removed}"))
                        .attr(
                            "to",
                            format!("{watcher}@{}/{resource}", ctx.normalizer.domain()),
                        )
                        .attr("type", "unavailable")
                        .child(x)
                });
            }
        }
    })
    .await;
}

fn occupant_item(affiliation: &str) -> Element {
    Element::new("item", ns::MUC_USER)
        .attr("affiliation", affiliation)
        .attr("role", "participant")
}

fn affiliation_of(group: &Group, user: &str) -> &'static str {
    if group.owner == user {
        "owner"
    } else {
        "member"
    }
}

impl Session {
    fn room_jid(&self, group: &str) -> String {
        format!("{group}@{}", self.ctx.normalizer.group_domain())
    }

    /// The group if this user is a member of it.
    async fn member_group(&self, group: &str) -> Option<Group> {
        match self.state.store.group(group).await {
            Ok(Some(g)) if g.members.contains(&self.principal.user_id) => Some(g),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "xmpp: group not looked up");
                None
            }
        }
    }

    /// Presence to a room: join (or presence update) or leave.
    pub(super) async fn handle_room_presence(
        &mut self,
        el: &Element,
        group: &str,
        nick: Option<&str>,
    ) -> bool {
        let room = self.room_jid(group);
        let user = self.principal.user_id.clone();
        let own = format!("{room}/{user}");
        let leaving = el.get_attr("type") == Some("unavailable");
        if el.get_attr("type").is_some() && !leaving {
            return true;
        }
        let Some(g) = self.member_group(group).await else {
            if leaving {
                return true;
            }
            let reply = Element::new("presence", ns::CLIENT)
                .attr("from", own)
                .attr("to", self.jid.clone())
                .attr("type", "error")
                .child(Element::new("x", ns::MUC))
                .child(condition_element(
                    "registration-required",
                    "auth",
                    "9 not in group",
                ));
            return self.send_stanza(&reply, None).await;
        };
        let mut own_status =
            Element::new("x", ns::MUC_USER).child(occupant_item(affiliation_of(&g, &user)));
        if leaving {
            own_status = own_status.child(Element::new("status", ns::MUC_USER).attr("code", "110"));
            let p = Element::new("presence", ns::CLIENT)
                .attr("from", own)
                .attr("to", self.jid.clone())
                .attr("type", "unavailable")
                .child(own_status);
            return self.send_stanza(&p, None).await;
        }
        let joining = el.get_child("x", ns::MUC);
        // Other occupants first.
        for member in g.members.iter().filter(|m| **m != user).take(MAX_OCCUPANTS) {
            let p = Element::new("presence", ns::CLIENT)
                .attr("from", format!("{room}/{member}"))
                .attr("to", self.jid.clone())
                .child(
                    Element::new("x", ns::MUC_USER).child(
                        occupant_item(affiliation_of(&g, member))
                            .attr("jid", self.ctx.normalizer.user_jid(member)),
                    ),
                );
            if !self.send_stanza(&p, None).await {
                return false;
            }
        }
        own_status = own_status
            .child(Element::new("status", ns::MUC_USER).attr("code", "100"))
            .child(Element::new("status", ns::MUC_USER).attr("code", "110"));
        if nick.is_some_and(|n| n != user) {
            own_status = own_status.child(Element::new("status", ns::MUC_USER).attr("code", "210"));
        }
        let own_presence = Element::new("presence", ns::CLIENT)
            .attr("from", own)
            .attr("to", self.jid.clone())
            .child(own_status);
        if !self.send_stanza(&own_presence, None).await {
            return false;
        }
        // A presence update of a joined occupant is not a join.
        let Some(join) = joining else {
            return true;
        };
        let wanted = join
            .get_child("history", ns::MUC)
            .and_then(|h| h.get_attr("maxstanzas"))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(DEFAULT_HISTORY)
            .min(MAX_HISTORY);
        if wanted > 0 && !self.send_room_history(group, &room, wanted).await {
            return false;
        }
        let subject = Element::new("message", ns::CLIENT)
            .attr("from", room)
            .attr("to", self.jid.clone())
            .attr("type", "groupchat")
            .attr("id", crate::xmpp::random_id())
            .child(Element::new("subject", ns::CLIENT).text(g.name.clone()));
        self.send_stanza(&subject, None).await
    }

    /// The group's newest `wanted` messages, oldest first, marked as
    /// history (`<delay from=room>`).
    async fn send_room_history(&mut self, group: &str, room: &str, wanted: usize) -> bool {
        let conv = Conversation::group(group);
        let page = match self
            .state
            .store
            .history(&self.principal.user_id, &conv, 0, wanted)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "xmpp: room history not read");
                return true;
            }
        };
        for m in page.messages.iter().rev() {
            let mut el = self.ctx.normalizer.message_to_stanza(
                m,
                &self.principal.user_id,
                &self.jid,
                DeliveryOptions::default(),
            );
            el = el.child(
                Element::new("delay", ns::DELAY)
                    .attr("from", room.to_string())
                    .attr("stamp", xep0082(m.server_ts)),
            );
            if !self.send_stanza(&el, None).await {
                return false;
            }
        }
        true
    }

    /// IQs to a room or to the groups service: disco and MUC self-ping
    /// (XEP-0410); anything else `<service-unavailable/>`.
    pub(super) async fn handle_room_iq(&mut self, el: &Element) -> bool {
        let kind = el.get_attr("type").unwrap_or_default();
        if kind == "result" || kind == "error" {
            return true;
        }
        let to = el.get_attr("to").unwrap_or_default().to_string();
        let jid = imgate_codecs::xmpp::Jid::parse(&to);
        let group = jid.as_ref().and_then(|j| j.local.clone());
        let result = Element::new("iq", ns::CLIENT)
            .attr("type", "result")
            .attr_opt("id", el.get_attr("id"))
            .attr("from", to.clone())
            .attr("to", self.jid.clone());
        let payload = el.elements().next().cloned();
        let unavailable = || {
            error_reply(
                el,
                &self.jid,
                condition_element("service-unavailable", "cancel", "254 not supported"),
            )
        };
        let reply = match (group, payload) {
            (None, Some(q)) if kind == "get" && q.is("query", ns::DISCO_INFO) => result.child(
                Element::new("query", ns::DISCO_INFO)
                    .child(
                        Element::new("identity", ns::DISCO_INFO)
                            .attr("category", "conference")
                            .attr("type", "text")
                            .attr("name", "groups"),
                    )
                    .child(Element::new("feature", ns::DISCO_INFO).attr("var", ns::MUC)),
            ),
            (None, Some(q)) if kind == "get" && q.is("query", ns::DISCO_ITEMS) => {
                result.child(Element::new("query", ns::DISCO_ITEMS))
            }
            (Some(group), Some(q)) if kind == "get" => match self.member_group(&group).await {
                None => error_reply(
                    el,
                    &self.jid,
                    condition_element("item-not-found", "cancel", "253 no such group of yours"),
                ),
                Some(g) if q.is("query", ns::DISCO_INFO) => {
                    let mut info = Element::new("query", ns::DISCO_INFO).child(
                        Element::new("identity", ns::DISCO_INFO)
                            .attr("category", "conference")
                            .attr("type", "text")
                            .attr("name", g.name.clone()),
                    );
                    for f in ROOM_FEATURES {
                        info = info.child(Element::new("feature", ns::DISCO_INFO).attr("var", *f));
                    }
                    result.child(info)
                }
                Some(_) if q.is("query", ns::DISCO_ITEMS) => {
                    result.child(Element::new("query", ns::DISCO_ITEMS))
                }
                Some(_) if q.is("ping", ns::PING) => result,
                Some(_) => unavailable(),
            },
            _ => unavailable(),
        };
        self.send_stanza(&reply, None).await
    }
}
