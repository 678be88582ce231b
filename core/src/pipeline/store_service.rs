//! Layer 7, the terminal service: resolve recipients (DESIGN §2), append
//! durably, and turn the store's answer into the sender's ack.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use super::{SendAck, SendCommand};
use crate::model::ConversationType;
use crate::store::{Group, NewMessage, Store};
use crate::{ErrorCode, ImError};

/// The users a group message goes to, given its group (what
/// [`resolve_recipients`] does once it has loaded the group; an import
/// batch loads each group once for all its messages).
pub fn group_recipients(group: &Group, cmd: &SendCommand) -> Result<Vec<String>, ImError> {
    let d = &cmd.draft;
    if !group.members.contains(&d.sender) && !cmd.principal.admin {
        return Err(ImError::new(
            ErrorCode::NotInGroup,
            "sender is not a member of the group",
        ));
    }
    let mut users: BTreeSet<String> = if d.to_users.is_empty() {
        group.members.clone()
    } else {
        d.to_users
            .iter()
            .filter(|u| group.members.contains(*u))
            .cloned()
            .collect()
    };
    users.insert(d.sender.clone());
    Ok(users.into_iter().collect())
}

#[derive(Clone)]
pub struct StoreService {
    store: Arc<dyn Store>,
}

impl StoreService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreService { store }
    }
}

/// Every user whose devices get the message. Private: the peer and the
/// sender (multi-device sync). Group: the members (the sender must be one
/// unless the admin sends), narrowed to `to_users` when given.
pub async fn resolve_recipients(
    store: &dyn Store,
    cmd: &SendCommand,
) -> Result<Vec<String>, ImError> {
    let d = &cmd.draft;
    match d.conversation.conversation_type() {
        Some(ConversationType::Private) | Some(ConversationType::Things) => {
            let mut users = BTreeSet::new();
            users.insert(d.conversation.target.clone());
            users.insert(d.sender.clone());
            Ok(users.into_iter().collect())
        }
        Some(ConversationType::Group) => {
            let group = store
                .group(&d.conversation.target)
                .await?
                .ok_or_else(|| ImError::new(ErrorCode::NotExist, "group does not exist"))?;
            group_recipients(&group, cmd)
        }
        Some(ConversationType::Chatroom) | Some(ConversationType::Channel) => Err(ImError::new(
            ErrorCode::NotImplemented,
            "chatroom and channel conversations are not implemented",
        )),
        None => Err(ImError::invalid_parameter("unknown conversation type")),
    }
}

impl Service<SendCommand> for StoreService {
    type Response = SendAck;
    type Error = ImError;
    type Future = Pin<Box<dyn Future<Output = Result<SendAck, ImError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ImError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, cmd: SendCommand) -> Self::Future {
        let store = self.store.clone();
        Box::pin(async move {
            let recipients = resolve_recipients(store.as_ref(), &cmd).await?;
            let SendCommand { principal, draft } = cmd;
            let appended = store
                .append(NewMessage {
                    sender: draft.sender,
                    sender_device: (!principal.admin).then_some(principal.device_id),
                    conversation: draft.conversation,
                    payload: draft.payload,
                    client_msg_id: draft.client_msg_id,
                    to_users: draft.to_users,
                    recipients,
                })
                .await?;
            Ok(SendAck {
                message_id: appended.message.message_id,
                server_ts: appended.message.server_ts,
                client_msg_id: appended.message.client_msg_id.clone(),
                duplicate: appended.duplicate,
            })
        })
    }
}
