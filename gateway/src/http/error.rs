//! Errors as JSON with the contract code and the matching HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use imgate_core::{ErrorCode, ImError};
use serde_json::json;

/// The HTTP status for a contract code (DESIGN §4: 401, 403, 429, 400).
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Success => StatusCode::OK,
        ErrorCode::InvalidData | ErrorCode::InvalidMessage | ErrorCode::InvalidParameter => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::TokenError
        | ErrorCode::ApiNotSigned
        | ErrorCode::SignExpired
        | ErrorCode::AuthFailure => StatusCode::UNAUTHORIZED,
        ErrorCode::KickedOff
        | ErrorCode::UserForbidden
        | ErrorCode::NotInGroup
        | ErrorCode::SensitiveWord
        | ErrorCode::UserBlocked
        | ErrorCode::NoRight => StatusCode::FORBIDDEN,
        ErrorCode::OverFrequency => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::NotExist => StatusCode::NOT_FOUND,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error reply. `status` overrides the code's usual status (413).
#[derive(Debug)]
pub struct ApiError {
    pub error: ImError,
    pub status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        ApiError {
            error: ImError::new(code, msg),
            status: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }
}

impl From<ImError> for ApiError {
    fn from(error: ImError) -> Self {
        ApiError {
            error,
            status: None,
        }
    }
}

impl From<imgate_core::StoreError> for ApiError {
    fn from(e: imgate_core::StoreError) -> Self {
        ApiError::from(ImError::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| status_for(self.error.code));
        let body = json!({ "code": self.error.code.as_i32(), "msg": self.error.message });
        let mut resp = (status, Json(body)).into_response();
        if let Some(after) = self.error.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
