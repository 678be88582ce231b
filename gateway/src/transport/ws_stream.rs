//! [`WsStream`]: a WebSocket connection as the byte stream a session reads
//! and writes, so the PB, MQTT and XMPP sessions run on it unchanged.
//!
//! Reading yields the payloads of the data messages in order (MQTT over
//! WebSocket allows a packet to span messages and a message to hold
//! several; the framers reassemble). Pings are answered by tungstenite; a
//! Close ends the stream.
//!
//! Writing sends one message per unit the protocol defines: one PB frame
//! or one MQTT packet per binary message (a write holding several is cut
//! at their boundaries, read from their headers), one XMPP element per
//! text message (RFC 7395 §3.3.3: the XMPP session ends every element
//! with a NUL byte on a WebSocket, [`XMPP_UNIT_END`], which XML text
//! never holds; the NUL is not sent). A message is only buffered by a write;
//! `flush` sends it (every session flushes after its writes).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::ClientStream;

/// Ends an XMPP element in what the session writes on a WebSocket (a
/// character no XML document may contain).
pub const XMPP_UNIT_END: u8 = 0;

/// What the messages of a WebSocket connection carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsFraming {
    /// Binary messages, one MQTT control packet each on the way out.
    Mqtt,
    /// Binary messages, one PB frame each on the way out.
    Pb,
    /// Text messages, one XML element each (RFC 7395).
    Xmpp,
}

impl WsFraming {
    /// The length of the first whole unit at the start of `buf`, if `buf`
    /// starts with one.
    fn unit_len(self, buf: &[u8]) -> Option<usize> {
        let n = match self {
            WsFraming::Mqtt => mqtt_packet_len(buf)?,
            WsFraming::Pb => pb_frame_len(buf)?,
            WsFraming::Xmpp => return buf.iter().position(|b| *b == XMPP_UNIT_END),
        };
        (n <= buf.len()).then_some(n)
    }

    /// The message at the start of `buf` and the bytes it consumes (an
    /// XMPP element's end mark is consumed, not sent).
    fn next_unit(self, buf: &[u8]) -> (usize, usize) {
        match (self, self.unit_len(buf)) {
            (WsFraming::Xmpp, Some(n)) => (n, n + 1),
            (_, Some(n)) => (n, n),
            // Our encoders write whole units; anything else goes as it is.
            (_, None) => (buf.len(), buf.len()),
        }
    }
}

/// Fixed header (type byte + remaining-length varint) plus the rest.
fn mqtt_packet_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        len |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some(1 + i + 1 + len);
        }
    }
    None
}

/// The PB header's `length` (the whole frame, header included).
fn pb_frame_len(buf: &[u8]) -> Option<usize> {
    let length = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    (length >= imgate_codecs::pb::HEADER_LEN).then_some(length)
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::NotConnected, "websocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// A WebSocket connection as a byte stream (see the module docs).
pub struct WsStream {
    ws: WebSocketStream<ClientStream>,
    framing: WsFraming,
    /// The unread rest of the current incoming message.
    read: Bytes,
    /// The peer closed (or sent a Close): reads see the end.
    eof: bool,
}

impl WsStream {
    pub fn new(ws: WebSocketStream<ClientStream>, framing: WsFraming) -> WsStream {
        WsStream {
            ws,
            framing,
            read: Bytes::new(),
            eof: false,
        }
    }

    pub fn framing(&self) -> WsFraming {
        self.framing
    }

    /// Whether the WebSocket runs over TLS (`wss`).
    pub fn is_tls(&self) -> bool {
        self.ws.get_ref().is_tls()
    }

    fn message(&self, unit: &[u8]) -> io::Result<Message> {
        let bytes = Bytes::copy_from_slice(unit);
        Ok(match self.framing {
            WsFraming::Xmpp => Message::Text(
                Utf8Bytes::try_from(bytes)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "XML is not UTF-8"))?,
            ),
            WsFraming::Mqtt | WsFraming::Pb => Message::Binary(bytes),
        })
    }
}

impl AsyncRead for WsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.read.is_empty() {
                let n = this.read.len().min(buf.remaining());
                buf.put_slice(&this.read[..n]);
                this.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let next = match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None => None,
                Some(Ok(m)) => Some(m),
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => None,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            };
            match (next, this.framing) {
                (None | Some(Message::Close(_)), _) => this.eof = true,
                (Some(Message::Binary(b)), WsFraming::Mqtt | WsFraming::Pb) => this.read = b,
                (Some(Message::Text(t)), WsFraming::Xmpp) => this.read = t.into(),
                (Some(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)), _) => {}
                // MQTT over WebSocket: "any other type of data frame" closes
                // the connection ([MQTT-6.0.0-1]); RFC 7395 uses text only.
                (Some(Message::Text(_)), _) | (Some(Message::Binary(_)), WsFraming::Xmpp) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "wrong WebSocket message type for this protocol",
                    )))
                }
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
        let (len, consumed) = this.framing.next_unit(buf);
        if len > 0 {
            let message = this.message(&buf[..len])?;
            Pin::new(&mut this.ws)
                .start_send(message)
                .map_err(io_error)?;
        }
        Poll::Ready(Ok(consumed))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().ws).poll_close(cx)) {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_units_are_cut_at_packet_boundaries() {
        // PINGRESP (2 bytes) then a PUBLISH with remaining length 130
        // (two-byte varint).
        let mut buf = vec![0xd0, 0x00, 0x30, 0x82, 0x01];
        buf.extend(std::iter::repeat_n(7, 130));
        assert_eq!(WsFraming::Mqtt.unit_len(&buf), Some(2));
        assert_eq!(WsFraming::Mqtt.unit_len(&buf[2..]), Some(133));
        // Incomplete: no whole unit.
        assert_eq!(WsFraming::Mqtt.unit_len(&buf[2..40]), None);
        assert_eq!(WsFraming::Mqtt.unit_len(&[0x30]), None);
        // A varint longer than four bytes is no packet.
        assert_eq!(
            WsFraming::Mqtt.unit_len(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            None
        );
    }

    #[test]
    fn xmpp_units_end_at_their_mark_which_is_not_sent() {
        let buf = b"<a/>\0<b>x</b>\0";
        assert_eq!(WsFraming::Xmpp.next_unit(buf), (4, 5));
        assert_eq!(WsFraming::Xmpp.next_unit(&buf[5..]), (8, 9));
        // Unmarked text (nothing of ours) goes as one message.
        assert_eq!(WsFraming::Xmpp.next_unit(b"<c/>"), (4, 4));
    }

    #[test]
    fn pb_units_are_whole_frames() {
        use bytes::BytesMut;
        use imgate_codecs::pb::{PbFrame, PbFramer};
        use tokio_util::codec::Encoder;
        let mut framer = PbFramer::default();
        let mut a = BytesMut::new();
        framer
            .encode(
                PbFrame::error(1, imgate_core::ErrorCode::ServerError, "x"),
                &mut a,
            )
            .unwrap();
        let mut b = BytesMut::new();
        framer.encode(PbFrame::heartbeat(2), &mut b).unwrap();
        let mut both = a.to_vec();
        both.extend_from_slice(&b);
        assert_eq!(WsFraming::Pb.unit_len(&both), Some(a.len()));
        assert_eq!(WsFraming::Pb.unit_len(&both[a.len()..]), Some(b.len()));
        assert_eq!(WsFraming::Pb.unit_len(&a[..a.len() - 1]), None);
        assert_eq!(
            WsFraming::Pb.unit_len(&[0, 0, 0, 3, 0]),
            None,
            "length below the header"
        );
    }
}
