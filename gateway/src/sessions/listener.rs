//! The accept loop every TCP protocol shares: admission (per-IP connection
//! rate, global cap on open connections), one task per connection, the TLS
//! handshake there when the listener uses implicit TLS, and on shutdown:
//! stop accepting, then wait for the sessions to drain (each session
//! watches the shutdown signal itself).

use std::future::Future;
use std::net::SocketAddr;

use imgate_core::pipeline::Protocol;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::state::AppState;
use crate::tls::{self, ClientStream};

/// Accept connections on `listener` and run `handler` on each. With
/// `implicit_tls` and a configured certificate, every connection goes
/// through the TLS handshake first (bounded by `login_timeout_secs`, in the
/// connection's own task); otherwise the handler gets the plain stream.
pub async fn run_listener<F, Fut>(
    protocol: Protocol,
    listener: TcpListener,
    state: AppState,
    implicit_tls: bool,
    handler: F,
) where
    F: Fn(ClientStream, SocketAddr, AppState) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = std::sync::Arc::new(handler);
    let acceptor = if implicit_tls {
        state.tls.clone()
    } else {
        None
    };
    let limit = crate::server::login_timeout(&state);
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
        let permit = match state.conn_limiter.admit(protocol, peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(protocol = protocol.name(), %peer, ?why, "connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = state.metrics.connection(protocol);
        let handler = handler.clone();
        let acceptor = acceptor.clone();
        let state = state.clone();
        sessions.spawn(async move {
            // Boxed: the handshake's state is not kept for the session's life.
            match Box::pin(tls::accept(acceptor.as_ref(), stream, limit)).await {
                Ok(stream) => handler(stream, peer, state).await,
                Err(e) => {
                    tracing::debug!(protocol = protocol.name(), %peer, error = %e, "TLS handshake failed");
                }
            }
            drop(conn);
            drop(permit);
        });
    }
    while sessions.join_next().await.is_some() {}
}
