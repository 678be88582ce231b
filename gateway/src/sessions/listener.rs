//! The accept loop every TCP protocol shares: admission (per-IP connection
//! rate, global cap on open connections), one task per connection, and on
//! shutdown: stop accepting, then wait for the sessions to drain (each
//! session watches the shutdown signal itself).

use std::future::Future;
use std::net::SocketAddr;

use imgate_core::pipeline::Protocol;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::state::AppState;

pub async fn run_listener<F, Fut>(
    protocol: Protocol,
    listener: TcpListener,
    state: AppState,
    handler: F,
) where
    F: Fn(TcpStream, SocketAddr, AppState) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut sessions = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = state.draining() => break,
            // Reap finished sessions so the set does not grow.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(protocol = protocol.name(), error = %e, "accept failed");
                continue;
            }
        };
        let permit = match state.conn_limiter.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(protocol = protocol.name(), %peer, ?why, "connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = state.metrics.connection(protocol);
        let fut = handler(stream, peer, state.clone());
        sessions.spawn(async move {
            fut.await;
            drop(conn);
            drop(permit);
        });
    }
    while sessions.join_next().await.is_some() {}
}
