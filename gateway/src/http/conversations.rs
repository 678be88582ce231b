//! `GET /v1/conversations?before=&limit=` (the caller's conversations,
//! newest activity first) and `POST /v1/conversations/read`
//! `{"conv":{...},"messageUid":<id, optional>}` (mark read up to an id; no
//! id = everything). Shapes in `docs/messages.md`; the logic is shared
//! with the other protocols in `crate::conversations`.

use axum::extract::State;
use axum::Json;
use imgate_core::model::Conversation;
use imgate_core::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::ClientAuth;
use super::body::JsonBody;
use super::query::JsonQuery;
use super::{ok, ApiError};
use crate::conversations;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    ClientAuth(principal): ClientAuth,
    JsonQuery(q): JsonQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let before = match q.before.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(s) => s.parse().map_err(|_| {
            ApiError::new(ErrorCode::InvalidParameter, "before must be a message id")
        })?,
    };
    let page =
        conversations::list(state.store.as_ref(), &principal.user_id, before, q.limit).await?;
    let list: Vec<Value> = page
        .conversations
        .iter()
        .map(conversations::summary_json)
        .collect();
    Ok(ok(
        json!({ "conversations": list, "hasMore": page.has_more }),
    ))
}

#[derive(Deserialize)]
pub struct ReadReq {
    conv: Conversation,
    #[serde(rename = "messageUid", default)]
    message_uid: Option<Value>,
}

pub async fn mark_read(
    State(state): State<AppState>,
    ClientAuth(principal): ClientAuth,
    JsonBody(req): JsonBody<ReadReq>,
) -> Result<Json<Value>, ApiError> {
    let upto = match &req.message_uid {
        None | Some(Value::Null) => Some(0),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    }
    .ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            "messageUid must be a message id",
        )
    })?;
    let r = conversations::read_by(&state, &principal, &req.conv, upto).await?;
    Ok(ok(conversations::read_json(&req.conv, &r)))
}
