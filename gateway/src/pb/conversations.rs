//! PB `ConversationsRequest` (0x0309) and `MarkReadRequest` (0x030B): the
//! caller's conversations and marking one read, answered with
//! `ConversationsResponse` (0x030A) / `MarkReadResponse` (0x030C) echoing
//! the request's seq. The logic is shared with HTTP and XMPP in
//! `crate::conversations`; here it is only rendered as PB.

use imgate_codecs::pb::{commands, proto, PbFrame, PbNormalizer};
use imgate_core::store::ConversationPage;
use prost::Message as _;

use crate::conversations;
use crate::sessions::SessionCtx;

/// The answer to a `ConversationsRequest` from `user`. Kept under
/// `max_frame` like a sync page: conversations are dropped from the end
/// with `has_more` set, so the client pages on from the last one it got.
pub async fn list(
    state: &SessionCtx,
    user: &str,
    seq: u16,
    req: proto::ConversationsRequest,
) -> PbFrame {
    let limit = usize::try_from(req.limit).ok().filter(|&l| l > 0);
    let resp = match conversations::list(state.store.as_ref(), user, req.before, limit).await {
        Ok(page) => fit(page, state.config.pb_max_frame),
        Err(e) => proto::ConversationsResponse {
            code: e.code.as_i32(),
            ..Default::default()
        },
    };
    PbFrame::response(commands::CONVERSATIONS_RESPONSE, seq, &resp)
}

/// The answer to a `MarkReadRequest` from `user`.
pub async fn mark_read(
    state: &SessionCtx,
    principal: &imgate_core::pipeline::Principal,
    seq: u16,
    req: proto::MarkReadRequest,
) -> PbFrame {
    let conv = PbNormalizer::conversation_to_core(req.conversation.unwrap_or_default());
    let resp = match conversations::read_by(state, principal, &conv, req.message_id).await {
        Ok(r) => proto::MarkReadResponse {
            code: 0,
            read_upto: r.read_upto,
            unread: r.unread,
        },
        Err(e) => proto::MarkReadResponse {
            code: e.code.as_i32(),
            ..Default::default()
        },
    };
    PbFrame::response(commands::MARK_READ_RESPONSE, seq, &resp)
}

fn fit(page: ConversationPage, max_frame: usize) -> proto::ConversationsResponse {
    let budget = max_frame.saturating_sub(1024);
    let mut resp = proto::ConversationsResponse {
        code: 0,
        conversations: Vec::with_capacity(page.conversations.len()),
        has_more: page.has_more,
    };
    let mut size = 0usize;
    for c in &page.conversations {
        let info = proto::ConversationInfo {
            conversation: Some(PbNormalizer::conversation_from_core(&c.conversation)),
            last_message: c
                .last_message
                .as_deref()
                .map(PbNormalizer::message_from_core),
            last_message_id: c.last_message_id,
            read_upto: c.read_upto,
            unread: c.unread,
        };
        let len = info.encoded_len() + 8;
        if size + len > budget && !resp.conversations.is_empty() {
            resp.has_more = true;
            break;
        }
        size += len;
        resp.conversations.push(info);
    }
    resp
}
