//! `PbNormalizer`: PB bodies ↔ the core model (DESIGN §2), pure and
//! synchronous.
//!
//! The proto messages carry exactly the core fields, so conversion is
//! field-for-field and lossless in both directions: `core → proto → core`
//! is the identity, and so is `proto → core → proto` for every proto value
//! whose message-typed fields are present. An absent `conversation` or
//! `payload` reads as the empty one, as proto3 readers in every language
//! see it; validation in the pipeline then rejects an empty target.

use imgate_core::model::{Conversation, Message, MessagePayload};
use imgate_core::pipeline::Draft;

use super::proto;

/// Converts between PB bodies and the core model. A unit struct: it has no
/// settings, and the functions are associated so call sites name the
/// protocol (`PbNormalizer::message_from_core`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PbNormalizer;

impl PbNormalizer {
    /// A PB payload as the core payload (`type` → `content_type`,
    /// `mentioned_target` → `mentioned_targets`).
    pub fn payload_to_core(p: proto::MessagePayload) -> MessagePayload {
        MessagePayload {
            content_type: p.r#type,
            searchable_content: p.searchable_content,
            push_content: p.push_content,
            content: p.content,
            data: p.data,
            media_type: p.media_type,
            remote_media_url: p.remote_media_url,
            persist_flag: p.persist_flag,
            expire_duration: p.expire_duration,
            mentioned_type: p.mentioned_type,
            mentioned_targets: p.mentioned_target,
            extra: p.extra,
            push_data: p.push_data,
        }
    }

    /// The core payload as a PB payload.
    pub fn payload_from_core(p: &MessagePayload) -> proto::MessagePayload {
        proto::MessagePayload {
            r#type: p.content_type,
            searchable_content: p.searchable_content.clone(),
            push_content: p.push_content.clone(),
            content: p.content.clone(),
            data: p.data.clone(),
            media_type: p.media_type,
            remote_media_url: p.remote_media_url.clone(),
            persist_flag: p.persist_flag,
            expire_duration: p.expire_duration,
            mentioned_type: p.mentioned_type,
            mentioned_target: p.mentioned_targets.clone(),
            extra: p.extra.clone(),
            push_data: p.push_data.clone(),
        }
    }

    /// A PB conversation as the core one (proto `type` → core `kind`; an
    /// unknown type is kept, for validation to reject with 251).
    pub fn conversation_to_core(c: proto::Conversation) -> Conversation {
        Conversation {
            kind: c.r#type,
            target: c.target,
            line: c.line,
        }
    }

    /// The core conversation as a PB one.
    pub fn conversation_from_core(c: &Conversation) -> proto::Conversation {
        proto::Conversation {
            r#type: c.kind,
            target: c.target.clone(),
            line: c.line,
        }
    }

    /// A PB message as the core message.
    pub fn message_to_core(m: proto::Message) -> Message {
        Message {
            message_id: m.message_id,
            sender: m.sender,
            conversation: Self::conversation_to_core(m.conversation.unwrap_or_default()),
            payload: Self::payload_to_core(m.payload.unwrap_or_default()),
            server_ts: m.server_ts,
            client_msg_id: m.client_msg_id,
            to_users: m.to_users,
        }
    }

    /// The core message as a PB message (conversation and payload always
    /// present).
    pub fn message_from_core(m: &Message) -> proto::Message {
        proto::Message {
            message_id: m.message_id,
            sender: m.sender.clone(),
            conversation: Some(Self::conversation_from_core(&m.conversation)),
            payload: Some(Self::payload_from_core(&m.payload)),
            server_ts: m.server_ts,
            client_msg_id: m.client_msg_id.clone(),
            to_users: m.to_users.clone(),
        }
    }

    /// A PB send request from the logged-in `sender` as the pipeline's
    /// draft. The sender comes from the session, never from the body.
    pub fn send_request_to_draft(r: proto::SendRequest, sender: impl Into<String>) -> Draft {
        Draft {
            sender: sender.into(),
            conversation: Self::conversation_to_core(r.conversation.unwrap_or_default()),
            payload: Self::payload_to_core(r.payload.unwrap_or_default()),
            client_msg_id: r.client_msg_id,
            to_users: r.to_users,
        }
    }

    /// A draft as the PB send request a client would send for it (the
    /// sender is implied by the connection).
    pub fn send_request_from_draft(d: &Draft) -> proto::SendRequest {
        proto::SendRequest {
            client_msg_id: d.client_msg_id.clone(),
            conversation: Some(Self::conversation_from_core(&d.conversation)),
            payload: Some(Self::payload_from_core(&d.payload)),
            to_users: d.to_users.clone(),
        }
    }

    /// A `Deliver` push body for one stored message.
    pub fn deliver(m: &Message) -> proto::Deliver {
        proto::Deliver {
            message: Some(Self::message_from_core(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_conversation_and_payload_read_as_empty() {
        let m = PbNormalizer::message_to_core(proto::Message {
            message_id: 1,
            ..Default::default()
        });
        assert_eq!(m.conversation, Conversation::default());
        assert_eq!(m.payload, MessagePayload::default());
    }

    #[test]
    fn conversation_type_is_core_kind() {
        let c = PbNormalizer::conversation_to_core(proto::Conversation {
            r#type: 1,
            target: "g1".into(),
            line: 2,
        });
        assert_eq!((c.kind, c.target.as_str(), c.line), (1, "g1", 2));
    }
}
