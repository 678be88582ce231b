//! Admin API for device credentials (DESIGN §5.1; see `device_secrets`):
//! - `/admin/device/secret/issue` `{"userId","deviceId"}` →
//!   `{"userId","deviceId","secret","issuedMs"}`; the secret is shown only
//!   here, once (issuing again replaces it);
//! - `/admin/device/secret/revoke` `{"userId","deviceId"}` →
//!   `{"userId","deviceId"}` (253 if the device has no secret);
//!   new logins with it are refused at once and its live sessions kicked;
//! - `/admin/device/secret/list` `{"userId"?}` → `{"devices":[{"userId",
//!   "deviceId","issuedMs"}]}` (never the secrets);
//! - `/admin/user/revoke_tokens` `{"userId"}` → `{"userId",
//!   "revokedBefore"}`: every token of the user issued until now is
//!   refused (and the user's sessions kicked); tokens issued afterwards
//!   work.
//!
//! Every change is stored before the reply and reaches every node. The
//! sessions it ends are kicked by this handler and by each node's
//! follower (`DeviceCredentials::follow`), whichever comes first, so the
//! reply does not count them.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use imgate_core::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AdminAuth;
use super::body::JsonBody;
use super::{ok, ApiError};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/device/secret/issue", post(secret_issue))
        .route("/admin/device/secret/revoke", post(secret_revoke))
        .route("/admin/device/secret/list", post(secret_list))
        .route("/admin/user/revoke_tokens", post(revoke_tokens))
}

#[derive(Deserialize)]
struct DeviceReq {
    #[serde(rename = "userId", default)]
    user_id: String,
    #[serde(rename = "deviceId", default)]
    device_id: String,
}

async fn secret_issue(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<DeviceReq>,
) -> Result<Json<Value>, ApiError> {
    let now = imgate_core::now_ms();
    let secret = state
        .credentials
        .issue(state.store.as_ref(), &req.user_id, &req.device_id, now)
        .await?;
    tracing::info!(user = %req.user_id, device = %req.device_id, "device secret issued");
    Ok(ok(json!({
        "userId": req.user_id,
        "deviceId": req.device_id,
        "secret": secret,
        "issuedMs": now,
    })))
}

async fn secret_revoke(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<DeviceReq>,
) -> Result<Json<Value>, ApiError> {
    let revoked = state
        .credentials
        .revoke(
            state.store.as_ref(),
            &req.user_id,
            &req.device_id,
            imgate_core::now_ms(),
        )
        .await?;
    if !revoked {
        return Err(ApiError::new(
            ErrorCode::NotExist,
            format!("device {} of {} has no secret", req.device_id, req.user_id),
        ));
    }
    // This node's sessions now; the other nodes' when they see the change.
    state.sessions.kick_device(
        &req.user_id,
        &req.device_id,
        ErrorCode::TokenError,
        "device secret revoked",
    );
    tracing::info!(user = %req.user_id, device = %req.device_id, "device secret revoked");
    Ok(ok(json!({
        "userId": req.user_id,
        "deviceId": req.device_id,
    })))
}

#[derive(Deserialize)]
struct ListReq {
    #[serde(rename = "userId", default)]
    user_id: Option<String>,
}

async fn secret_list(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<ListReq>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user_id.as_deref().filter(|u| !u.is_empty());
    Ok(ok(json!({ "devices": state.credentials.list(user) })))
}

#[derive(Deserialize)]
struct UserReq {
    #[serde(rename = "userId", default)]
    user_id: String,
}

async fn revoke_tokens(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<UserReq>,
) -> Result<Json<Value>, ApiError> {
    let mark = imgate_core::now_ms();
    state
        .credentials
        .revoke_tokens(state.store.as_ref(), &req.user_id, mark)
        .await?;
    // Every session of the user here (the other nodes' when they see the
    // change): the registry does not know which logged in with a token;
    // devices with a secret log in again.
    state
        .sessions
        .kick_user(&req.user_id, ErrorCode::TokenError, "tokens revoked");
    // Tokens issued at `mark` are revoked: reply once the clock is past it,
    // so that a token issued after the reply is valid. A millisecond at
    // most (bounded: the clock moves).
    while imgate_core::now_ms() <= mark {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    tracing::info!(user = %req.user_id, "tokens revoked");
    Ok(ok(json!({
        "userId": req.user_id,
        "revokedBefore": mark,
    })))
}
