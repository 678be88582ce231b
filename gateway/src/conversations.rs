//! Conversations for every protocol: a user's list (last message, unread
//! count, read position) and marking one read, over the store's
//! [`Store::conversations`] and [`Store::mark_read`]. HTTP
//! (`http/conversations.rs`) and PB (`pb/conversations.rs`) render these;
//! XMPP chat markers (XEP-0333 `<displayed/>`) are meant to call
//! [`mark_read`] with the marked message's id. The read position is kept
//! by the store, so it is the same on every node and for every protocol.
//! Semantics: `docs/messages.md`.

use imgate_core::model::json::MessageJson;
use imgate_core::model::Conversation;
use imgate_core::store::{ConversationPage, ConversationSummary, ReadState};
use imgate_core::{ErrorCode, ImError, Store};
use serde_json::{json, Value};

/// Largest page of conversations a client may ask for.
pub const MAX_PAGE: usize = 100;
/// Page size when the client names none.
pub const DEFAULT_PAGE: usize = 50;

/// `limit` as a page size within the bounds.
pub fn page_size(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

/// `user`'s conversations with a last message id below `before` (0 = from
/// the newest), newest activity first.
pub async fn list(
    store: &dyn Store,
    user: &str,
    before: u64,
    limit: Option<usize>,
) -> Result<ConversationPage, ImError> {
    Ok(store.conversations(user, before, page_size(limit)).await?)
}

/// `user` read `conversation` (as they address it: a private chat's
/// target is the peer) up to `upto` (0 = everything in it). The read
/// position only moves forward. 251 for a malformed conversation, 253 if
/// the user has no such conversation.
/// [`mark_read`] by a logged-in client, from any protocol: recorded,
/// then announced as the `read` event webhook (`crate::webhooks`).
pub async fn read_by(
    state: &crate::sessions::SessionCtx,
    principal: &imgate_core::pipeline::Principal,
    conversation: &Conversation,
    upto: u64,
) -> Result<ReadState, ImError> {
    let r = mark_read(state.store.as_ref(), &principal.user_id, conversation, upto).await?;
    state.conversation_read(&crate::webhooks::ReadEvent {
        user: principal.user_id.clone(),
        device: principal.device_id.clone(),
        protocol: principal.protocol,
        conversation: conversation.clone(),
        message_id: r.read_upto,
    });
    Ok(r)
}

pub async fn mark_read(
    store: &dyn Store,
    user: &str,
    conversation: &Conversation,
    upto: u64,
) -> Result<ReadState, ImError> {
    if conversation.conversation_type().is_none() || conversation.target.is_empty() {
        return Err(ImError::invalid_parameter("bad conversation"));
    }
    store
        .mark_read(user, conversation, upto)
        .await?
        .ok_or_else(|| ImError::new(ErrorCode::NotExist, "no such conversation"))
}

/// One conversation as JSON (the HTTP shape, `docs/messages.md`). Ids are
/// also given as strings for JavaScript.
pub fn summary_json(c: &ConversationSummary) -> Value {
    json!({
        "conv": c.conversation,
        "lastMessage": c.last_message.as_deref().map(MessageJson::from_message),
        "lastMessageUid": c.last_message_id,
        "lastMessageUidStr": c.last_message_id.to_string(),
        "readUpto": c.read_upto,
        "readUptoStr": c.read_upto.to_string(),
        "unread": c.unread,
    })
}

/// A read state as JSON.
pub fn read_json(conversation: &Conversation, r: &ReadState) -> Value {
    json!({
        "conv": conversation,
        "readUpto": r.read_upto,
        "readUptoStr": r.read_upto.to_string(),
        "unread": r.unread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded() {
        assert_eq!(page_size(None), DEFAULT_PAGE);
        assert_eq!(page_size(Some(0)), 1);
        assert_eq!(page_size(Some(1_000_000)), MAX_PAGE);
    }

    #[tokio::test]
    async fn marking_an_unknown_or_malformed_conversation_is_refused() {
        use imgate_adapters::{EmbeddedConfig, EmbeddedStore};
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let bad = Conversation {
            kind: 9,
            target: "x".into(),
            line: 0,
        };
        let e = mark_read(&store, "bob", &bad, 0).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParameter);
        let e = mark_read(&store, "bob", &Conversation::private("alice"), 0)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotExist);
    }
}
