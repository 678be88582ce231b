//! Admin API for the policy pipeline: the sensitive-word list and its hit
//! log, user status (normal / muted / forbidden), per-user rate limits.
//! Every change takes effect on the next message here, is stored durably,
//! and reaches every other node through the store.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use imgate_core::pipeline::UserStatus;
use imgate_core::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AdminAuth;
use super::body::JsonBody;
use super::{ok, ApiError};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/sensitive/add", post(sensitive_add))
        .route("/admin/sensitive/del", post(sensitive_del))
        .route("/admin/sensitive/query", post(sensitive_query))
        .route("/admin/sensitive/hits", post(sensitive_hits))
        .route("/admin/user/status", post(user_status_set))
        .route("/admin/user/status/get", post(user_status_get))
        .route("/admin/user/rate_limit", post(user_rate_limit))
}

async fn persist(state: &AppState) -> Result<(), ApiError> {
    state.policy.save(state.store.as_ref()).await.map_err(|e| {
        tracing::error!(error = %e, "cannot persist the policy");
        ApiError::new(
            ErrorCode::ServerError,
            format!("changed, but not persisted: {e}"),
        )
    })
}

#[derive(Deserialize)]
struct WordsReq {
    #[serde(default)]
    words: Vec<String>,
}

const MAX_WORD_BYTES: usize = 256;

fn check_words(words: &[String]) -> Result<(), ApiError> {
    if words.iter().any(|w| w.len() > MAX_WORD_BYTES) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "a word is longer than 256 bytes",
        ));
    }
    Ok(())
}

async fn sensitive_add(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<WordsReq>,
) -> Result<Json<Value>, ApiError> {
    check_words(&req.words)?;
    let added = state.policy.words.add(&req.words);
    persist(&state).await?;
    Ok(ok(
        json!({ "added": added, "count": state.policy.words.current().len() }),
    ))
}

async fn sensitive_del(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<WordsReq>,
) -> Result<Json<Value>, ApiError> {
    let removed = state.policy.words.remove(&req.words);
    persist(&state).await?;
    Ok(ok(
        json!({ "removed": removed, "count": state.policy.words.current().len() }),
    ))
}

async fn sensitive_query(
    State(state): State<AppState>,
    _: AdminAuth,
) -> Result<Json<Value>, ApiError> {
    Ok(ok(json!({ "words": state.policy.words.words() })))
}

#[derive(Deserialize)]
struct HitsReq {
    #[serde(rename = "userId", default)]
    user_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn sensitive_hits(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<HitsReq>,
) -> Result<Json<Value>, ApiError> {
    let limit = req.limit.unwrap_or(100).clamp(1, 1000);
    let hits = state.policy.hits.recent(req.user_id.as_deref(), limit);
    Ok(ok(json!({ "hits": hits })))
}

#[derive(Deserialize)]
struct StatusReq {
    #[serde(rename = "userId")]
    user_id: String,
    #[serde(default)]
    status: i32,
}

async fn user_status_set(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<StatusReq>,
) -> Result<Json<Value>, ApiError> {
    if req.user_id.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "userId is required",
        ));
    }
    let status = UserStatus::from_i32(req.status).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            "status is 0 normal, 1 muted or 2 forbidden",
        )
    })?;
    state.policy.book.set_status(&req.user_id, status);
    persist(&state).await?;
    let kicked = if status == UserStatus::Forbidden {
        state.sessions.kick_user(
            &req.user_id,
            ErrorCode::UserBlocked,
            "user forbidden by the administrator",
        )
    } else {
        0
    };
    Ok(ok(
        json!({ "userId": req.user_id, "status": status.as_i32(), "kicked": kicked }),
    ))
}

#[derive(Deserialize)]
struct UserReq {
    #[serde(rename = "userId")]
    user_id: String,
}

async fn user_status_get(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<UserReq>,
) -> Result<Json<Value>, ApiError> {
    let status = state.policy.book.status(&req.user_id);
    Ok(ok(
        json!({ "userId": req.user_id, "status": status.as_i32() }),
    ))
}

#[derive(Deserialize)]
struct RateReq {
    #[serde(rename = "userId")]
    user_id: String,
    /// 0 clears the override.
    #[serde(default)]
    messages: u32,
    #[serde(rename = "perSecs", default)]
    per_secs: u64,
}

async fn user_rate_limit(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<RateReq>,
) -> Result<Json<Value>, ApiError> {
    if req.user_id.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "userId is required",
        ));
    }
    let limit = if req.messages == 0 {
        None
    } else {
        if req.per_secs == 0 {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                "perSecs must be positive",
            ));
        }
        Some((req.messages, req.per_secs))
    };
    state.policy.book.set_rate_override(&req.user_id, limit);
    persist(&state).await?;
    Ok(ok(
        json!({ "userId": req.user_id, "messages": req.messages, "perSecs": req.per_secs }),
    ))
}
