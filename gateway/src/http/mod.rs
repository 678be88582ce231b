//! The HTTP side: the client API (`/v1/...`, bearer tokens) and the signed
//! admin API (`/admin/...`, `/metrics`), both on axum.
//!
//! Every reply is `{"code":int,"msg":string,"result":object?}`; errors keep
//! the contract code and get the HTTP status of DESIGN §4.

mod admin_acl;
mod admin_api;
mod admin_devices;
mod admin_migration;
mod admin_migration_people;
mod admin_policy;
mod admin_sessions;
mod auth;
mod body;
mod client_api;
mod conversations;
mod error;
mod events;
mod health;
mod query;
pub mod serve;
#[cfg(test)]
mod spec_routes;

pub use admin_api::admin_router;
pub use client_api::client_router;
pub use error::ApiError;

use axum::Json;
use serde_json::{json, Value};

/// A success reply carrying `result`.
pub fn ok(result: Value) -> Json<Value> {
    Json(json!({ "code": 0, "msg": "success", "result": result }))
}
