//! Signed admin API over online sessions:
//! - `POST /admin/user/sessions` `{"userId"}` → this node's sessions of
//!   the user (`deviceId`, `protocol`) and the node's id. With several
//!   nodes each node answers for its own sessions (ask each node's admin
//!   listener for the whole picture).
//! - `POST /admin/user/kick` `{"userId", "deviceId"?}` → the sessions of
//!   that device (every device without one) are ended with code 7 on
//!   every node: the kick is announced through the store and applied by
//!   each node in the cluster's order. Credentials stay valid (revoke
//!   them with `/admin/device/secret/revoke` or `/admin/user/revoke_tokens`).

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use imgate_core::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AdminAuth;
use super::body::JsonBody;
use super::{ok, ApiError};
use crate::sessions::cluster::{announce_kick, KickNotice};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/user/sessions", post(sessions))
        .route("/admin/user/kick", post(kick))
}

#[derive(Deserialize)]
struct KickReq {
    #[serde(rename = "userId", default)]
    user_id: String,
    #[serde(rename = "deviceId", default)]
    device_id: Option<String>,
}

fn need_user(user: &str) -> Result<(), ApiError> {
    if user.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "userId is required",
        ));
    }
    Ok(())
}

async fn sessions(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<KickReq>,
) -> Result<Json<Value>, ApiError> {
    need_user(&req.user_id)?;
    let list: Vec<Value> = state
        .sessions
        .sessions_of(&req.user_id)
        .into_iter()
        .map(|(device, protocol, _)| json!({"deviceId": device, "protocol": protocol.name()}))
        .collect();
    Ok(ok(json!({
        "userId": req.user_id,
        "node": state.config.node_id,
        "sessions": list,
    })))
}

async fn kick(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<KickReq>,
) -> Result<Json<Value>, ApiError> {
    need_user(&req.user_id)?;
    let device = req.device_id.filter(|d| !d.is_empty());
    let notice = KickNotice {
        user: req.user_id.clone(),
        device: device.clone(),
    };
    announce_kick(state.store.as_ref(), &notice)
        .await
        .map_err(|e| ApiError::new(ErrorCode::ServerError, format!("kick not announced: {e}")))?;
    tracing::info!(user = %req.user_id, device = device.as_deref().unwrap_or("*"), "admin kick");
    Ok(ok(json!({"userId": req.user_id, "deviceId": device})))
}
