//! Groups as XEP-0045 rooms (the subset standard clients use): a group
//! `g` is the members-only, non-anonymous, persistent room
//! `g@groups.<domain>`. Its members (admin API, or the owner's
//! affiliation list, [`super::muc_admin`]) may join; the occupants are
//! the members' XMPP resources that joined ([`super::muc_occupants`]),
//! each under the nick its client chose.
//!
//! Join (available presence to `room/nick`), in the order of §7.2:
//! the other occupants' presence, the self-presence (status 100, 110),
//! the history (the group's newest messages from the archive, each with
//! a `<delay from=room>`; `<history maxstanzas>` honoured up to
//! [`MAX_HISTORY`]), then the subject (the group's name); the other
//! occupants get the new occupant's presence. A non-member gets a
//! `<registration-required/>` presence error (with `xmpp_room_creation`
//! a join to a room that does not exist makes the group, status 201),
//! a nick another user has a
//! `<conflict/>`. A presence to another nick of a joined room changes
//! the nick (§7.6: 303). Leave (unavailable presence): the unavailable
//! presence, with the client's status text, to every occupant (110 to
//! the leaver); a session that ends leaves its rooms. Sending stays the
//! group send of DESIGN §2; the sender's resource gets its message
//! reflected once stored ([`reflection`]). Room disco (§6.4): identity
//! `conference/text` and the room features; the groups service answers
//! disco#info as a MUC service; a XEP-0410 self-ping is answered for
//! occupants (`<not-acceptable/>` otherwise). A member removed from the
//! group ([`follow_group_changes`]) leaves the room with status 321.

use imgate_codecs::xmpp::timestamp::xep0082;
use imgate_codecs::xmpp::{ns, DeliveryOptions, Element};
use imgate_core::model::{Conversation, Message};
use imgate_core::pipeline::{Draft, SendAck};
use imgate_core::store::Group;

use std::sync::Arc;

use imgate_core::Store;

use super::errors::{condition_element, error_reply};
use super::muc_occupants::{self as occupants, Change, Occupant, OccupantNotice};
use super::session::Session;
use super::XmppContext;
use crate::group_events::{GroupChange, GROUP_TOPIC};
use crate::sessions::cluster::follow_topic;

/// Most history messages sent on join.
pub const MAX_HISTORY: usize = 50;
/// History messages sent on join when the client does not say.
pub const DEFAULT_HISTORY: usize = 20;
/// Occupant presences sent on join (larger rooms list the first ones).
pub const MAX_OCCUPANTS: usize = occupants::MAX_OCCUPANTS;

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

/// A group message's `from` (`room/sender`) with the sender's nick in
/// the room instead of the user id, while the sender is an occupant.
pub fn use_sender_nick(ctx: &XmppContext, msg: &Message, el: &mut Element) {
    if msg.conversation.kind != 1 {
        return;
    }
    let Some(nick) = ctx.occupants.nick_of(&msg.conversation.target, &msg.sender) else {
        return;
    };
    let room = ctx.normalizer.conversation_jid(&msg.conversation);
    if el.get_attr("from") == Some(format!("{room}/{}", msg.sender).as_str()) {
        el.set_attr("from", format!("{room}/{nick}"));
    }
}

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
    let id = msg.client_msg_id.clone();
    reflect_stored(ctx, &msg, jid, &id)
}

/// A stored group message as its sender's resource `jid` sees it in the
/// room, with `id` (the id of the stanza that caused it; kept as the
/// message's own when empty). The reflection of a XEP-0424 retraction is
/// its recall notice with the retraction's id: the client matches it so.
pub fn reflect_stored(ctx: &XmppContext, msg: &Message, jid: &str, id: &str) -> Element {
    let mut el =
        ctx.normalizer
            .message_to_stanza(msg, &msg.sender, jid, DeliveryOptions::default());
    use_sender_nick(ctx, msg, &mut el);
    if !id.is_empty() {
        el.set_attr("id", id.to_string());
    }
    el
}

/// Apply the admin API's (and the room owner's) membership changes to
/// this node's rooms until the store closes: a removed member who is in
/// the room leaves it with status 321 (every node applies every change,
/// its own too, so no occupant change is announced for it). An added
/// member is not an occupant until its client joins.
pub async fn follow_group_changes(store: Arc<dyn Store>, ctx: Arc<XmppContext>) {
    follow_topic(store, GROUP_TOPIC, |c: GroupChange, _local| {
        for removed in &c.removed {
            for (group, occupant) in ctx
                .occupants
                .of(&c.group)
                .into_iter()
                .filter(|o| o.user == *removed)
                .map(|o| (c.group.clone(), o))
                .take(1)
            {
                occupants::apply_here(
                    &ctx,
                    &OccupantNotice {
                        group,
                        occupant,
                        change: Change::Removed,
                    },
                );
            }
        }
    })
    .await;
}

pub(super) fn affiliation_of(group: &Group, user: &str) -> &'static str {
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

    /// Presence to a room: join, presence update, nick change (a
    /// presence to another nick, §7.6) or leave.
    pub(super) async fn handle_room_presence(
        &mut self,
        el: &Element,
        group: &str,
        nick: Option<&str>,
    ) -> bool {
        let room = self.room_jid(group);
        let user = self.principal.user_id.clone();
        let resource = self.principal.device_id.clone();
        let leaving = el.get_attr("type") == Some("unavailable");
        if el.get_attr("type").is_some() && !leaving {
            return true;
        }
        let joined = self.ctx.occupants.entry(group, &user, &resource);
        let nick = nick
            .map(str::to_string)
            .or_else(|| joined.as_ref().map(|o| o.nick.clone()))
            .unwrap_or_else(|| user.clone());
        let own = format!("{room}/{nick}");
        if leaving {
            let Some(occupant) = joined else {
                let p = Element::new("presence", ns::CLIENT)
                    .attr("from", own)
                    .attr("to", self.jid.clone())
                    .attr("type", "unavailable")
                    .child(
                        Element::new("x", ns::MUC_USER)
                            .child(
                                Element::new("item", ns::MUC_USER)
                                    .attr("affiliation", "none")
                                    .attr("role", "none"),
                            )
                            .child(Element::new("status", ns::MUC_USER).attr("code", "110")),
                    );
                return self.send_stanza(&p, None);
            };
            let status = el
                .get_child("status", ns::CLIENT)
                .map(|s| s.text_content().chars().take(1024).collect());
            let n = OccupantNotice {
                group: group.to_string(),
                occupant,
                change: Change::Left { status },
            };
            let _ = occupants::change(self.state.store.as_ref(), &self.ctx, n, None).await;
            return true;
        }
        let (g, created) = match self.member_group(group).await {
            Some(g) => (g, false),
            None => match self.create_room(el, group).await {
                Some(g) => (g, true),
                None => {
                    return self
                        .room_presence_error(
                            &own,
                            "registration-required",
                            "auth",
                            "9 not in group",
                        )
                        .await
                }
            },
        };
        if nick.is_empty() || nick.len() > occupants::MAX_NICK || nick.contains('/') {
            return self
                .room_presence_error(&own, "jid-malformed", "modify", "2 no such nick")
                .await;
        }
        if self.ctx.occupants.check_nick(group, &user, &nick).is_err() {
            return self
                .room_presence_error(&own, "conflict", "cancel", "2 that nick is taken")
                .await;
        }
        let occupant = Occupant {
            user: user.clone(),
            resource: resource.clone(),
            nick: nick.clone(),
            affiliation: affiliation_of(&g, &user).to_string(),
        };
        let store = self.state.store.clone();
        if let Some(before) = joined {
            // Already in: a new nick (§7.6) or a presence update.
            let change = if before.nick != nick {
                Change::Renamed { old: before.nick }
            } else {
                Change::Joined
            };
            let n = OccupantNotice {
                group: group.to_string(),
                occupant,
                change,
            };
            let _ = occupants::change(store.as_ref(), &self.ctx, n, None).await;
            return true;
        }
        let n = OccupantNotice {
            group: group.to_string(),
            occupant: occupant.clone(),
            change: Change::Joined,
        };
        let me = (user.as_str(), resource.as_str());
        if occupants::change(store.as_ref(), &self.ctx, n, Some(me))
            .await
            .is_err()
        {
            return self
                .room_presence_error(&own, "service-unavailable", "wait", "250 the room is full")
                .await;
        }
        // Other occupants first (§7.2.3), then the self-presence.
        for o in self
            .ctx
            .occupants
            .of(group)
            .into_iter()
            .filter(|o| !(o.user == user && o.resource == resource))
            .take(MAX_OCCUPANTS)
        {
            let p = Element::new("presence", ns::CLIENT)
                .attr("from", format!("{room}/{}", o.nick))
                .attr("to", self.jid.clone())
                .child(occupants::occupant_x(&self.ctx, &o, o.role(), &[]));
            self.send_stanza(&p, None);
        }
        let own_presence = Element::new("presence", ns::CLIENT)
            .attr("from", own)
            .attr("to", self.jid.clone())
            .child(occupants::occupant_x(
                &self.ctx,
                &occupant,
                occupant.role(),
                if created {
                    &["100", "110", "201"]
                } else {
                    &["100", "110"]
                },
            ));
        self.send_stanza(&own_presence, None);
        let wanted = el
            .get_child("x", ns::MUC)
            .and_then(|x| x.get_child("history", ns::MUC))
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
        self.send_stanza(&subject, None)
    }

    /// With `xmpp_room_creation`, a join (with `<x xmlns='…muc'/>`) to a
    /// room that does not exist makes the group, this user its owner and
    /// only member (§10.1.2: status 201; the room is usable at once, as
    /// an instant room).
    async fn create_room(&mut self, el: &Element, group: &str) -> Option<Group> {
        if !self.state.config.xmpp_room_creation || el.get_child("x", ns::MUC).is_none() {
            return None;
        }
        if group.is_empty() || group.len() > 128 || group.chars().any(char::is_control) {
            return None;
        }
        if !matches!(self.state.store.group(group).await, Ok(None)) {
            return None;
        }
        let user = self.principal.user_id.clone();
        let g = Group {
            id: group.to_string(),
            name: group.to_string(),
            owner: user.clone(),
            members: [user].into_iter().collect(),
        };
        match self.state.store.put_group(g.clone()).await {
            Ok(()) => Some(g),
            Err(e) => {
                tracing::debug!(error = %e, "xmpp: room not made");
                None
            }
        }
    }

    async fn room_presence_error(
        &mut self,
        from: &str,
        condition: &str,
        kind: &str,
        text: &str,
    ) -> bool {
        let reply = Element::new("presence", ns::CLIENT)
            .attr("from", from.to_string())
            .attr("to", self.jid.clone())
            .attr("type", "error")
            .child(Element::new("x", ns::MUC))
            .child(condition_element(condition, kind, text));
        self.send_stanza(&reply, None)
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
            use_sender_nick(&self.ctx, m, &mut el);
            el = el.child(
                Element::new("delay", ns::DELAY)
                    .attr("from", room.to_string())
                    .attr("stamp", xep0082(m.server_ts)),
            );
            self.send_stanza(&el, None);
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
        if let (Some(g), Some(q)) = (group.as_deref(), payload.as_ref()) {
            if q.is("query", super::muc_admin::NS_OWNER)
                || q.is("query", super::muc_admin::NS_ADMIN)
            {
                return self.handle_room_admin(el, g, q).await;
            }
            if q.is("query", ns::MAM) && kind == "set" {
                // XEP-0313 §4.1.3: the room's archive, for its members.
                let conversation = jid
                    .as_ref()
                    .and_then(|j| self.ctx.normalizer.conversation_of(j));
                return match (self.member_group(g).await, conversation) {
                    (Some(_), Some(conversation)) => {
                        let room = super::mam::RoomArchive {
                            jid: &to,
                            conversation,
                        };
                        self.handle_mam(el, q, Some(room)).await
                    }
                    _ => {
                        let reply = error_reply(
                            el,
                            &self.jid,
                            condition_element(
                                "item-not-found",
                                "cancel",
                                "253 no such group of yours",
                            ),
                        );
                        self.send_stanza(&reply, None)
                    }
                };
            }
            if q.is("ping", ns::PING) {
                // XEP-0410: joined, or not-acceptable.
                let joined = self
                    .ctx
                    .occupants
                    .entry(g, &self.principal.user_id, &self.principal.device_id)
                    .is_some();
                let reply = if joined {
                    result
                } else {
                    error_reply(
                        el,
                        &self.jid,
                        condition_element("not-acceptable", "cancel", "9 not in the room"),
                    )
                };
                return self.send_stanza(&reply, None);
            }
        }
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
                Some(_) => unavailable(),
            },
            _ => unavailable(),
        };
        self.send_stanza(&reply, None)
    }
}
