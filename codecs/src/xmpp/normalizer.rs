//! `XmppNormalizer`: `<message>` stanzas ↔ the core model (DESIGN §5.4).
//!
//! Addressing: a private conversation with user `u` is `u@<domain>`
//! (`type='chat'`); group `g` is `g@groups.<domain>` (`type='groupchat'`,
//! delivered from `g@groups.<domain>/<sender>` as a MUC room would).
//! Content: `<body>` ↔ `searchable_content`; everything else in
//! [`super::payload`]; other extension elements travel in `extra`, and
//! reactions, corrections and recall notices are written as their XEP
//! elements ([`super::extensions`]). Ids: the client's stanza `id` is the
//! `client_msg_id` (idempotent resends); a delivered message's stanza `id`
//! and its XEP-0359 `<stanza-id>` are the `messageUid`, which is also what
//! the recipient's XEP-0184 receipt and MAM results refer to.
//!
//! A user's own message sent from another device is delivered as an
//! XEP-0280 carbon (`<sent>` wrapping the original), so a client shows it
//! as outgoing.

use imgate_core::model::{content_type, Conversation, ConversationType, Message};
use imgate_core::pipeline::Draft;
use imgate_core::{ErrorCode, ImError};

use super::element::Element;
use super::extensions::{carried_xml, merge_into_extra, split_extra, Reference};
use super::jid::Jid;
use super::ns;
use super::payload::{
    decode_payload, encode_payload, needs_payload_element, xml_safe, xml_sanitized, PayloadExtras,
    PAYLOAD,
};
use super::timestamp::xep0082;

/// Converts between `<message>` stanzas and core messages for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmppNormalizer {
    domain: String,
    group_domain: String,
}

/// How a delivered message is rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// Add an XEP-0203 `<delay>` (offline or resent messages).
    pub delayed: bool,
    /// Ask for an XEP-0184 receipt (the recipient's delivery ack).
    pub request_receipt: bool,
}

impl XmppNormalizer {
    /// A normalizer for the XMPP domain `domain` (groups live on
    /// `groups.<domain>`).
    pub fn new(domain: &str) -> XmppNormalizer {
        let domain = domain.to_ascii_lowercase();
        XmppNormalizer {
            group_domain: format!("groups.{domain}"),
            domain,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn group_domain(&self) -> &str {
        &self.group_domain
    }

    /// The bare JID of a user.
    pub fn user_jid(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }

    /// The JID a conversation is addressed as.
    pub fn conversation_jid(&self, conv: &Conversation) -> String {
        if is_group_like(conv) {
            format!("{}@{}", conv.target, self.group_domain)
        } else {
            self.user_jid(&conv.target)
        }
    }

    /// The conversation a JID names (the `with` of a MAM query, the `to` of
    /// a message), or None if it is not one of this server's.
    pub fn conversation_of(&self, jid: &Jid) -> Option<Conversation> {
        let local = jid.local.as_deref()?;
        if jid.domain == self.domain {
            Some(Conversation::private(local))
        } else if jid.domain == self.group_domain {
            Some(Conversation::group(local))
        } else {
            None
        }
    }

    /// A `<message>` from `sender` as a draft; `Ok(None)` when it carries no
    /// content (receipts, chat states, error bounces).
    pub fn message_to_draft(
        &self,
        stanza: &Element,
        sender: &str,
    ) -> Result<Option<Draft>, ImError> {
        let kind = stanza.get_attr("type").unwrap_or("normal");
        if kind == "error" {
            return Ok(None);
        }
        let body = stanza
            .get_child("body", ns::CLIENT)
            .map(Element::text_content);
        let payload_el = stanza.get_child(PAYLOAD, ns::IMGATE_PAYLOAD);
        if body.is_none() && payload_el.is_none() {
            return Ok(None);
        }
        let to = stanza
            .get_attr("to")
            .ok_or_else(|| ImError::invalid_parameter("a message needs a 'to' address"))?;
        let to = Jid::parse(to)
            .ok_or_else(|| ImError::invalid_parameter(format!("malformed JID {to:?}")))?;
        let mut conversation = self.conversation_of(&to).ok_or_else(|| {
            ImError::new(ErrorCode::NotExist, format!("no such user or group: {to}"))
        })?;
        let group_addressed = to.domain == self.group_domain;
        if (kind == "groupchat") != group_addressed {
            return Err(ImError::invalid_parameter(
                "type='groupchat' goes to group@groups.<domain>, other messages to user@<domain>",
            ));
        }
        let (mut payload, extras) = decode_payload(body.as_deref(), payload_el)?;
        // Extension elements travel in `extra` (module `extensions`).
        if let Some(xml) = carried_xml(stanza) {
            if let Some(extra) = merge_into_extra(&payload.extra, &xml) {
                payload.extra = extra;
            }
        }
        if let Some(t) = extras.conv_type {
            conversation.kind = t;
        }
        conversation.line = extras.line;
        Ok(Some(Draft {
            sender: sender.to_string(),
            conversation,
            payload,
            client_msg_id: stanza.get_attr("id").unwrap_or_default().to_string(),
            to_users: extras.to_users,
        }))
    }

    /// The stanza delivering `msg` to `viewer` (a user id) at `to` (its full
    /// JID).
    pub fn message_to_stanza(
        &self,
        msg: &Message,
        viewer: &str,
        to: &str,
        opts: DeliveryOptions,
    ) -> Element {
        let own_copy = msg.sender == viewer
            && !is_group_like(&msg.conversation)
            && msg.conversation.target != viewer;
        if own_copy {
            // XEP-0280: the original as it went out, wrapped in <sent>.
            let inner = self.content_element(
                msg,
                &self.user_jid(viewer),
                &self.conversation_jid(&msg.conversation),
                "chat",
                viewer,
                opts,
            );
            let forwarded = Element::new("forwarded", ns::FORWARD).child(inner);
            return Element::new("message", ns::CLIENT)
                .attr("from", self.user_jid(viewer))
                .attr("to", to)
                .attr("type", "chat")
                .attr("id", msg.message_id.to_string())
                .child(Element::new("sent", ns::CARBONS).child(forwarded));
        }
        let (from, kind) = if is_group_like(&msg.conversation) {
            (
                format!(
                    "{}/{}",
                    self.conversation_jid(&msg.conversation),
                    msg.sender
                ),
                "groupchat",
            )
        } else {
            (self.user_jid(&msg.sender), "chat")
        };
        self.content_element(msg, &from, to, kind, viewer, opts)
    }

    /// The message as it appears inside an XEP-0297 `<forwarded>` (MAM
    /// results): from the sender, to the conversation as addressed.
    pub fn archived_stanza(&self, msg: &Message, viewer: &str) -> Element {
        let (from, to, kind) = if is_group_like(&msg.conversation) {
            (
                format!(
                    "{}/{}",
                    self.conversation_jid(&msg.conversation),
                    msg.sender
                ),
                self.user_jid(viewer),
                "groupchat",
            )
        } else {
            (
                self.user_jid(&msg.sender),
                self.conversation_jid(&msg.conversation),
                "chat",
            )
        };
        self.content_element(msg, &from, &to, kind, viewer, DeliveryOptions::default())
    }

    fn content_element(
        &self,
        msg: &Message,
        from: &str,
        to: &str,
        kind: &str,
        viewer: &str,
        opts: DeliveryOptions,
    ) -> Element {
        let id = msg.message_id.to_string();
        // Carried extension elements come out of `extra` (module
        // `extensions`); the rest of `extra` stays in the payload element.
        let (rest, carried) = split_extra(&msg.payload.extra);
        let stripped;
        let p = if carried.is_empty() && rest == msg.payload.extra {
            &msg.payload
        } else {
            let mut copy = msg.payload.clone();
            copy.extra = rest;
            stripped = copy;
            &stripped
        };
        let mut el = Element::new("message", ns::CLIENT)
            .attr("from", from)
            .attr("to", to)
            .attr("type", kind)
            .attr("id", id.clone());
        if !p.searchable_content.is_empty() {
            let body = if xml_safe(&p.searchable_content) {
                p.searchable_content.clone()
            } else {
                xml_sanitized(&p.searchable_content)
            };
            el = el.child(Element::new("body", ns::CLIENT).text(body));
        }
        let kind_known = matches!(
            msg.conversation.conversation_type(),
            Some(ConversationType::Private) | Some(ConversationType::Group)
        );
        let extras = PayloadExtras {
            conv_type: (!kind_known).then_some(msg.conversation.kind),
            line: msg.conversation.line,
            to_users: msg.to_users.clone(),
        };
        if let Some(reference) = self.reference_element(msg, viewer) {
            el = el.child(reference);
        }
        for e in carried {
            el = el.child(e);
        }
        if needs_payload_element(p, &extras) {
            el = el.child(encode_payload(p, &extras));
        }
        el = el.child(
            Element::new("stanza-id", ns::STANZA_ID)
                .attr("id", id)
                .attr("by", self.user_jid(viewer)),
        );
        if opts.request_receipt {
            el = el.child(Element::new("request", ns::RECEIPTS));
        }
        if opts.delayed {
            el = el.child(
                Element::new("delay", ns::DELAY)
                    .attr("from", self.domain.clone())
                    .attr("stamp", xep0082(msg.server_ts)),
            );
        }
        el
    }
}

impl XmppNormalizer {
    /// The standard element of a message that refers to another one:
    /// XEP-0444 reactions, XEP-0308 correction, XEP-0424 retraction (a
    /// recall notice), each naming the message by the id `viewer`'s
    /// client knows.
    fn reference_element(&self, msg: &Message, viewer: &str) -> Option<Element> {
        let p = &msg.payload;
        let group = is_group_like(&msg.conversation);
        match p.content_type {
            content_type::REACTION => {
                let r = Reference::from_json(&p.content)?;
                let mut el =
                    Element::new("reactions", ns::REACTIONS).attr("id", r.id_for(viewer, group));
                for reaction in &r.reactions {
                    el = el.child(Element::new("reaction", ns::REACTIONS).text(reaction.clone()));
                }
                Some(el)
            }
            content_type::EDIT => {
                let r = Reference::from_json(&p.content)?;
                Some(Element::new("replace", ns::CORRECTION).attr("id", r.id_for(viewer, group)))
            }
            content_type::RECALL => {
                // content: the recalled id; extra: its sender's client id.
                let client_msg_id = serde_json::from_str::<serde_json::Value>(&p.extra)
                    .ok()
                    .and_then(|v| v.get("clientMsgId")?.as_str().map(str::to_string))
                    .unwrap_or_default();
                let r = Reference {
                    message_uid: p.content.clone(),
                    sender: msg.sender.clone(),
                    client_msg_id,
                    reactions: Vec::new(),
                };
                Some(Element::new("retract", ns::RETRACT).attr("id", r.id_for(viewer, group)))
            }
            _ => None,
        }
    }
}

/// Groups, chatrooms and channels are addressed on the groups domain.
fn is_group_like(conv: &Conversation) -> bool {
    matches!(
        conv.conversation_type(),
        Some(ConversationType::Group)
            | Some(ConversationType::Chatroom)
            | Some(ConversationType::Channel)
    )
}

#[cfg(test)]
mod tests {
    use imgate_core::model::MessagePayload;

    use super::*;

    fn msg(conv: Conversation, payload: MessagePayload) -> Message {
        Message {
            message_id: 42,
            sender: "alice".into(),
            conversation: conv,
            payload,
            server_ts: 1_704_067_200_000,
            client_msg_id: "c1".into(),
            to_users: vec![],
        }
    }

    #[test]
    fn private_text_is_a_plain_chat_message() {
        let n = XmppNormalizer::new("localhost");
        let m = msg(Conversation::private("bob"), MessagePayload::text("hi"));
        let el = n.message_to_stanza(
            &m,
            "bob",
            "bob@localhost/phone",
            DeliveryOptions {
                delayed: false,
                request_receipt: true,
            },
        );
        assert_eq!(
            el.to_xml(),
            "<message from='alice@localhost' to='bob@localhost/phone' type='chat' id='42'><body>hi</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='42' by='bob@localhost'/><request xmlns='urn:xmpp:receipts'/></message>"
        );
    }

    #[test]
    fn inbound_chat_and_groupchat() {
        let n = XmppNormalizer::new("localhost");
        let chat = Element::new("message", ns::CLIENT)
            .attr("to", "bob@localhost/x")
            .attr("type", "chat")
            .attr("id", "c9")
            .child(Element::new("body", ns::CLIENT).text("yo"));
        let d = n.message_to_draft(&chat, "alice").unwrap().unwrap();
        assert_eq!(d.conversation, Conversation::private("bob"));
        assert_eq!(d.client_msg_id, "c9");
        assert_eq!(d.payload, MessagePayload::text("yo"));
        let group = chat
            .clone()
            .attr("to", "g1@groups.localhost")
            .attr("type", "groupchat");
        assert_eq!(
            n.message_to_draft(&group, "alice")
                .unwrap()
                .unwrap()
                .conversation,
            Conversation::group("g1")
        );
        let wrong = chat.clone().attr("to", "g1@groups.localhost");
        assert_eq!(
            n.message_to_draft(&wrong, "alice").unwrap_err().code,
            ErrorCode::InvalidParameter
        );
        let elsewhere = chat.clone().attr("to", "bob@example.org");
        assert_eq!(
            n.message_to_draft(&elsewhere, "alice").unwrap_err().code,
            ErrorCode::NotExist
        );
        let receipt_only = Element::new("message", ns::CLIENT).attr("to", "bob@localhost");
        assert_eq!(n.message_to_draft(&receipt_only, "alice").unwrap(), None);
    }

    #[test]
    fn own_copy_is_a_carbon() {
        let n = XmppNormalizer::new("localhost");
        let m = msg(Conversation::private("bob"), MessagePayload::text("hi"));
        let el = n.message_to_stanza(
            &m,
            "alice",
            "alice@localhost/pc",
            DeliveryOptions::default(),
        );
        let sent = el.get_child("sent", ns::CARBONS).unwrap();
        let inner = sent
            .get_child("forwarded", ns::FORWARD)
            .unwrap()
            .get_child("message", ns::CLIENT)
            .unwrap();
        assert_eq!(inner.get_attr("to"), Some("bob@localhost"));
    }

    #[test]
    fn references_name_the_id_each_viewer_knows() {
        let n = XmppNormalizer::new("localhost");
        let reference = Reference {
            message_uid: "7".into(),
            sender: "bob".into(),
            client_msg_id: "b-1".into(),
            reactions: vec!["👍".into()],
        };
        let mut p = MessagePayload {
            content_type: content_type::REACTION,
            content: reference.to_json(),
            persist_flag: 1,
            ..Default::default()
        };
        let m = msg(Conversation::private("bob"), p.clone());
        let to_bob = n.message_to_stanza(&m, "bob", "bob@localhost/pc", DeliveryOptions::default());
        let r = to_bob.get_child("reactions", ns::REACTIONS).unwrap();
        assert_eq!(r.get_attr("id"), Some("b-1"));
        assert_eq!(r.elements().next().unwrap().text_content(), "👍");
        assert!(to_bob.get_child("body", ns::CLIENT).is_none());
        p.content_type = content_type::EDIT;
        p.searchable_content = "fixed".into();
        let mut m = msg(Conversation::private("bob"), p);
        m.sender = "bob".into();
        m.conversation = Conversation::private("alice");
        let to_alice = n.message_to_stanza(
            &m,
            "alice",
            "alice@localhost/pc",
            DeliveryOptions::default(),
        );
        let replace = to_alice.get_child("replace", ns::CORRECTION).unwrap();
        assert_eq!(replace.get_attr("id"), Some("7"));
        let recall = MessagePayload {
            content_type: content_type::RECALL,
            content: "7".into(),
            extra: "{\"operator\":\"alice\",\"clientMsgId\":\"a-1\"}".into(),
            persist_flag: 1,
            ..Default::default()
        };
        let m = msg(Conversation::private("bob"), recall);
        let to_bob = n.message_to_stanza(&m, "bob", "bob@localhost/pc", DeliveryOptions::default());
        assert_eq!(
            to_bob
                .get_child("retract", ns::RETRACT)
                .unwrap()
                .get_attr("id"),
            Some("7")
        );
        let own = n.message_to_stanza(
            &m,
            "alice",
            "alice@localhost/phone",
            DeliveryOptions::default(),
        );
        let inner = own
            .get_child("sent", ns::CARBONS)
            .and_then(|s| s.get_child("forwarded", ns::FORWARD))
            .and_then(|f| f.get_child("message", ns::CLIENT))
            .unwrap();
        assert_eq!(
            inner
                .get_child("retract", ns::RETRACT)
                .unwrap()
                .get_attr("id"),
            Some("a-1")
        );
    }

    #[test]
    fn carried_extensions_come_back_and_leave_extra() {
        let n = XmppNormalizer::new("localhost");
        let stanza = Element::new("message", ns::CLIENT)
            .attr("to", "bob@localhost")
            .attr("type", "chat")
            .attr("id", "c1")
            .child(Element::new("body", ns::CLIENT).text("hi"))
            .child(Element::new("active", ns::CHAT_STATES));
        let d = n.message_to_draft(&stanza, "alice").unwrap().unwrap();
        assert!(d.payload.extra.contains("chatstates"));
        let m = msg(d.conversation, d.payload);
        let out = n.message_to_stanza(&m, "bob", "bob@localhost/pc", DeliveryOptions::default());
        assert!(out.get_child("active", ns::CHAT_STATES).is_some());
        // Plain text otherwise: no payload element for the extra.
        assert!(
            out.get_child(PAYLOAD, ns::IMGATE_PAYLOAD).is_none(),
            "{}",
            out.to_xml()
        );
    }
}
