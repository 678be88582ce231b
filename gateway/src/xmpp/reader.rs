//! [`XmppReader`]: the framer the session driver reads an XMPP
//! connection with — `imgate_codecs::xmpp::XmppFramer` (the stream tag on
//! TCP and TLS, RFC 7395 framing on a WebSocket) plus what the session
//! needs of it:
//! - whitespace between stanzas (keepalives, RFC 6120 §4.6.1) comes out
//!   as [`XmppIn::Keepalive`], so it counts as traffic for the idle timer;
//! - before SASL success stanzas are held to the small pre-auth limit
//!   (`xmpp_preauth_max_stanza`): a client that has not logged in has no
//!   business sending large ones; [`XmppReader::authenticated`] raises it
//!   to the full limit.

use bytes::BytesMut;
use imgate_codecs::xmpp::{XmppCodecError, XmppEvent, XmppFramer};
use tokio_util::codec::Decoder;

/// What the reader yields.
#[derive(Debug)]
pub enum XmppIn {
    Event(XmppEvent),
    /// Only whitespace arrived since the last item.
    Keepalive,
}

pub struct XmppReader {
    framer: XmppFramer,
    /// The stanza limit once authenticated; `None` once it applies.
    after_auth_max_stanza: Option<usize>,
}

impl XmppReader {
    /// A reader for a TCP/TLS stream or (`websocket`) RFC 7395 framing,
    /// stanzas limited to `preauth_max` bytes until authenticated.
    pub fn new(
        websocket: bool,
        max_stanza: usize,
        max_depth: usize,
        preauth_max: usize,
    ) -> XmppReader {
        let mut framer = if websocket {
            XmppFramer::websocket(max_stanza, max_depth)
        } else {
            XmppFramer::new(max_stanza, max_depth)
        };
        let full = framer.max_stanza();
        let mut after_auth_max_stanza = None;
        if preauth_max < full {
            framer.set_max_stanza(preauth_max);
            after_auth_max_stanza = Some(full);
        }
        XmppReader {
            framer,
            after_auth_max_stanza,
        }
    }

    /// SASL succeeded: the full stanza limit applies from now on.
    pub fn authenticated(&mut self) {
        if let Some(full) = self.after_auth_max_stanza.take() {
            self.framer.set_max_stanza(full);
        }
    }

    /// Expect a new stream header (after SASL success or STARTTLS).
    pub fn restart(&mut self) {
        self.framer.restart();
    }
}

impl Decoder for XmppReader {
    type Item = XmppIn;
    type Error = XmppCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<XmppIn>, XmppCodecError> {
        let before = src.len();
        match self.framer.decode(src) {
            Ok(Some(ev)) => Ok(Some(XmppIn::Event(ev))),
            // The framer drops inter-stanza whitespace at once.
            Ok(None) if src.len() < before && src.is_empty() => Ok(Some(XmppIn::Keepalive)),
            Ok(None) => Ok(None),
            Err(e) => {
                if self.after_auth_max_stanza.is_some() {
                    tracing::debug!(error = %e, "xmpp: refused before authentication");
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>";

    #[test]
    fn whitespace_is_a_keepalive_and_stanzas_are_events() {
        let mut r = XmppReader::new(false, 1 << 16, 32, 1 << 16);
        let mut buf = BytesMut::from(HEADER);
        assert!(matches!(
            r.decode(&mut buf).unwrap(),
            Some(XmppIn::Event(XmppEvent::StreamOpen(_)))
        ));
        buf.extend_from_slice(b"  \n");
        assert!(matches!(
            r.decode(&mut buf).unwrap(),
            Some(XmppIn::Keepalive)
        ));
        assert!(r.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"<presence/>");
        assert!(matches!(
            r.decode(&mut buf).unwrap(),
            Some(XmppIn::Event(XmppEvent::Stanza(_)))
        ));
    }

    #[test]
    fn the_preauth_limit_holds_until_authenticated() {
        let big = format!("<iq><query>{}</query></iq>", "x".repeat(2000));
        let mut r = XmppReader::new(false, 1 << 16, 32, 1024);
        let mut buf = BytesMut::from(format!("{HEADER}{big}").as_str());
        assert!(r.decode(&mut buf).unwrap().is_some());
        assert!(r.decode(&mut buf).is_err(), "over the pre-auth limit");

        let mut r = XmppReader::new(false, 1 << 16, 32, 1024);
        r.authenticated();
        let mut buf = BytesMut::from(format!("{HEADER}{big}").as_str());
        assert!(r.decode(&mut buf).unwrap().is_some());
        assert!(matches!(
            r.decode(&mut buf).unwrap(),
            Some(XmppIn::Event(XmppEvent::Stanza(_)))
        ));
    }
}
