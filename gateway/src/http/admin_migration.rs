//! Migration through the signed admin API (DESIGN §7–8):
//! `/admin/import/messages` stores another system's messages with their
//! original timestamps as history, and `/admin/export/messages` pages
//! through every stored message. Both speak the "message" JSON shape of
//! §5.5, so an export of one imgate imports into another.
//!
//! Import is per message: each one is checked like an admin send
//! (conversation, ids, sizes, group membership resolved to recipients)
//! and answered with its own code; the valid ones go to the store in one
//! `Store::import` batch. The old `messageUid` (or `messageUidStr`) is the
//! idempotency key: importing a file twice stores nothing new.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use imgate_core::model::json::MessageJson;
use std::collections::HashMap;

use imgate_core::model::{Conversation, ConversationType, Message, MessagePayload};
use imgate_core::pipeline::{group_recipients, resolve_recipients, Draft, SendCommand};
use imgate_core::store::{Group, ImportMessage, IMPORT_TOO_OLD};
use imgate_core::{now_ms, ErrorCode, ImError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{admin_principal, AdminAuth};
use super::body::JsonBody;
use super::{ok, ApiError};
use crate::state::AppState;

/// Most messages in one import request or export page.
pub(super) const MAX_BATCH: usize = 1000;
/// How far in the future an imported timestamp may be (clock skew).
const FUTURE_SLACK_MS: i64 = 60_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/import/messages", post(import))
        .route("/admin/export/messages", post(export))
}

#[derive(Deserialize)]
struct ImportReq {
    messages: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OldId {
    Num(u64),
    Str(String),
}

/// One message to import: the §5.5 message shape, leniently.
#[derive(Deserialize)]
struct ImportLine {
    #[serde(rename = "messageUid")]
    message_uid: Option<OldId>,
    #[serde(rename = "messageUidStr", default)]
    message_uid_str: String,
    #[serde(default)]
    sender: String,
    conv: Conversation,
    #[serde(default)]
    payload: MessagePayload,
    timestamp: i64,
    #[serde(rename = "clientMsgId", default)]
    client_msg_id: String,
    #[serde(rename = "toUsers", default)]
    to_users: Vec<String>,
}

impl ImportLine {
    fn old_id(&self) -> Option<String> {
        if !self.message_uid_str.trim().is_empty() {
            return Some(self.message_uid_str.trim().to_string());
        }
        match &self.message_uid {
            Some(OldId::Num(n)) => Some(n.to_string()),
            Some(OldId::Str(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => None,
        }
    }
}

/// The per-message answer.
fn answer(old_id: &str, result: Result<(u64, bool), ImError>) -> Value {
    match result {
        Ok((id, duplicate)) => json!({
            "oldId": old_id,
            "code": 0,
            "messageUid": id,
            "messageUidStr": id.to_string(),
            "duplicate": duplicate,
        }),
        Err(e) => json!({"oldId": old_id, "code": e.code.as_i32(), "msg": e.message}),
    }
}

/// Check one line and build what the store imports.
/// `groups`: the groups this request loaded so far (each once per request).
async fn prepare(
    state: &AppState,
    groups: &mut HashMap<String, Option<Group>>,
    raw: Value,
) -> Result<ImportMessage, (String, ImError)> {
    let line: ImportLine = serde_json::from_value(raw).map_err(|e| {
        (
            String::new(),
            ImError::new(ErrorCode::InvalidData, format!("malformed message: {e}")),
        )
    })?;
    let Some(old_id) = line.old_id() else {
        return Err((
            String::new(),
            ImError::invalid_parameter("messageUid (the id in the old system) is required"),
        ));
    };
    let fail = |e: ImError| (old_id.clone(), e);
    if line.sender.trim().is_empty() {
        return Err(fail(ImError::invalid_parameter("sender is required")));
    }
    if line.timestamp > now_ms() + FUTURE_SLACK_MS {
        return Err(fail(ImError::invalid_parameter(
            "timestamp is in the future",
        )));
    }
    if line.timestamp < imgate_core::id::EPOCH_MS {
        return Err(fail(ImError::invalid_parameter(IMPORT_TOO_OLD)));
    }
    let cmd = SendCommand {
        principal: admin_principal(),
        draft: Draft {
            sender: line.sender,
            conversation: line.conv,
            payload: line.payload,
            client_msg_id: line.client_msg_id,
            to_users: line.to_users,
        },
    };
    state.config.pipeline().limits.check(&cmd).map_err(fail)?;
    let recipients = match cmd.draft.conversation.conversation_type() {
        Some(ConversationType::Group) => {
            let target = &cmd.draft.conversation.target;
            if !groups.contains_key(target) {
                let group = state
                    .store
                    .group(target)
                    .await
                    .map_err(|e| fail(e.into()))?;
                groups.insert(target.clone(), group);
            }
            match groups.get(target) {
                Some(Some(group)) => group_recipients(group, &cmd).map_err(fail)?,
                _ => {
                    return Err(fail(ImError::new(
                        ErrorCode::NotExist,
                        "group does not exist",
                    )))
                }
            }
        }
        _ => resolve_recipients(state.store.as_ref(), &cmd)
            .await
            .map_err(fail)?,
    };
    let d = cmd.draft;
    Ok(ImportMessage {
        old_id,
        message: Message {
            message_id: 0,
            sender: d.sender,
            conversation: d.conversation,
            payload: d.payload,
            server_ts: line.timestamp,
            client_msg_id: d.client_msg_id,
            to_users: d.to_users,
        },
        recipients,
    })
}

async fn import(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<ImportReq>,
) -> Result<Json<Value>, ApiError> {
    if req.messages.len() > MAX_BATCH {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("at most {MAX_BATCH} messages per request"),
        ));
    }
    // Slot per input message: Ok(index into the store batch) or an answer.
    let mut slots = Vec::with_capacity(req.messages.len());
    let mut batch = Vec::new();
    let mut groups = HashMap::new();
    for raw in req.messages {
        match prepare(&state, &mut groups, raw).await {
            Ok(m) => {
                slots.push(Ok(batch.len()));
                batch.push(m);
            }
            Err((old_id, e)) => slots.push(Err(answer(&old_id, Err(e)))),
        }
    }
    let stored = if batch.is_empty() {
        Vec::new()
    } else {
        state.store.import(batch).await?
    };
    let (mut imported, mut duplicates, mut failed) = (0, 0, 0);
    let results: Vec<Value> = slots
        .into_iter()
        .map(|slot| {
            let v = match slot {
                Ok(i) => match stored.get(i) {
                    Some(r) => answer(
                        &r.old_id,
                        r.result.clone().map_err(ImError::invalid_parameter),
                    ),
                    None => answer("", Err(ImError::server("store answered fewer results"))),
                },
                Err(v) => v,
            };
            match (v["code"].as_i64(), v["duplicate"].as_bool()) {
                (Some(0), Some(true)) => duplicates += 1,
                (Some(0), _) => imported += 1,
                _ => failed += 1,
            }
            v
        })
        .collect();
    Ok(ok(json!({
        "imported": imported,
        "duplicates": duplicates,
        "failed": failed,
        "results": results,
    })))
}

#[derive(Deserialize)]
struct ExportReq {
    #[serde(default)]
    after: Option<OldId>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn export(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<ExportReq>,
) -> Result<Json<Value>, ApiError> {
    let after = match req.after {
        None => 0,
        Some(OldId::Num(n)) => n,
        Some(OldId::Str(s)) if s.trim().is_empty() => 0,
        Some(OldId::Str(s)) => s.trim().parse().map_err(|_| {
            ApiError::new(ErrorCode::InvalidParameter, "after must be a messageUid")
        })?,
    };
    let limit = req.limit.unwrap_or(500).clamp(1, MAX_BATCH);
    let page = state.store.scan(after, limit).await?;
    let last = page.messages.last().map_or(after, |m| m.message_id);
    let messages: Vec<MessageJson> = page
        .messages
        .iter()
        .map(|m| MessageJson::from_message(m))
        .collect();
    Ok(ok(json!({
        "messages": messages,
        "hasMore": page.has_more,
        "last": last,
        "lastStr": last.to_string(),
    })))
}
