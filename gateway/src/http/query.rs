//! Query strings and unmatched routes answered in the contract's JSON
//! (DESIGN §3.6): a bad query is 400 `InvalidParameter`, an unknown path
//! 404 `NotExist`, a known path with the wrong method 405
//! `InvalidParameter` — never axum's plain-text or empty bodies.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use imgate_core::ErrorCode;
use serde::de::DeserializeOwned;

use super::ApiError;

/// `Query<T>` whose rejection is a JSON [`ApiError`].
pub struct JsonQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for JsonQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(JsonQuery(q)),
            Err(e) => Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!("invalid query string: {}", e.body_text()),
            )),
        }
    }
}

/// Unknown path: 404 with `NotExist`.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotExist, "no such path")
}

/// Known path, wrong method: 405.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidParameter,
        "method not allowed on this path",
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}
