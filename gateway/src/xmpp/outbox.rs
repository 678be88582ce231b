//! [`Outbox`]: the XML an XMPP session writes, rendered as the transport
//! wants it, waiting to be handed to the driver's write buffer
//! ([`XmppEncoder`]). On TCP and TLS it is one stream of XML; on a
//! WebSocket (RFC 7395) every element is written with its namespaces
//! declared and ends with [`XMPP_UNIT_END`], where the WebSocket
//! transport cuts it into a message of its own, and the stream header and
//! close are the framing's `<open/>` and `<close/>`.
//!
//! The session's handlers render into an outbox whether they run in the
//! protocol's callbacks or in a driver task (where no write buffer is at
//! hand): the bytes are the same either way.

use bytes::BytesMut;
use imgate_codecs::xmpp::{ns, Element};
use tokio_util::codec::Encoder;

use crate::transport::ws_stream::XMPP_UNIT_END;

/// Rendered XML, as it goes on the wire.
pub struct Outbox {
    xml: String,
    websocket: bool,
    /// Our stream header is written (a stream error must follow one).
    header_sent: bool,
    /// The stream was ended (an error or the close is rendered).
    closed: bool,
}

impl Outbox {
    pub fn new(websocket: bool) -> Outbox {
        Outbox {
            xml: String::new(),
            websocket,
            header_sent: false,
            closed: false,
        }
    }

    /// An outbox for a bound session (its stream header was written).
    pub fn bound(websocket: bool) -> Outbox {
        let mut out = Outbox::new(websocket);
        out.header_sent = true;
        out
    }

    pub fn push(&mut self, el: &Element) {
        if self.websocket {
            self.xml.push_str(&el.to_standalone_xml());
            self.xml.push(XMPP_UNIT_END as char);
        } else {
            el.write_xml(&mut self.xml, ns::CLIENT);
        }
    }

    /// Our stream header (RFC 6120 §4.7) answering the client's; on a
    /// WebSocket the `<open/>` of RFC 7395 §3.4.
    pub fn header(&mut self, domain: &str, stream_id: &str) {
        self.header_sent = true;
        if self.websocket {
            let open = Element::new("open", ns::FRAMING)
                .attr("id", stream_id)
                .attr("from", domain)
                .attr("version", "1.0")
                .attr("xml:lang", "en");
            self.push(&open);
            return;
        }
        self.xml.push_str(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}' version='1.0' xml:lang='en'>",
            ns::CLIENT,
            ns::STREAM,
            stream_id,
            domain
        ));
    }

    /// A new stream follows (STARTTLS, SASL success): its header is ours
    /// to write again.
    pub fn restart(&mut self) {
        self.header_sent = false;
    }

    /// A stream error (RFC 6120 §4.9) with `text`, then the stream's end;
    /// a header first if none was written (the error must be inside a
    /// stream).
    pub fn stream_error(&mut self, domain: &str, condition: &str, text: &str) {
        if self.closed {
            return;
        }
        if !self.header_sent {
            self.header(domain, &super::random_id());
        }
        let err = Element::new("error", ns::STREAM)
            .child(Element::new(condition, ns::STREAM_ERRORS))
            .child(Element::new("text", ns::STREAM_ERRORS).text(text));
        if self.websocket {
            self.push(&err);
        } else {
            err.write_xml(&mut self.xml, ns::CLIENT);
        }
        self.close();
    }

    /// End the stream cleanly (`</stream:stream>`, or `<close/>` on a
    /// WebSocket).
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.websocket {
            self.push(&Element::new("close", ns::FRAMING));
        } else {
            self.xml.push_str("</stream:stream>");
        }
    }

    /// Whether the stream was ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.xml.is_empty()
    }

    /// Hand what is rendered to `encode` (the driver's write buffer) and
    /// start over with no buffer (an idle session holds none).
    pub fn drain_into(&mut self, encode: impl FnOnce(Rendered<'_>)) {
        if self.xml.is_empty() {
            return;
        }
        let xml = std::mem::take(&mut self.xml);
        encode(Rendered(xml.as_bytes()));
    }
}

/// XML rendered by an [`Outbox`].
pub struct Rendered<'a>(pub &'a [u8]);

/// Copies rendered XML into the write buffer.
#[derive(Default)]
pub struct XmppEncoder;

impl Encoder<Rendered<'_>> for XmppEncoder {
    type Error = std::io::Error;

    fn encode(&mut self, item: Rendered<'_>, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.extend_from_slice(item.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(out: &mut Outbox) -> String {
        let mut s = String::new();
        out.drain_into(|r| s = String::from_utf8(r.0.to_vec()).unwrap());
        s
    }

    #[test]
    fn tcp_errors_follow_a_header_and_end_the_stream() {
        let mut out = Outbox::new(false);
        out.stream_error("example.org", "not-authorized", "244 no");
        let xml = drained(&mut out);
        assert!(
            xml.starts_with("<?xml version='1.0'?><stream:stream"),
            "{xml}"
        );
        assert!(xml.contains("<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"));
        assert!(xml.ends_with("</stream:stream>"), "{xml}");
        // Once ended, nothing more is rendered.
        out.close();
        out.stream_error("example.org", "conflict", "x");
        assert!(out.is_empty());
    }

    #[test]
    fn websocket_elements_are_standalone_and_marked() {
        let mut out = Outbox::bound(true);
        out.push(&Element::new("message", ns::CLIENT).attr("to", "bob@example.org"));
        out.close();
        let xml = drained(&mut out);
        let units: Vec<&str> = xml.split('\0').collect();
        assert_eq!(units.len(), 3, "{xml}");
        assert!(
            units[0].starts_with("<message xmlns='jabber:client'"),
            "{xml}"
        );
        assert_eq!(
            units[1],
            "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
        );
        assert_eq!(units[2], "");
    }
}
