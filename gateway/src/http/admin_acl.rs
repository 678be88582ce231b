//! Admin API for the MQTT topic ACL of generic topics (see
//! `crate::mqtt::acl`):
//!
//! - `GET /admin/mqtt/acl` → `{"source": "none"|"file"|"api", "rules": n,
//!   "acl": "<mosquitto text>"|null}`;
//! - `PUT /admin/mqtt/acl` with the rule set as the body, in mosquitto
//!   `acl_file` text (the same format as `mqtt_acl_file`, so a file can be
//!   sent as it is; any content type) → `{"source": "api", "rules": n}`; a
//!   bad rule set is refused whole (400, code 251, its line in `msg`);
//! - `DELETE /admin/mqtt/acl`: back to each node's `mqtt_acl_file` (or
//!   none).
//!
//! A change is in force on this node before the reply, and on every other
//! node as soon as the store hands it over (the store setting the policy
//! API uses too); it is stored, so it also survives restarts, and it
//! replaces the file's rules until a DELETE.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use imgate_core::ErrorCode;
use serde_json::{json, Value};

use super::auth::AdminAuth;
use super::{ok, ApiError};
use crate::mqtt::acl::Active;
use crate::mqtt::acl_file;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/admin/mqtt/acl",
        get(acl_get).put(acl_put).delete(acl_delete),
    )
}

fn describe(active: &Active) -> Value {
    match active {
        Active::Open => json!({ "source": "none", "rules": 0, "acl": null }),
        Active::Rules { set, source } => json!({
            "source": source.as_str(),
            "rules": set.rule_count(),
            "acl": set.text,
        }),
    }
}

async fn acl_get(State(state): State<AppState>, _: AdminAuth) -> Json<Value> {
    ok(describe(&state.mqtt_acl.current()))
}

async fn acl_put(
    State(state): State<AppState>,
    _: AdminAuth,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|rejection| {
        ApiError::new(
            ErrorCode::InvalidData,
            format!("cannot read body: {rejection}"),
        )
        .with_status(rejection.status())
    })?;
    let set = acl_file::parse_bytes(&body).map_err(|e| {
        tracing::debug!(error = %e, "admin: MQTT topic ACL refused");
        ApiError::new(ErrorCode::InvalidParameter, format!("ACL refused: {e}"))
    })?;
    let rules = set.rule_count();
    persist(&state, Some(set)).await?;
    Ok(ok(json!({ "source": "api", "rules": rules })))
}

async fn acl_delete(State(state): State<AppState>, _: AdminAuth) -> Result<Json<Value>, ApiError> {
    persist(&state, None).await?;
    Ok(ok(describe(&state.mqtt_acl.current())))
}

async fn persist(state: &AppState, set: Option<acl_file::RuleSet>) -> Result<(), ApiError> {
    state
        .mqtt_acl
        .replace(set, state.store.as_ref())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot persist the MQTT topic ACL");
            ApiError::new(
                ErrorCode::ServerError,
                format!("changed on this node, but not persisted: {e}"),
            )
        })
}
