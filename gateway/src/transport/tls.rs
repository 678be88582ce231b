//! TLS for the client listeners (DESIGN §5.6, §8): rustls with the ring
//! provider, enabled when `tls_cert` and `tls_key` (PEM files) are set.
//!
//! - The TLS rows of the listener table (`pbs`, `mqtts`, `xmpps`, `https`,
//!   `wss`) use implicit TLS: the handshake is the first thing on a new
//!   connection ([`handshake`], bounded by `login_timeout_secs`) and the
//!   session then speaks over the TLS stream. The plain rows stay plain.
//! - The plain XMPP listener upgrades with STARTTLS (RFC 6120 §5), which
//!   is then required before SASL ([`ClientStream::upgrade`]).
//! - The admin API uses implicit TLS too (HTTPS), unless `admin_tls =
//!   false` keeps it plain for a localhost-only or proxied admin listener;
//!   the CLI verifies it (`cli::admin_tls`).
//!
//! The connection types are in the parent module ([`super::ClientStream`]).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
pub use tokio_rustls::TlsAcceptor;

use super::ClientStream;
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
