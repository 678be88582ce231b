//! TLS for the client listeners (DESIGN §8): rustls with the ring
//! provider, enabled when `tls_cert` and `tls_key` (PEM files) are set.
//!
//! - PB, MQTT and client HTTP use implicit TLS: the handshake is the first
//!   thing on a new connection ([`handshake`], bounded by
//!   `login_timeout_secs`) and the session then speaks over the TLS stream.
//! - XMPP keeps the plain listener and upgrades with STARTTLS (RFC 6120
//!   §5), which is then required before SASL ([`ClientStream::upgrade`]).
//! - The admin API uses implicit TLS too (HTTPS), unless `admin_tls =
//!   false` keeps it plain for a localhost-only or proxied admin listener;
//!   the CLI verifies it (`cli::admin_tls`).
//!
//! [`ClientStream`] is the one stream type every session works on, so the
//! session code is the same with and without TLS.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
pub use tokio_rustls::TlsAcceptor;

use crate::config::Config;

/// The acceptor for the configured certificate, or `None` when `tls_cert`
/// and `tls_key` are both empty. Unreadable or invalid files, a key that
/// does not match the certificate, or only one of the two settings are
/// startup errors.
pub fn acceptor(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    let cert = config.tls_cert.trim();
    let key = config.tls_key.trim();
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {}
        _ => bail!("tls_cert and tls_key (IMGATE_TLS_CERT, IMGATE_TLS_KEY) must be set together"),
    }
    let certs = load_certs(Path::new(cert))?;
    let key = load_key(Path::new(key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls_cert and tls_key do not form a usable certificate and key")?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading tls_cert {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls_cert {}: bad PEM", path.display()))?;
    if certs.is_empty() {
        bail!("tls_cert {}: no CERTIFICATE in the file", path.display());
    }
    Ok(certs)
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("reading tls_key {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).with_context(|| {
        format!(
            "tls_key {}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM)",
            path.display()
        )
    })
}

/// A client connection: plain TCP or TLS over TCP.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while [`ClientStream::upgrade`] runs (or after it failed):
    /// reads see end of stream, writes fail.
    Closed,
}

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// STARTTLS: run the server handshake on this plain connection, within
    /// `limit`. On failure the stream is left closed.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor, limit: Duration) -> io::Result<()> {
        let ClientStream::Plain(tcp) = std::mem::replace(self, ClientStream::Closed) else {
            return Err(io::Error::other("the stream is not plain TCP"));
        };
        *self = handshake(acceptor, tcp, limit).await?;
        Ok(())
    }
}

/// The server side of a TLS handshake on `tcp`, within `limit`.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    limit: Duration,
) -> io::Result<ClientStream> {
    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Ok(ClientStream::Tls(Box::new(tls))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// A new connection as the session gets it: through the handshake when
/// `tls` is set (implicit TLS), else as it is.
pub async fn accept(
    tls: Option<&TlsAcceptor>,
    tcp: TcpStream,
    limit: Duration,
) -> io::Result<ClientStream> {
    match tls {
        Some(acceptor) => handshake(acceptor, tcp, limit).await,
        None => Ok(ClientStream::Plain(tcp)),
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientStream::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientStream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            ClientStream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
            ClientStream::Closed => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientStream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientStream::Closed => Poll::Ready(Ok(())),
        }
    }
}
