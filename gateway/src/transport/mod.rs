//! Transports, apart from codecs (DESIGN §5.6): a client connection is a
//! [`ClientStream`] — plain TCP, TLS over TCP ([`tls`]), or a WebSocket
//! over either ([`websocket`], [`ws_stream`], [`ws_upgrade`]) — and every
//! protocol's session runs on it unchanged.

pub mod tls;
pub mod websocket;
pub mod write_deadline;
pub mod ws_stream;
pub mod ws_upgrade;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub use tls::{accept, TlsAcceptor};
pub use ws_stream::{WsFraming, WsStream};

/// A client connection: plain TCP, TLS over TCP, or a WebSocket over
/// either (`crate::websocket`).
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WsStream>),
    /// Only while [`ClientStream::upgrade`] runs (or after it failed):
    /// reads see end of stream, writes fail.
    Closed,
}

impl ClientStream {
    /// Whether the bytes travel encrypted (TLS, or a WebSocket over TLS).
    pub fn is_tls(&self) -> bool {
        match self {
            ClientStream::Tls(_) => true,
            ClientStream::Ws(ws) => ws.is_tls(),
            _ => false,
        }
    }

    /// The WebSocket framing, when this is a WebSocket connection.
    pub fn websocket(&self) -> Option<WsFraming> {
        match self {
            ClientStream::Ws(ws) => Some(ws.framing()),
            _ => None,
        }
    }

    /// STARTTLS: run the server handshake on this plain connection, within
    /// `limit`. On failure the stream is left closed.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor, limit: Duration) -> io::Result<()> {
        let ClientStream::Plain(tcp) = std::mem::replace(self, ClientStream::Closed) else {
            return Err(io::Error::other("the stream is not plain TCP"));
        };
        *self = tls::handshake(acceptor, tcp, limit).await?;
        Ok(())
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
            ClientStream::Ws(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            ClientStream::Ws(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
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
            ClientStream::Ws(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            ClientStream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
            ClientStream::Ws(s) => s.is_write_vectored(),
            ClientStream::Closed => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientStream::Ws(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientStream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientStream::Ws(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientStream::Closed => Poll::Ready(Ok(())),
        }
    }
}
