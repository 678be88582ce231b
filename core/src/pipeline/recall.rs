//! Recall: remove a message from history and tell every recipient device,
//! in its own protocol, with a recall notice (content type 80) in the same
//! conversation whose `content` is the recalled message id.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{content_type, persist_flag, Message, MessagePayload};
use crate::store::{NewMessage, Store};
use crate::{now_ms, ErrorCode, ImError};

/// The recall notice that was stored and delivered.
#[derive(Debug, Clone)]
pub struct RecallOutcome {
    pub recalled: Arc<Message>,
    pub notice: Arc<Message>,
}

/// Recall `message_id` on behalf of `operator`. The admin may recall any
/// message; a user only their own, within `window` of sending.
pub async fn recall(
    store: &dyn Store,
    message_id: u64,
    operator: &str,
    admin: bool,
    window: Duration,
) -> Result<RecallOutcome, ImError> {
    let original = store
        .get(message_id)
        .await?
        .ok_or_else(|| ImError::new(ErrorCode::NotExist, "message does not exist"))?;
    if !admin {
        if original.sender != operator {
            return Err(ImError::new(
                ErrorCode::NoRight,
                "only the sender may recall",
            ));
        }
        if now_ms() - original.server_ts > window.as_millis() as i64 {
            return Err(ImError::new(ErrorCode::NoRight, "recall window has passed"));
        }
    }
    let (recalled, recipients) = store
        .recall(message_id)
        .await?
        .ok_or_else(|| ImError::new(ErrorCode::NotExist, "message does not exist"))?;
    let notice = store
        .append(NewMessage {
            sender: recalled.sender.clone(),
            sender_device: None,
            conversation: recalled.conversation.clone(),
            payload: MessagePayload {
                content_type: content_type::RECALL,
                content: message_id.to_string(),
                persist_flag: persist_flag::PERSIST,
                // The sender's own client knows the message by its client id
                // (an XMPP retraction names it so).
                extra: serde_json::json!({
                    "operator": operator,
                    "clientMsgId": recalled.client_msg_id,
                })
                .to_string(),
                ..Default::default()
            },
            client_msg_id: format!("recall-{message_id}"),
            to_users: Vec::new(),
            recipients,
        })
        .await?;
    Ok(RecallOutcome {
        recalled,
        notice: notice.message,
    })
}
