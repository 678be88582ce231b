//! The accept loop every TCP protocol shares: admission (per-IP connection
//! rate, global cap on open connections), one task per connection, the TLS
//! handshake there when the listener uses implicit TLS, and on shutdown:
//! stop accepting, then wait for the sessions to drain (each session
//! watches the shutdown signal itself).
//!
//! On a `proxy_protocol` listener the accept loop only takes a slot under
//! the listener's cap; the connection's task reads the PROXY header
//! (before any TLS) and admits the client's real address under the per-IP
//! limits ([`super::proxy_header::admit_proxied`]); that address is the
//! handler's `peer`.

use std::future::Future;
use std::net::SocketAddr;

use imgate_core::pipeline::Protocol;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::proxy_header;
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
        let proxy_header = state.conn_limiter.proxy_header_timeout(protocol);
        let admitted = match proxy_header {
            // The per-IP limits wait for the client's address.
            Some(_) => state.conn_limiter.admit_capped(protocol),
            None => state.conn_limiter.admit(protocol, peer.ip()),
        };
        let permit = match admitted {
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
            let mut stream = stream;
            let (permit, peer) = match proxy_header {
                None => (permit, peer),
                Some(header_limit) => {
                    let limiter = state.conn_limiter.clone();
                    let proxied = proxy_header::admit_proxied(
                        protocol,
                        &mut stream,
                        peer,
                        permit,
                        &limiter,
                        header_limit,
                    );
                    // A header still awaited does not hold up the drain.
                    tokio::select! {
                        admitted = Box::pin(proxied) => match admitted {
                            Some(admitted) => admitted,
                            None => return,
                        },
                        _ = state.draining() => return,
                    }
                }
            };
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
