//! Connection admission for every listener (DESIGN §6 step 4): a per-IP
//! rate of new connections (token bucket, default 100/s) and a global cap
//! on open connections shared by all protocols. Refused connections are
//! closed at once and counted.
//!
//! [`AdmittingListener`] (client HTTP) also runs the TLS handshake when a
//! certificate is configured: each in its own task, so a slow handshake
//! never holds up the accept loop.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use imgate_core::pipeline::{Protocol, RateLimitConfig, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::metrics::{ConnectionGuard, Metrics};
use crate::tls::{ClientStream, TlsAcceptor};

pub struct ConnLimiter {
    per_ip: RateLimiter,
    open: Arc<Semaphore>,
    pub refused_rate: AtomicU64,
    pub refused_full: AtomicU64,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    IpRate,
    Full,
}

impl ConnLimiter {
    pub fn new(per_ip_per_sec: u32, max_connections: usize) -> Self {
        ConnLimiter {
            per_ip: RateLimiter::new(RateLimitConfig {
                messages: per_ip_per_sec.max(1),
                per: Duration::from_secs(1),
            }),
            open: Arc::new(Semaphore::new(max_connections.max(1))),
            refused_rate: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
        }
    }

    /// Admit a new connection from `ip`: the permit is held while it is open.
    pub fn admit(&self, ip: IpAddr) -> Result<OwnedSemaphorePermit, Refused> {
        if self
            .per_ip
            .try_acquire(&[ip.to_string()], Instant::now())
            .is_err()
        {
            self.refused_rate.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::IpRate);
        }
        self.open.clone().try_acquire_owned().map_err(|_| {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            Refused::Full
        })
    }
}

/// A TCP (or TLS) stream admitted by the [`ConnLimiter`]; releases its
/// slot and its connection gauge when dropped.
pub struct Admitted {
    io: ClientStream,
    _permit: OwnedSemaphorePermit,
    _gauge: ConnectionGuard,
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The HTTP listeners' accept loop goes through admission too (and the
/// TLS handshake, when `tls` is set).
pub struct AdmittingListener {
    inner: TcpListener,
    limiter: Arc<ConnLimiter>,
    metrics: Arc<Metrics>,
    protocol: Protocol,
    /// The acceptor and the handshake time limit.
    tls: Option<(TlsAcceptor, Duration)>,
    /// Handshakes in progress; `None` for one that failed.
    handshakes: JoinSet<Option<(Admitted, SocketAddr)>>,
}

impl AdmittingListener {
    pub fn new(
        inner: TcpListener,
        limiter: Arc<ConnLimiter>,
        metrics: Arc<Metrics>,
        protocol: Protocol,
        tls: Option<(TlsAcceptor, Duration)>,
    ) -> Self {
        AdmittingListener {
            inner,
            limiter,
            metrics,
            protocol,
            tls,
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for AdmittingListener {
    type Io = Admitted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Admitted, SocketAddr) {
        loop {
            // Both branches are cancel-safe (axum drops this future at
            // shutdown).
            let accepted = tokio::select! {
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                    continue;
                }
                a = self.inner.accept() => a,
            };
            let (io, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.limiter.admit(peer.ip()) {
                Ok(permit) => {
                    let _ = io.set_nodelay(true);
                    let mut admitted = Admitted {
                        io: ClientStream::Plain(io),
                        _permit: permit,
                        _gauge: self.metrics.connection(self.protocol),
                    };
                    let Some((acceptor, limit)) = self.tls.clone() else {
                        return (admitted, peer);
                    };
                    self.handshakes.spawn(async move {
                        match admitted.io.upgrade(&acceptor, limit).await {
                            Ok(()) => Some((admitted, peer)),
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                None
                            }
                        }
                    });
                }
                Err(why) => tracing::debug!(%peer, ?why, "connection refused"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_rate_and_global_cap() {
        let l = ConnLimiter::new(2, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.admit(a).unwrap();
        let _p2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), Refused::IpRate);
        let _p3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).unwrap_err(), Refused::Full);
        drop(p1);
        // (Refused attempts still count against their IP's rate.)
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert!(l.admit(c).is_ok(), "a closed connection frees its slot");
    }
}
