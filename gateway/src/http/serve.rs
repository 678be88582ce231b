//! The HTTP listeners' serve loop (client API and admin API): admitted
//! connections ([`AdmittingListener`]) served by hyper's HTTP/1 with a
//! timer, so every connection is bounded in time: the request headers
//! must arrive within `http_header_timeout_secs` (the same limit closes an
//! idle keep-alive connection), and the body within
//! `http_body_timeout_secs` (see [`super::body::read_body_first`]). On
//! shutdown: stop accepting, let requests in progress finish, close.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinSet;

use crate::sessions::AdmittingListener;
use crate::state::AppState;

/// Largest request head (request line and headers) hyper buffers.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serve `router` on `listener` until the gateway drains.
pub async fn serve(mut listener: AdmittingListener, router: Router, state: AppState) {
    let header_timeout = Duration::from_secs(state.config.http_header_timeout_secs.max(1));
    let mut conns = JoinSet::new();
    loop {
        let (io, peer) = tokio::select! {
            a = axum::serve::Listener::accept(&mut listener) => a,
            _ = state.draining() => break,
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let service = TowerToHyperService::new(router.clone());
        let st = state.clone();
        conns.spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = st.draining() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http: connection ended");
            }
        });
    }
    while conns.join_next().await.is_some() {}
}
