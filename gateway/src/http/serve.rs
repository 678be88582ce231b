//! The HTTP listeners' connections (client API and admin API, plain or
//! TLS), admitted by the shared accept loop (`sessions::listener`) and
//! served by hyper's HTTP/1 with a timer, so every connection is bounded
//! in time: the request headers must arrive within
//! `http_header_timeout_secs` (the same limit closes an idle keep-alive
//! connection), and the body within `http_body_timeout_secs` (see
//! [`super::body::read_body_first`]). On shutdown: let requests in
//! progress finish, close.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::state::AppState;
use crate::transport::ClientStream;

/// Largest request head (request line and headers) hyper buffers.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serve `router` on one admitted connection (HTTP/1 keep-alive) until
/// the client leaves, a deadline passes, or the gateway drains (requests
/// in progress finish first).
pub async fn serve_connection(io: ClientStream, peer: SocketAddr, router: Router, state: AppState) {
    let header_timeout = Duration::from_secs(state.config.http_header_timeout_secs.max(1));
    let service = TowerToHyperService::new(router);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = state.draining() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "http: connection ended");
    }
}
