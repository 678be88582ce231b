//! Probes for load balancers and supervisors, unsigned, on both HTTP
//! listeners:
//! - `GET /healthz` → 200 `{"code":0,"msg":"ok"}` while the process
//!   serves (liveness);
//! - `GET /readyz` → 200 `{"code":0,"msg":"ready"}` while the node takes
//!   new clients, 503 `{"code":4,"msg":"draining"}` once shutdown began
//!   (see `shutdown_ready_delay_secs`). The HTTP listeners start only
//!   after every listener is bound and the store is open, so any answer
//!   comes from a started node.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use imgate_core::ErrorCode;
use serde_json::{json, Value};

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({"code": 0, "msg": "ok"})) }),
        )
        .route("/readyz", get(readyz))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, Json(json!({"code": 0, "msg": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"code": ErrorCode::ServerError.as_i32(), "msg": "draining"})),
        )
    }
}
