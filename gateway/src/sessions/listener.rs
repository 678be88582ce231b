//! The accept loop every TCP protocol shares: a cap on open connections,
//! one task per connection, and on shutdown: stop accepting, then wait for
//! the sessions to drain (each session watches the shutdown signal itself).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use imgate_core::pipeline::Protocol;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
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
    let permits = Arc::new(Semaphore::new(state.config.max_connections.max(1)));
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(protocol = protocol.name(), %peer, "connection limit reached; refusing");
            drop(stream);
            continue;
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
