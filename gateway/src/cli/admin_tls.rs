//! HTTPS for the CLI's admin client: with a certificate configured the
//! admin listener speaks TLS (`admin_tls`, docs/security.md), so the CLI
//! verifies it with rustls (ring), plugged into ureq as its TLS connector.
//!
//! Trust: the `--admin-ca` PEM file if given, else the server's own
//! `tls_cert` (`IMGATE_TLS_CERT`: a CLI run on the server's host trusts
//! the certificate the server presents, self-signed or not), else the
//! system's root certificates. `--admin-tls-name` verifies another name
//! than the URL's host (e.g. the certificate's public name while the admin
//! listener is reached on 127.0.0.1).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A rustls client for ureq's `https://` requests.
pub struct AdminTls {
    config: Arc<ClientConfig>,
    /// The name verified instead of the URL's host.
    name: Option<String>,
}

impl AdminTls {
    /// `ca`: PEM file of trust anchors; `None` = the system's roots.
    pub fn new(ca: Option<&Path>, name: Option<String>) -> anyhow::Result<AdminTls> {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading the admin CA file {}", path.display()))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.with_context(|| format!("{}: bad PEM", path.display()))?;
                    roots
                        .add(cert)
                        .with_context(|| format!("{}: not a usable certificate", path.display()))?;
                }
                if roots.is_empty() {
                    bail!("{}: no CERTIFICATE in the file", path.display());
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    bail!("no system root certificates: give --admin-ca FILE (IMGATE_ADMIN_CA)");
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(AdminTls {
            config: Arc::new(config),
            name: name.filter(|n| !n.trim().is_empty()),
        })
    }
}

impl ureq::TlsConnector for AdminTls {
    fn connect(
        &self,
        dns_name: &str,
        io: Box<dyn ureq::ReadWrite>,
    ) -> Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        let host = self.name.as_deref().unwrap_or(dns_name);
        // ureq gives IPv6 hosts in brackets; ServerName wants the bare address.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("TLS name {host:?}: {e}"),
            )
        })?;
        let conn =
            ClientConnection::new(self.config.clone(), name).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(conn, io);
        // Handshake now, so a certificate problem is reported as such.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Box::new(TlsStream(tls)))
    }
}

#[derive(Debug)]
struct TlsStream(StreamOwned<ClientConnection, Box<dyn ureq::ReadWrite>>);

impl ureq::ReadWrite for TlsStream {
    fn socket(&self) -> Option<&TcpStream> {
        self.0.sock.socket()
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
