//! A JSON body extractor whose every failure is a contract JSON error:
//! malformed JSON → 400 code 2, body over the limit → 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use imgate_core::ErrorCode;
use serde::de::DeserializeOwned;

use super::ApiError;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::InvalidData, "request body is too large")
                    .with_status(status)
            } else {
                ApiError::new(
                    ErrorCode::InvalidData,
                    format!("cannot read body: {rejection}"),
                )
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::new(ErrorCode::InvalidData, format!("invalid JSON: {e}")))
    }
}
