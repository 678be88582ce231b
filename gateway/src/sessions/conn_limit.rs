//! Connection admission for every listener (DESIGN §6 step 4): a per-IP
//! rate of new connections (token bucket, default 100/s), a cap on the
//! connections one IP holds open at once, and a cap on open connections
//! per listener — each protocol has its own, so a flood on one listener
//! never refuses clients of the others. Refused connections are closed at
//! once and counted.
//!
//! [`AdmittingListener`] (client HTTP) also runs the TLS handshake when a
//! certificate is configured, and reads the PROXY protocol header on a
//! `proxy_protocol` listener: each in its own task, so a slow client
//! never holds up the accept loop.
//!
//! On a PROXY protocol listener admission has two steps: the listener's cap
//! at accept ([`ConnLimiter::admit_capped`]), then the per-IP rate and
//! share of the client's real address from the header
//! ([`ConnLimiter::admit_ip`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use imgate_core::pipeline::{Protocol, RateLimitConfig, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::proxy_header;
use crate::metrics::{ConnectionGuard, Metrics};
use crate::tls::{ClientStream, TlsAcceptor};

pub struct ConnLimiter {
    per_ip: RateLimiter,
    /// One cap per listener.
    open: HashMap<Protocol, Arc<Semaphore>>,
    max_per_ip: u32,
    /// Open connections per IP; an IP with none has no entry, so the map
    /// is bounded by the open connections.
    ip_open: Arc<Mutex<HashMap<IpAddr, u32>>>,
    pub refused_rate: AtomicU64,
    pub refused_full: AtomicU64,
    pub refused_ip_open: AtomicU64,
    /// Listeners behind a PROXY protocol balancer (`proxy_protocol`), and
    /// the time a connection there has to send its header.
    proxied: Vec<Protocol>,
    proxy_header_timeout: Duration,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    IpRate,
    /// This IP already holds its share of open connections.
    IpOpen,
    /// This listener is full.
    Full,
}

/// A slot of an admitted connection: its listener's permit and its IP's
/// count, both released on drop.
#[derive(Debug)]
pub struct Permit {
    _listener: OwnedSemaphorePermit,
    /// None: admitted without per-IP accounting.
    ip: Option<IpAddr>,
    ip_open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut open = self.ip_open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

const LISTENERS: [Protocol; 5] = [
    Protocol::Pb,
    Protocol::Mqtt,
    Protocol::Xmpp,
    Protocol::Http,
    Protocol::Admin,
];

impl ConnLimiter {
    /// `max_per_listener` open connections on each listener, at most
    /// `max_per_ip` of all of them from one IP (0 = no per-IP cap).
    pub fn new(per_ip_per_sec: u32, max_per_listener: usize, max_per_ip: u32) -> Self {
        ConnLimiter {
            per_ip: RateLimiter::new(RateLimitConfig {
                messages: per_ip_per_sec.max(1),
                per: Duration::from_secs(1),
            }),
            open: LISTENERS
                .iter()
                .map(|p| (*p, Arc::new(Semaphore::new(max_per_listener.max(1)))))
                .collect(),
            max_per_ip,
            ip_open: Arc::default(),
            refused_rate: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            refused_ip_open: AtomicU64::new(0),
            proxied: Vec::new(),
            proxy_header_timeout: Duration::from_secs(10),
        }
    }

    /// On `listeners`, every connection starts with a PROXY protocol header
    /// sent within `header_timeout`, and admission is in two steps: the
    /// listener's cap at accept ([`ConnLimiter::admit_capped`]), the
    /// per-IP limits of the client's real address once the header is read
    /// ([`ConnLimiter::admit_ip`]). Never the admin listener.
    pub fn with_proxy_protocol(mut self, listeners: &[Protocol], header_timeout: Duration) -> Self {
        self.proxied = listeners
            .iter()
            .copied()
            .filter(|l| *l != Protocol::Admin)
            .collect();
        self.proxy_header_timeout = header_timeout;
        self
    }

    /// The header time limit if `listener` takes a PROXY protocol header.
    pub fn proxy_header_timeout(&self, listener: Protocol) -> Option<Duration> {
        self.proxied
            .contains(&listener)
            .then_some(self.proxy_header_timeout)
    }

    /// Admit a new connection from `ip` on `listener`: the permit is held
    /// while it is open.
    pub fn admit(&self, listener: Protocol, ip: IpAddr) -> Result<Permit, Refused> {
        self.check_rate(ip)?;
        let permit = self.listener_slot(listener)?;
        self.count_ip(ip)?;
        Ok(Permit {
            _listener: permit,
            ip: Some(ip),
            ip_open: self.ip_open.clone(),
        })
    }

    /// The second step of admission on a PROXY protocol listener: the
    /// per-IP rate and share of the client's real address `ip` (known once
    /// the header is read), for a connection admitted under its listener's
    /// cap by [`ConnLimiter::admit_capped`]. Refused: the slot is released.
    pub fn admit_ip(&self, mut permit: Permit, ip: IpAddr) -> Result<Permit, Refused> {
        if permit.ip.is_some() {
            // Already counted under an IP (not a capped permit).
            return Ok(permit);
        }
        self.check_rate(ip)?;
        self.count_ip(ip)?;
        permit.ip = Some(ip);
        Ok(permit)
    }

    /// New connections per second from `ip`.
    fn check_rate(&self, ip: IpAddr) -> Result<(), Refused> {
        if self
            .per_ip
            .try_acquire(&[ip.to_string()], Instant::now())
            .is_err()
        {
            self.refused_rate.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::IpRate);
        }
        Ok(())
    }

    /// A slot under `listener`'s cap.
    fn listener_slot(&self, listener: Protocol) -> Result<OwnedSemaphorePermit, Refused> {
        let Some(slots) = self.open.get(&listener) else {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Full);
        };
        slots.clone().try_acquire_owned().map_err(|_| {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            Refused::Full
        })
    }

    /// One more open connection of `ip`, within its share; the caller's
    /// [`Permit`] gives it back.
    fn count_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let mut open = self.ip_open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if self.max_per_ip > 0 && *n >= self.max_per_ip {
            if *n == 0 {
                open.remove(&ip);
            }
            self.refused_ip_open.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::IpOpen);
        }
        *n += 1;
        Ok(())
    }

    /// Admit a connection on `listener` under its cap only (no per-IP
    /// rate or share): the admin listener, reachable under a flood.
    pub fn admit_capped(&self, listener: Protocol) -> Result<Permit, Refused> {
        let permit = self.listener_slot(listener)?;
        Ok(Permit {
            _listener: permit,
            ip: None,
            ip_open: self.ip_open.clone(),
        })
    }
}

/// A TCP (or TLS) stream admitted by the [`ConnLimiter`]; releases its
/// slot and its connection gauge when dropped.
pub struct Admitted {
    io: ClientStream,
    _permit: Permit,
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
    /// PROXY headers and TLS handshakes in progress; `None` for a
    /// connection refused or failed there.
    handshakes: JoinSet<Option<(Admitted, SocketAddr)>>,
    /// Whether the per-IP rate and share apply (not on the admin API).
    per_ip: bool,
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
            per_ip: true,
        }
    }

    /// Admit under the listener's cap only (see [`ConnLimiter::admit_capped`]).
    pub fn without_per_ip_limits(mut self) -> Self {
        self.per_ip = false;
        self
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
            let proxy_header = self
                .limiter
                .proxy_header_timeout(self.protocol)
                .filter(|_| self.per_ip);
            let admitted = match (proxy_header, self.per_ip) {
                // The per-IP limits wait for the client's address.
                (Some(_), _) | (None, false) => self.limiter.admit_capped(self.protocol),
                (None, true) => self.limiter.admit(self.protocol, peer.ip()),
            };
            let permit = match admitted {
                Ok(permit) => permit,
                Err(why) => {
                    tracing::debug!(%peer, ?why, "connection refused");
                    continue;
                }
            };
            let _ = io.set_nodelay(true);
            let gauge = self.metrics.connection(self.protocol);
            let tls = self.tls.clone();
            let Some(header_limit) = proxy_header else {
                let admitted = Admitted {
                    io: ClientStream::Plain(io),
                    _permit: permit,
                    _gauge: gauge,
                };
                if tls.is_none() {
                    return (admitted, peer);
                }
                self.handshakes.spawn(with_tls(admitted, peer, tls));
                continue;
            };
            // The header (then the handshake) in the connection's own task.
            let limiter = self.limiter.clone();
            let protocol = self.protocol;
            self.handshakes.spawn(async move {
                let mut io = io;
                let (permit, peer) = proxy_header::admit_proxied(
                    protocol,
                    &mut io,
                    peer,
                    permit,
                    &limiter,
                    header_limit,
                )
                .await?;
                let admitted = Admitted {
                    io: ClientStream::Plain(io),
                    _permit: permit,
                    _gauge: gauge,
                };
                with_tls(admitted, peer, tls).await
            });
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The TLS handshake of an admitted connection, if `tls` is set; `None`
/// (logged) when it fails.
async fn with_tls(
    mut admitted: Admitted,
    peer: SocketAddr,
    tls: Option<(TlsAcceptor, Duration)>,
) -> Option<(Admitted, SocketAddr)> {
    let Some((acceptor, limit)) = tls else {
        return Some((admitted, peer));
    };
    match admitted.io.upgrade(&acceptor, limit).await {
        Ok(()) => Some((admitted, peer)),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_rate_per_listener_caps_and_per_ip_open_cap() {
        let l = ConnLimiter::new(2, 2, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.admit(Protocol::Pb, a).unwrap();
        let _p2 = l.admit(Protocol::Pb, a).unwrap();
        assert_eq!(l.admit(Protocol::Pb, a).unwrap_err(), Refused::IpRate);
        assert_eq!(l.admit(Protocol::Pb, b).unwrap_err(), Refused::Full);
        // Another listener has its own slots.
        let _m = l.admit(Protocol::Mqtt, b).unwrap();
        drop(p1);
        // (Refused attempts still count against their IP's rate.)
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert!(
            l.admit(Protocol::Pb, c).is_ok(),
            "a closed connection frees its slot"
        );

        let l = ConnLimiter::new(100, 100, 2);
        let x = l.admit(Protocol::Http, a).unwrap();
        let _y = l.admit(Protocol::Mqtt, a).unwrap();
        assert_eq!(l.admit(Protocol::Xmpp, a).unwrap_err(), Refused::IpOpen);
        assert!(l.admit(Protocol::Xmpp, b).is_ok(), "other IPs unaffected");
        drop(x);
        assert!(l.admit(Protocol::Xmpp, a).is_ok(), "released on close");
        assert_eq!(
            l.ip_open.lock().unwrap().len(),
            1,
            "only IPs with open connections (b's closed)"
        );
    }
}
