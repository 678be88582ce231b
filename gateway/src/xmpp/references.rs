//! Messages that name an earlier message: XEP-0444 reactions and XEP-0308
//! corrections (stored with content types `REACTION` / `EDIT`, so every
//! protocol sees them; `content` is an `extensions::Reference`) and
//! XEP-0424 retractions (the sender's recall, `core::pipeline::recall`,
//! whose notice every recipient gets in its own protocol; XMPP clients as
//! `<retract/>`).
//!
//! The id a client names is the one it knows: the `messageUid` of a
//! delivered message (its stanza id), or its own stanza id (the
//! `clientMsgId`) for a message it sent. [`resolve`] finds either, among
//! the messages the user can see; one naming a message imgate does not
//! know is routed unchanged, like a chat state. Such a stanza waits until the messages
//! sent before it are stored (`Session::handle_element` holds it), so it
//! may name a message sent just before.

use std::sync::Arc;

use imgate_codecs::xmpp::extensions::{classify, Classified, Reference};
use imgate_codecs::xmpp::{Element, Jid};
use imgate_core::model::{content_type, persist_flag, Conversation, Message, MessagePayload};
use imgate_core::pipeline::Draft;
use imgate_core::store::Store;
use imgate_core::{ErrorCode, ImError};

use super::errors::{error_element, error_reply};
use super::session::Session;

/// History pages searched for a client id, newest first.
const SEARCH_PAGES: usize = 4;
/// Messages per searched page.
const SEARCH_PAGE: usize = 100;

/// Whether `el` names an earlier message (so it must see it stored).
pub fn refers_to_earlier(el: &Element) -> bool {
    matches!(
        classify(el),
        Classified::Content { replaces: Some(_) }
            | Classified::Reaction { .. }
            | Classified::Retraction { .. }
    )
}

/// The message `id` names for `user` in `conversation`: a `messageUid`
/// the user can see, or (within the newest [`SEARCH_PAGES`] ×
/// [`SEARCH_PAGE`] messages of the conversation) one whose client id is
/// `id` — sent by `user` when `own_only`.
pub async fn resolve(
    store: &dyn Store,
    user: &str,
    conversation: &Conversation,
    id: &str,
    own_only: bool,
) -> Result<Option<Arc<Message>>, ImError> {
    if let Ok(message_id) = id.parse::<u64>() {
        if let Some(m) = store.get_for(message_id, user).await? {
            if !own_only || m.sender == user {
                return Ok(Some(m));
            }
        }
    }
    let mut before = 0;
    for _ in 0..SEARCH_PAGES {
        let page = store
            .history(user, conversation, before, SEARCH_PAGE)
            .await?;
        if let Some(m) = page
            .messages
            .iter()
            .find(|m| m.client_msg_id == id && (!own_only || m.sender == user))
        {
            return Ok(Some(m.clone()));
        }
        match page.messages.iter().map(|m| m.message_id).min() {
            Some(oldest) if page.has_more => before = oldest,
            _ => break,
        }
    }
    Ok(None)
}

/// The reference `content` naming `m`.
pub fn reference_to(m: &Message, reactions: Vec<String>) -> Reference {
    Reference {
        message_uid: m.message_id.to_string(),
        sender: m.sender.clone(),
        client_msg_id: m.client_msg_id.clone(),
        reactions,
    }
}

impl Session {
    /// The conversation a body-less message is addressed to.
    fn conversation_addressed(&self, el: &Element) -> Result<Conversation, ImError> {
        let to = el
            .get_attr("to")
            .ok_or_else(|| ImError::invalid_parameter("a message needs a 'to' address"))?;
        Jid::parse(to)
            .and_then(|jid| self.ctx.normalizer.conversation_of(&jid))
            .ok_or_else(|| {
                ImError::new(ErrorCode::NotExist, format!("no such user or group: {to}"))
            })
    }

    /// A correction: the draft becomes an `EDIT` of the message it names;
    /// one naming no message the user sent stays the plain message its
    /// body is (the XEP-0308 fallback).
    pub(super) async fn as_correction(&self, mut draft: Draft, replaces: &str) -> Draft {
        let user = &self.principal.user_id;
        match resolve(
            self.state.store.as_ref(),
            user,
            &draft.conversation,
            replaces,
            true,
        )
        .await
        {
            Ok(Some(m)) => {
                draft.payload.content_type = content_type::EDIT;
                draft.payload.content = reference_to(&m, Vec::new()).to_json();
                draft
            }
            Ok(None) => draft,
            Err(e) => {
                tracing::debug!(error = %e, "xmpp: correction target not looked up; sent as a plain message");
                draft
            }
        }
    }

    /// A XEP-0444 reaction: stored as a `REACTION` message (not counted
    /// as unread) in the conversation; an error if it names no message
    /// the user can see.
    pub(super) async fn start_reaction(&mut self, el: Element, id: String, reactions: Vec<String>) {
        let built = async {
            let conversation = self.conversation_addressed(&el)?;
            let target = resolve(
                self.state.store.as_ref(),
                &self.principal.user_id,
                &conversation,
                &id,
                false,
            )
            .await?
            .ok_or_else(|| ImError::new(ErrorCode::NotExist, format!("no message {id}")))?;
            Ok::<_, ImError>(Draft {
                sender: self.principal.user_id.clone(),
                conversation,
                payload: MessagePayload {
                    content_type: content_type::REACTION,
                    content: reference_to(&target, reactions).to_json(),
                    persist_flag: persist_flag::PERSIST,
                    ..Default::default()
                },
                client_msg_id: el.get_attr("id").unwrap_or_default().to_string(),
                to_users: Vec::new(),
            })
        }
        .await;
        match built {
            Ok(draft) => self.start_draft(el, draft),
            // A message imgate does not know (another server's, older than
            // the archive): passed on as it is, as a server that only
            // routes would.
            Err(e) if e.code == ErrorCode::NotExist => self.start_transient(el).await,
            Err(e) => self.push_error(&el, &e),
        }
    }

    /// A XEP-0424 retraction: the sender's recall of its own message
    /// (within `recall_window_secs`); the notice reaches every recipient
    /// in its own protocol.
    pub(super) async fn start_retraction(&mut self, el: Element, id: String) {
        let target = match self.conversation_addressed(&el) {
            Ok(conversation) => resolve(
                self.state.store.as_ref(),
                &self.principal.user_id,
                &conversation,
                &id,
                true,
            )
            .await
            .and_then(|m| {
                m.ok_or_else(|| {
                    ImError::new(ErrorCode::NotExist, format!("no message {id} of yours"))
                })
            }),
            Err(e) => Err(e),
        };
        let target = match target {
            Ok(m) => m,
            // Not a message of this user that imgate knows: passed on as
            // it is (the recipient's client may know it).
            Err(e) if e.code == ErrorCode::NotExist => return self.start_transient(el).await,
            Err(e) => return self.push_error(&el, &e),
        };
        let store = self.state.store.clone();
        let user = self.principal.user_id.clone();
        let window = std::time::Duration::from_secs(self.state.config.recall_window_secs);
        let jid = self.jid.clone();
        // In a room the retraction is reflected to the resource that sent
        // it, as every groupchat message is (XEP-0045 §7.4; XEP-0424 §4).
        let reflect = (target.conversation.kind != 0).then(|| self.ctx.clone());
        let id = el.get_attr("id").unwrap_or_default().to_string();
        self.push_entry(async move {
            match imgate_core::pipeline::recall(
                store.as_ref(),
                target.message_id,
                &user,
                false,
                window,
            )
            .await
            {
                Ok(outcome) => {
                    reflect.map(|ctx| super::muc::reflect_stored(&ctx, &outcome.notice, &jid, &id))
                }
                Err(e) => Some(error_reply(&el, &jid, error_element(&e))),
            }
        });
    }

    /// Queue the error reply to `el` in stanza order.
    pub(super) fn push_error(&mut self, el: &Element, e: &ImError) {
        let reply = error_reply(el, &self.jid, error_element(e));
        self.push_entry(async move { Some(reply) });
    }

    /// Send `draft` through the pipeline in the window (answers in stanza
    /// order).
    pub(super) fn start_draft(&mut self, el: Element, draft: Draft) {
        self.send_draft(el, draft, false);
    }
}
