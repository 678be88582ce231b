//! Client API (DESIGN §5.5), bearer token: `POST /v1/messages`,
//! `GET /v1/sync?since=&limit=`, `GET /v1/history`, `GET /v1/events` (SSE),
//! `POST /v1/recall` (own messages, within the recall window),
//! `GET /v1/conversations`, `POST /v1/conversations/read`
//! (`conversations.rs`); plus `/healthz` and `/readyz` (see
//! [`super::health`]).

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use imgate_core::model::json::{MessageJson, SendRequestJson};
use imgate_core::model::Conversation;
use imgate_core::pipeline::{Draft, SendCommand};
use imgate_core::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::ClientAuth;
use super::body::JsonBody;
use super::query::JsonQuery;
use super::{events, ok, ApiError};
use crate::state::AppState;

/// Largest page a client may ask for.
pub const MAX_PAGE: usize = 500;
const DEFAULT_PAGE: usize = 100;

pub fn client_router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let deadline = std::time::Duration::from_secs(state.config.http_body_timeout_secs.max(1));
    Router::new()
        .route("/v1/messages", post(send))
        .route("/v1/sync", get(sync))
        .route("/v1/history", get(history))
        .route("/v1/events", get(events::events))
        .route("/v1/recall", post(recall))
        .route("/v1/conversations", get(super::conversations::list))
        .route(
            "/v1/conversations/read",
            post(super::conversations::mark_read),
        )
        .merge(super::health::routes())
        .fallback(super::query::not_found)
        .method_not_allowed_fallback(super::query::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |req, next| {
            super::body::read_body_first(req, next, limit, deadline)
        }))
        .with_state(state)
}

async fn send(
    State(state): State<AppState>,
    ClientAuth(principal): ClientAuth,
    JsonBody(req): JsonBody<SendRequestJson>,
) -> Result<Json<Value>, ApiError> {
    let draft = Draft {
        sender: principal.user_id.clone(),
        conversation: req.conv,
        payload: req.payload,
        client_msg_id: req.client_msg_id,
        to_users: req.to_users,
    };
    let ack = state.send(SendCommand { principal, draft }).await?;
    Ok(ok(json!({
        "messageUid": ack.message_id,
        "messageUidStr": ack.message_id.to_string(),
        "timestamp": ack.server_ts,
        "clientMsgId": ack.client_msg_id,
        "duplicate": ack.duplicate,
    })))
}

#[derive(Deserialize)]
struct RecallReq {
    #[serde(rename = "messageUid")]
    message_uid: serde_json::Value,
}

/// The sender recalls their own message within `recall_window_secs`.
async fn recall(
    State(state): State<AppState>,
    ClientAuth(principal): ClientAuth,
    JsonBody(req): JsonBody<RecallReq>,
) -> Result<Json<Value>, ApiError> {
    let id = match &req.message_uid {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            "messageUid must be a message id",
        )
    })?;
    let window = std::time::Duration::from_secs(state.config.recall_window_secs);
    let outcome =
        imgate_core::pipeline::recall(state.store.as_ref(), id, &principal.user_id, false, window)
            .await?;
    Ok(ok(json!({
        "messageUid": outcome.recalled.message_id,
        "noticeUid": outcome.notice.message_id,
    })))
}

#[derive(Deserialize)]
struct SyncQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

fn parse_id(raw: Option<&str>, what: &str) -> Result<u64, ApiError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(0),
        Some(s) => s.parse().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                format!("{what} must be a message id"),
            )
        }),
    }
}

fn page_size(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

async fn sync(
    State(state): State<AppState>,
    ClientAuth(principal): ClientAuth,
    JsonQuery(q): JsonQuery<SyncQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = parse_id(q.since.as_deref(), "since")?;
    let page = state
        .store
        .sync(&principal.user_id, since, page_size(q.limit))
        .await?;
    let messages: Vec<MessageJson> = page
        .messages
        .iter()
        .map(|m| MessageJson::from_message(m))
        .collect();
    Ok(ok(
        json!({ "messages": messages, "hasMore": page.has_more }),
    ))
}

#[derive(Deserialize)]
struct HistoryQuery {
    #[serde(rename = "type", default)]
    kind: i32,
    target: String,
    #[serde(default)]
    line: i32,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// Newest first; group history only for members.
async fn history(
    State(state): State<AppState>,
    ClientAuth(principal): ClientAuth,
    JsonQuery(q): JsonQuery<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let conv = Conversation {
        kind: q.kind,
        target: q.target,
        line: q.line,
    };
    if conv.conversation_type().is_none() || conv.target.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "bad conversation",
        ));
    }
    if conv.kind == 1 {
        let member = state
            .store
            .group(&conv.target)
            .await?
            .is_some_and(|g| g.members.contains(&principal.user_id));
        if !member {
            return Err(ApiError::new(
                ErrorCode::NotInGroup,
                "not a member of the group",
            ));
        }
    }
    let before = parse_id(q.before.as_deref(), "before")?;
    let page = state
        .store
        .history(&principal.user_id, &conv, before, page_size(q.limit))
        .await?;
    let messages: Vec<MessageJson> = page
        .messages
        .iter()
        .map(|m| MessageJson::from_message(m))
        .collect();
    Ok(ok(
        json!({ "messages": messages, "hasMore": page.has_more }),
    ))
}
