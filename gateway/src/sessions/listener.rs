//! The one accept loop every listener runs (a row of
//! `crate::listeners::LISTENERS`): admission (per-IP connection rate and
//! open cap, the listener's own cap), one task per connection, and in that
//! task the PROXY protocol header (on a `proxy_protocol` listener), the
//! TLS handshake (implicit-TLS rows) and the handler. On shutdown: stop
//! accepting, then wait for the sessions to drain (each session watches
//! the shutdown signal itself). Accept errors (out of file descriptors)
//! back off briefly instead of spinning.
//!
//! On a `proxy_protocol` listener the accept loop only takes a slot under
//! the listener's cap; the connection's task reads the PROXY header
//! (before any TLS) and admits the client's real address under the per-IP
//! limits ([`super::proxy_header::admit_proxied`]); that address is the
//! handler's `peer`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::proxy_header;
use super::SessionCtx;
use crate::listeners::ListenerSpec;
use crate::transport::{self, ClientStream, TlsAcceptor};

/// What runs on an admitted connection (after TLS, if any).
pub type Handler = Arc<
    dyn Fn(ClientStream, SocketAddr, SessionCtx) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// How long the loop pauses after a failed accept (EMFILE and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accept connections on `listener` and run `handler` on each; with `tls`,
/// every connection goes through the TLS handshake first (bounded by
/// `login_timeout_secs`, in the connection's own task).
pub async fn run_listener(
    spec: &'static ListenerSpec,
    listener: TcpListener,
    state: SessionCtx,
    tls: Option<TlsAcceptor>,
    handler: Handler,
) {
    let limit = state.login_timeout();
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
                tracing::warn!(listener = spec.name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let proxy_header = state
            .conn_limiter
            .proxy_header_timeout(spec.name)
            .filter(|_| spec.per_ip_limits);
        let admitted = match (proxy_header, spec.per_ip_limits) {
            // The per-IP limits wait for the client's address (or do not
            // apply: the admin listener).
            (Some(_), _) | (None, false) => state.conn_limiter.admit_capped(spec.name),
            (None, true) => state.conn_limiter.admit(spec.name, peer.ip()),
        };
        let permit = match admitted {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(listener = spec.name, %peer, ?why, "connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gauge = state.metrics.listener_connection(spec.name);
        let conn = spec.service.protocol().map(|p| state.metrics.connection(p));
        let handler = handler.clone();
        let acceptor = tls.clone();
        let state = state.clone();
        sessions.spawn(async move {
            let mut stream = stream;
            let (permit, peer) = match proxy_header {
                None => (permit, peer),
                Some(header_limit) => {
                    let limiter = state.conn_limiter.clone();
                    let proxied = proxy_header::admit_proxied(
                        spec.name,
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
            match Box::pin(transport::accept(acceptor.as_ref(), stream, limit)).await {
                Ok(stream) => handler(stream, peer, state).await,
                Err(e) => {
                    tracing::debug!(listener = spec.name, %peer, error = %e, "TLS handshake failed");
                }
            }
            drop((conn, gauge, permit));
        });
    }
    while sessions.join_next().await.is_some() {}
}
