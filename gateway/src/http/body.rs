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

/// After a body went over the limit, how much more is read and thrown
/// away (bounded) so the 413 reply is not lost to a reset connection.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Middleware: read the whole request body (up to `limit`) before any
/// extractor runs. A request rejected by an auth extractor would otherwise
/// leave its body unread in the socket; closing a connection with unread
/// data makes the kernel send RST, and the client can lose the error reply
/// that was already on its way ("unexpected EOF" instead of a 401).
pub async fn read_body_first(
    req: Request,
    next: axum::middleware::Next,
    limit: usize,
    deadline: std::time::Duration,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let (parts, mut body) = req.into_parts();
    let mut buf = bytes::BytesMut::new();
    let mut drained = 0usize;
    let read = async {
        loop {
            match body.frame().await {
                None => break Ok(()),
                Some(Err(_)) => break Err(()),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if buf.len() + data.len() <= limit && drained == 0 {
                        buf.extend_from_slice(&data);
                    } else {
                        drained += data.len();
                        if drained > DRAIN_LIMIT {
                            break Ok(());
                        }
                    }
                }
            }
        }
    };
    // A body trickled in (or never sent) holds a connection: bounded.
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(())) => {}
        Ok(Err(())) => {
            return ApiError::new(ErrorCode::InvalidData, "cannot read the request body")
                .into_response();
        }
        Err(_) => {
            tracing::debug!(path = %parts.uri.path(), "http: request body not sent in time");
            let mut r = ApiError::new(ErrorCode::Timeout, "the request body was not sent in time")
                .with_status(StatusCode::REQUEST_TIMEOUT)
                .into_response();
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return r;
        }
    }
    if drained > 0 {
        return ApiError::new(ErrorCode::InvalidData, "request body is too large")
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            .into_response();
    }
    next.run(Request::from_parts(
        parts,
        axum::body::Body::from(buf.freeze()),
    ))
    .await
}
