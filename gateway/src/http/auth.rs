//! Request authentication: bearer tokens for the client API, signatures for
//! the admin API.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use imgate_core::model::Platform;
use imgate_core::pipeline::{Principal, Protocol};
use imgate_core::ErrorCode;

use super::ApiError;
use crate::admin_sign;
use crate::state::AppState;

/// The logged-in client of a `/v1` request.
pub struct ClientAuth(pub Principal);

impl FromRequestParts<AppState> for ClientAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::TokenError,
                    "missing Authorization: Bearer <token>",
                )
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::TokenError,
                    "Authorization must be Bearer <token>",
                )
            })?;
        // The one login of every protocol (sessions::login).
        Ok(ClientAuth(crate::sessions::login::bearer(state, token)?))
    }
}

/// A correctly signed admin request.
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let h = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let now = imgate_core::now_ms();
        let ts = admin_sign::verify_within(
            h("nonce"),
            h("timestamp"),
            h("sign"),
            &state.admin_secret,
            now,
            state.admin_nonces.window_ms(),
        )?;
        state
            .admin_nonces
            .check(h("sign").unwrap_or_default(), ts, now)?;
        Ok(AdminAuth)
    }
}

/// The principal the admin API acts as.
pub fn admin_principal() -> Principal {
    Principal {
        user_id: "admin".into(),
        device_id: "admin-api".into(),
        platform: Platform::Unknown,
        protocol: Protocol::Admin,
        admin: true,
    }
}
