//! TLS for the conformance clients: a rustls client (ring provider) that
//! trusts only the suite's self-signed test certificate
//! (`conformance/fixtures/tls/`, for `localhost` and 127.0.0.1), and
//! [`Conn`], the blocking stream the raw clients read and write: plain TCP
//! or TLS over it; [`UreqTls`] gives the HTTP helpers `https://` with the
//! same trust.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The test certificate (PEM): also the CA file for Python clients.
pub fn cert_path() -> PathBuf {
    fixtures().join("cert.pem")
}

/// The test certificate's private key (PEM).
pub fn key_path() -> PathBuf {
    fixtures().join("key.pem")
}

fn fixtures() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls")
}

/// The `IMGATE_*` settings that give a gateway the test certificate.
pub fn gateway_env() -> Vec<(&'static str, String)> {
    vec![
        ("IMGATE_TLS_CERT", cert_path().display().to_string()),
        ("IMGATE_TLS_KEY", key_path().display().to_string()),
    ]
}

/// A client configuration trusting only the test certificate.
pub fn client_config() -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_path()).expect("read the test certificate") {
        roots
            .add(cert.expect("test certificate PEM"))
            .expect("test certificate as a trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A client stream: plain TCP or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    /// TLS to `addr` (verified as `localhost`), handshake completed.
    pub fn connect_tls(addr: &str) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(addr)?;
        Self::tls_over(tcp)
    }

    /// TLS client handshake on an already connected socket (STARTTLS).
    pub fn tls_over(tcp: TcpStream) -> std::io::Result<Conn> {
        tcp.set_nodelay(true).ok();
        let name = ServerName::try_from("localhost").expect("server name");
        let conn = ClientConnection::new(client_config(), name).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Conn::Tls(Box::new(tls)))
    }

    /// The TCP socket underneath (timeouts, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// ureq's TLS connector for `https://` URLs, trusting only the test
/// certificate (its names are `localhost` and 127.0.0.1).
pub struct UreqTls;

impl ureq::TlsConnector for UreqTls {
    fn connect(
        &self,
        dns_name: &str,
        io: Box<dyn ureq::ReadWrite>,
    ) -> Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        let name = ServerName::try_from(dns_name.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(client_config(), name).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(conn, io);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Box::new(UreqTlsStream(tls)))
    }
}

#[derive(Debug)]
struct UreqTlsStream(StreamOwned<ClientConnection, Box<dyn ureq::ReadWrite>>);

impl ureq::ReadWrite for UreqTlsStream {
    fn socket(&self) -> Option<&TcpStream> {
        self.0.sock.socket()
    }
}

impl Read for UreqTlsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for UreqTlsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
