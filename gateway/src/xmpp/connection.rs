//! `XmppConnection`: one client socket with its read buffer and
//! [`XmppFramer`] — events in, XML text out (mini-redis `connection.rs`).
//! On a WebSocket (RFC 7395) the framer reads `<open/>`/`<close/>` framing
//! and every element is written as a message of its own, with its
//! namespaces declared.
//!
//! Reading is cancel-safe (bytes land in the buffer and are framed on the
//! next call), so the session can `select!` on it next to deliveries and
//! kicks. Every read of any bytes, whitespace keepalives included, counts
//! as activity for the idle timer.
//!
//! Before SASL success the framer's stanza limit is the small pre-auth one
//! (`xmpp_preauth_max_stanza`): a client that has not logged in has no
//! business sending large stanzas; [`XmppConnection::authenticated`]
//! raises it to the full limit.

use bytes::BytesMut;
use imgate_codecs::xmpp::{ns, Element, XmppCodecError, XmppEvent, XmppFramer};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::sessions::idle_buffers::READ_CHUNK;
use crate::transport::{ClientStream, TlsAcceptor};

/// The reason a read ended the stream.
#[derive(Debug)]
pub enum ReadEnd {
    /// The peer closed the TCP connection.
    Eof,
    /// The bytes broke the XMPP framing rules.
    Codec(XmppCodecError),
}

pub struct XmppConnection {
    stream: ClientStream,
    /// RFC 7395 framing: one element per WebSocket message, `<open/>` and
    /// `<close/>` instead of the stream tag.
    websocket: bool,
    buf: BytesMut,
    framer: XmppFramer,
    /// Our stream header has been written (errors must follow one).
    header_sent: bool,
    /// Bytes were read since the last call to [`XmppConnection::take_activity`].
    activity: bool,
    /// The stanza limit once authenticated; `None` once it applies.
    after_auth_max_stanza: Option<usize>,
}

impl XmppConnection {
    /// A connection on `stream`, with the framer of its transport: the
    /// stream tag on TCP and TLS, RFC 7395 framing on a WebSocket.
    pub fn new(stream: ClientStream, max_stanza: usize, max_depth: usize) -> XmppConnection {
        let websocket = stream.websocket().is_some();
        let framer = if websocket {
            XmppFramer::websocket(max_stanza, max_depth)
        } else {
            XmppFramer::new(max_stanza, max_depth)
        };
        XmppConnection {
            stream,
            websocket,
            buf: BytesMut::new(),
            framer,
            header_sent: false,
            activity: false,
            after_auth_max_stanza: None,
        }
    }

    /// Until [`XmppConnection::authenticated`], stanzas are limited to
    /// `max` bytes (if below the framer's limit); over it the stream ends
    /// with `policy-violation`.
    pub fn with_preauth_limit(mut self, max: usize) -> XmppConnection {
        let full = self.framer.max_stanza();
        if max < full {
            self.framer.set_max_stanza(max);
            self.after_auth_max_stanza = Some(full);
        }
        self
    }

    /// SASL succeeded: the full stanza limit applies from now on.
    pub fn authenticated(&mut self) {
        if let Some(full) = self.after_auth_max_stanza.take() {
            self.framer.set_max_stanza(full);
        }
    }

    /// The next event; cancel-safe.
    pub async fn read_event(&mut self) -> Result<XmppEvent, ReadEnd> {
        loop {
            match self.framer.decode_event(&mut self.buf) {
                Ok(Some(ev)) => return Ok(ev),
                Ok(None) => {}
                Err(e) => {
                    if self.after_auth_max_stanza.is_some() {
                        tracing::debug!(error = %e, "xmpp: refused before authentication");
                    }
                    return Err(ReadEnd::Codec(e));
                }
            }
            // Never hold more than one item's worth of bytes: the framer
            // errors out at its limit, so the buffer stays bounded.
            match self.read_more().await {
                Ok(0) | Err(_) => return Err(ReadEnd::Eof),
                Ok(_) => self.activity = true,
            }
        }
    }

    /// Read what the peer sent. On plain TCP with nothing buffered the
    /// wait holds no buffer (an idle connection costs no read buffer, see
    /// `sessions::idle_buffers`); TLS keeps its buffer (rustls may hold
    /// decrypted bytes the socket's readiness does not announce).
    async fn read_more(&mut self) -> std::io::Result<usize> {
        let ClientStream::Plain(tcp) = &self.stream else {
            self.buf.reserve(READ_CHUNK);
            return self.stream.read_buf(&mut self.buf).await;
        };
        loop {
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                self.buf = BytesMut::new();
            }
            tcp.readable().await?;
            self.buf.reserve(READ_CHUNK);
            match tcp.try_read_buf(&mut self.buf) {
                // Readiness was stale: wait again (without the buffer).
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Whether anything was read since the last call.
    pub fn take_activity(&mut self) -> bool {
        std::mem::take(&mut self.activity)
    }

    /// Whether the stream runs over TLS (after STARTTLS, direct TLS, `wss`).
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Whether STARTTLS can run here: plain TCP only.
    pub fn can_starttls(&self) -> bool {
        matches!(self.stream, ClientStream::Plain(_))
    }

    /// A batch of stanzas for one [`XmppConnection::write_batch`].
    pub fn batch(&self) -> OutBatch {
        OutBatch {
            xml: String::new(),
            ends: Vec::new(),
            standalone: self.websocket,
        }
    }

    /// Write a batch: one socket write on TCP, one message per stanza on
    /// a WebSocket; false if the peer is gone.
    pub async fn write_batch(&mut self, batch: OutBatch) -> bool {
        if !self.websocket {
            return self.write_str(&batch.xml).await;
        }
        let stream = &mut self.stream;
        crate::sessions::write_deadline::bounded(async {
            let mut start = 0;
            for end in batch.ends {
                stream.write_all(&batch.xml.as_bytes()[start..end]).await?;
                start = end;
            }
            stream.flush().await
        })
        .await
        .is_ok()
    }

    /// STARTTLS (RFC 6120 §5.4.3.3): after `<proceed/>` was written, run
    /// the TLS handshake on this connection and expect a new stream header.
    /// Plain-text bytes the client sent after `<starttls/>` are discarded:
    /// nothing read before the handshake may leak into the protected
    /// stream. False if the handshake failed (the connection is then dead).
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor, limit: Duration) -> bool {
        let _ = crate::sessions::write_deadline::bounded(self.stream.flush()).await;
        self.buf.clear();
        self.restart_stream();
        self.stream.upgrade(acceptor, limit).await.is_ok()
    }

    /// Expect a new stream header (after SASL success or STARTTLS).
    pub fn restart_stream(&mut self) {
        self.framer.restart();
        self.header_sent = false;
    }

    /// Write raw XML text; false if the peer is gone.
    /// (Within the write deadline: a peer that stops reading is dropped,
    /// see [`crate::sessions::write_deadline`].)
    /// On a WebSocket `xml` must be one element (one message).
    async fn write_str(&mut self, xml: &str) -> bool {
        let stream = &mut self.stream;
        crate::sessions::write_deadline::bounded(async {
            stream.write_all(xml.as_bytes()).await?;
            stream.flush().await
        })
        .await
        .is_ok()
    }

    pub async fn write_element(&mut self, el: &Element) -> bool {
        if self.websocket {
            return self.write_str(&el.to_standalone_xml()).await;
        }
        self.write_str(&el.to_xml()).await
    }

    /// Our stream header (RFC 6120 §4.7), answering the client's; on a
    /// WebSocket the `<open/>` of RFC 7395 §3.4.
    pub async fn write_header(&mut self, domain: &str, stream_id: &str) -> bool {
        self.header_sent = true;
        if self.websocket {
            let open = Element::new("open", ns::FRAMING)
                .attr("id", stream_id)
                .attr("from", domain)
                .attr("version", "1.0")
                .attr("xml:lang", "en");
            return self.write_element(&open).await;
        }
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}' version='1.0' xml:lang='en'>",
            ns::CLIENT,
            ns::STREAM,
            stream_id,
            domain
        );
        self.write_str(&header).await
    }

    /// A stream error (RFC 6120 §4.9) with `text`, then the stream close.
    /// A header is written first if none was (the error must be inside a
    /// stream).
    pub async fn stream_error(&mut self, domain: &str, condition: &str, text: &str) {
        if !self.header_sent {
            let id = super::random_id();
            let _ = self.write_header(domain, &id).await;
        }
        let err = Element::new("error", ns::STREAM)
            .child(Element::new(condition, ns::STREAM_ERRORS))
            .child(Element::new("text", ns::STREAM_ERRORS).text(text));
        if self.websocket {
            let _ = self.write_element(&err).await;
            self.close().await;
            return;
        }
        let _ = self
            .write_str(&format!("{}</stream:stream>", err.to_xml()))
            .await;
        let _ = crate::sessions::write_deadline::bounded(self.stream.shutdown()).await;
    }

    /// Close the stream cleanly (`</stream:stream>`, or `<close/>` and
    /// the WebSocket close on a WebSocket).
    pub async fn close(&mut self) {
        if self.websocket {
            let _ = self
                .write_element(&Element::new("close", ns::FRAMING))
                .await;
        } else {
            let _ = self.write_str("</stream:stream>").await;
        }
        let _ = crate::sessions::write_deadline::bounded(self.stream.shutdown()).await;
    }
}

/// Stanzas rendered for one write (see [`XmppConnection::batch`]).
pub struct OutBatch {
    xml: String,
    /// On a WebSocket: where each stanza ends in `xml`.
    ends: Vec<usize>,
    standalone: bool,
}

impl OutBatch {
    pub fn push(&mut self, el: &Element) {
        if self.standalone {
            self.xml.push_str(&el.to_standalone_xml());
            self.ends.push(self.xml.len());
        } else {
            el.write_xml(&mut self.xml, ns::CLIENT);
        }
    }
}

/// The framer as a plain function (tokio-util's `Decoder` trait method,
/// named so the connection reads clearly).
trait DecodeEvent {
    fn decode_event(&mut self, buf: &mut BytesMut) -> Result<Option<XmppEvent>, XmppCodecError>;
}

impl DecodeEvent for XmppFramer {
    fn decode_event(&mut self, buf: &mut BytesMut) -> Result<Option<XmppEvent>, XmppCodecError> {
        tokio_util::codec::Decoder::decode(self, buf)
    }
}
