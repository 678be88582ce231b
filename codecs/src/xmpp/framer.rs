//! `XmppFramer`: bytes → [`XmppEvent`]s (stream header, one stanza at a
//! time, stream close) for an XMPP connection, as a tokio-util `Decoder`.
//!
//! An XMPP stream is one XML document that stays open for the whole
//! connection, so a document parser cannot be pointed at it. The framer
//! instead runs a small resumable byte scanner that only tracks markup
//! boundaries (`<`, `>`, quotes, CDATA, nesting depth) and remembers where
//! it stopped, so each byte is looked at once however the input is split
//! — mid-tag, mid-attribute, mid-UTF-8 character (the scanner only reacts
//! to ASCII bytes, which never occur inside a multi-byte character). When a
//! top-level element is complete, its bytes (and only then) are handed to
//! quick-xml ([`super::tree`]) to build the [`Element`]. Incomplete input is
//! `Ok(None)` and the buffer advances only past whole items.
//!
//! Limits: every item (header or stanza) is at most `max_stanza` bytes and
//! `max_depth` levels deep; DTDs, comments and processing instructions
//! (other than the XML declaration before the header) are refused as soon
//! as their first bytes arrive. After SASL success both sides restart the
//! stream (RFC 6120 §6.4.6): the session calls [`XmppFramer::restart`].

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use super::element::Element;
use super::error::XmppCodecError;
use super::ns;
use super::tree::{parse_stanza, parse_stream_header, Scope};

/// Default largest stanza, in bytes (RFC 6120 §13.12 asks for at least
/// 10 000; imgate payloads are capped at 64 KiB before escaping).
pub const DEFAULT_MAX_STANZA: usize = 256 * 1024;
/// Default deepest element nesting inside a stanza.
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// What the framer found in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmppEvent {
    /// The client opened (or restarted) the stream; the header's attributes.
    StreamOpen(Element),
    /// One complete top-level element (a stanza or a negotiation element).
    Stanza(Element),
    /// The client closed the stream (`</stream:stream>`).
    StreamClose,
}

/// Where the scanner is inside the current markup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Character data (or inter-stanza whitespace at depth 0).
    Text,
    /// Just after `<`: which kind of markup is it?
    Open,
    /// Inside a start tag; `Some(q)` while inside a quoted value.
    StartTag(Option<u8>),
    /// Inside an end tag.
    EndTag,
    /// Inside `<![CDATA[ ... ]]>`.
    Cdata,
    /// Inside the `<?xml ...?>` declaration before the stream header.
    Declaration,
}

/// The framer of one XMPP connection.
#[derive(Debug, Clone)]
pub struct XmppFramer {
    max_stanza: usize,
    max_depth: usize,
    /// The stream header has been read (and not restarted since).
    in_stream: bool,
    /// Namespace scope of the open stream (from its header).
    scope: Scope,
    /// The qualified name of the stream element, for the closing tag.
    stream_qname: String,
    // Scanner state, as offsets into the decode buffer; valid because the
    // buffer is only advanced past whole items (and then they reset).
    mode: Mode,
    pos: usize,
    depth: usize,
    markup_start: usize,
    item_start: Option<usize>,
    /// RFC 7395 framing (XMPP over WebSocket): no stream element; every
    /// top-level element is a stanza, `<open/>` and `<close/>` of the
    /// framing namespace open and close the stream.
    websocket: bool,
    /// Websocket framing: an `<open/>` has been read (and not restarted).
    opened: bool,
}

const CDATA_OPEN: &[u8] = b"<![CDATA[";
const XML_DECL_OPEN: &[u8] = b"<?xml";

impl XmppFramer {
    /// A framer with the given stanza size and depth limits.
    pub fn new(max_stanza: usize, max_depth: usize) -> XmppFramer {
        XmppFramer {
            max_stanza: max_stanza.max(64),
            max_depth: max_depth.max(2),
            in_stream: false,
            scope: Scope::client_stream("stream"),
            stream_qname: "stream:stream".to_string(),
            mode: Mode::Text,
            pos: 0,
            depth: 0,
            markup_start: 0,
            item_start: None,
            websocket: false,
            opened: false,
        }
    }

    /// A framer of RFC 7395 framing (XMPP over WebSocket): the stream
    /// opens with `<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>`
    /// ([`XmppEvent::StreamOpen`] with that element's attributes), stanzas
    /// are top-level elements in `jabber:client`, `<close/>` ends it
    /// ([`XmppEvent::StreamClose`]). Anything before `<open/>` is refused.
    pub fn websocket(max_stanza: usize, max_depth: usize) -> XmppFramer {
        let mut framer = XmppFramer::new(max_stanza, max_depth);
        framer.websocket = true;
        // Scan as inside a stream from the start: there is no stream tag.
        framer.in_stream = true;
        framer
    }

    /// The stanza size limit.
    pub fn max_stanza(&self) -> usize {
        self.max_stanza
    }

    /// Change the stanza size limit (a connection raises it once the
    /// client has authenticated: strangers get a smaller one). It applies
    /// to the item being scanned as well.
    pub fn set_max_stanza(&mut self, max_stanza: usize) {
        self.max_stanza = max_stanza.max(64);
    }

    /// Expect a new stream header (after SASL success or STARTTLS). Bytes
    /// already buffered stay; they belong to the new stream.
    pub fn restart(&mut self) {
        if self.websocket {
            self.opened = false;
        } else {
            self.in_stream = false;
        }
        self.reset_scan();
    }

    /// Whether a stream header has been read.
    pub fn in_stream(&self) -> bool {
        if self.websocket {
            self.opened
        } else {
            self.in_stream
        }
    }

    fn reset_scan(&mut self) {
        self.mode = Mode::Text;
        self.pos = 0;
        self.depth = 0;
        self.markup_start = 0;
        self.item_start = None;
    }

    /// Take bytes `..=end` out of the buffer and reset the scanner.
    fn take_item(&mut self, src: &mut BytesMut, end: usize) -> Result<String, XmppCodecError> {
        let item = src.split_to(end + 1);
        self.reset_scan();
        String::from_utf8(item.to_vec()).map_err(|_| XmppCodecError::InvalidUtf8)
    }

    fn check_size(&self) -> Result<(), XmppCodecError> {
        let start = self.item_start.unwrap_or(self.markup_start);
        let pending = self.mode != Mode::Text || self.item_start.is_some();
        if pending && self.pos.saturating_sub(start) > self.max_stanza {
            return Err(XmppCodecError::StanzaTooLarge {
                max: self.max_stanza,
            });
        }
        Ok(())
    }

    /// A complete start tag ends at `end` (its `>`).
    fn start_tag_done(
        &mut self,
        src: &mut BytesMut,
        end: usize,
    ) -> Result<Option<XmppEvent>, XmppCodecError> {
        let self_closing = end > 0 && src[end - 1] == b'/';
        if self.depth == 0 && !self.in_stream {
            if self_closing {
                return Err(XmppCodecError::BadStreamHeader(
                    "the stream header must not be self-closing".into(),
                ));
            }
            let text = self.take_item(src, end)?;
            let (header, prefix) = parse_stream_header(&text)?;
            self.scope = Scope::client_stream(&prefix);
            self.stream_qname = if prefix.is_empty() {
                "stream".to_string()
            } else {
                format!("{prefix}:stream")
            };
            self.in_stream = true;
            return Ok(Some(XmppEvent::StreamOpen(header)));
        }
        if self.depth == 0 {
            if self.websocket && !self_closing {
                let name: Vec<u8> = src[self.markup_start + 1..end]
                    .iter()
                    .copied()
                    .take_while(|b| !b.is_ascii_whitespace() && *b != b'>' && *b != b'/')
                    .collect();
                if name == b"stream:stream" || name == b"stream" {
                    return Err(XmppCodecError::BadStreamHeader(format!(
                        "over WebSocket the stream opens with <open xmlns='{}'/> (RFC 7395)",
                        ns::FRAMING
                    )));
                }
            }
            self.item_start = Some(self.markup_start);
        }
        if self_closing {
            if self.depth == 0 {
                return self.stanza_done(src, end).map(Some);
            }
        } else {
            self.depth += 1;
            if self.depth > self.max_depth {
                return Err(XmppCodecError::TooDeep {
                    max: self.max_depth,
                });
            }
        }
        self.mode = Mode::Text;
        Ok(None)
    }

    fn stanza_done(&mut self, src: &mut BytesMut, end: usize) -> Result<XmppEvent, XmppCodecError> {
        let start = self.item_start.unwrap_or(0);
        src.advance(start);
        let text = self.take_item(src, end - start)?;
        let el = parse_stanza(&text, &self.scope, self.max_depth)?;
        if !self.websocket {
            return Ok(XmppEvent::Stanza(el));
        }
        if el.is("open", ns::FRAMING) {
            self.opened = true;
            return Ok(XmppEvent::StreamOpen(el));
        }
        if el.is("close", ns::FRAMING) {
            self.opened = false;
            return Ok(XmppEvent::StreamClose);
        }
        if !self.opened {
            return Err(XmppCodecError::BadStreamHeader(format!(
                "expected <open xmlns='{}'/>, got <{}>",
                ns::FRAMING,
                el.name
            )));
        }
        Ok(XmppEvent::Stanza(el))
    }

    /// An end tag ends at `end` (its `>`).
    fn end_tag_done(
        &mut self,
        src: &mut BytesMut,
        end: usize,
    ) -> Result<Option<XmppEvent>, XmppCodecError> {
        if self.depth == 0 {
            let raw = &src[self.markup_start + 2..end];
            let name = std::str::from_utf8(raw)
                .map_err(|_| XmppCodecError::InvalidUtf8)?
                .trim_end();
            if self.in_stream && name == self.stream_qname {
                src.advance(end + 1);
                self.reset_scan();
                self.in_stream = false;
                return Ok(Some(XmppEvent::StreamClose));
            }
            return Err(XmppCodecError::NotWellFormed(format!(
                "unexpected end tag </{name}>"
            )));
        }
        self.depth -= 1;
        if self.depth == 0 {
            return self.stanza_done(src, end).map(Some);
        }
        self.mode = Mode::Text;
        Ok(None)
    }

    /// Decide what markup starts at `markup_start`; `Ok(false)` = need more
    /// bytes.
    fn classify_markup(&mut self, src: &BytesMut) -> Result<bool, XmppCodecError> {
        let at = self.markup_start;
        let Some(&next) = src.get(at + 1) else {
            return Ok(false);
        };
        match next {
            b'/' => {
                self.mode = Mode::EndTag;
                self.pos = at + 2;
            }
            b'!' => {
                let have = &src[at..src.len().min(at + CDATA_OPEN.len())];
                if self.depth > 0 && CDATA_OPEN.starts_with(have) {
                    if have.len() < CDATA_OPEN.len() {
                        return Ok(false);
                    }
                    self.mode = Mode::Cdata;
                    self.pos = at + CDATA_OPEN.len();
                } else if b"<!--".starts_with(&src[at..src.len().min(at + 4)]) && src.len() < at + 4
                {
                    return Ok(false);
                } else if src[at..].starts_with(b"<!--") {
                    return Err(XmppCodecError::RestrictedXml("a comment"));
                } else {
                    return Err(XmppCodecError::RestrictedXml("a DTD or markup declaration"));
                }
            }
            b'?' => {
                let have = &src[at..src.len().min(at + XML_DECL_OPEN.len())];
                let may_be_decl = !self.in_stream && self.depth == 0;
                if may_be_decl && XML_DECL_OPEN.starts_with(have) {
                    if have.len() < XML_DECL_OPEN.len() {
                        return Ok(false);
                    }
                    self.mode = Mode::Declaration;
                    self.pos = at + XML_DECL_OPEN.len();
                } else {
                    return Err(XmppCodecError::RestrictedXml("a processing instruction"));
                }
            }
            b if b.is_ascii_whitespace() || b == b'>' || b == b'<' => {
                return Err(XmppCodecError::NotWellFormed(
                    "'<' not followed by a name".into(),
                ));
            }
            _ => {
                self.mode = Mode::StartTag(None);
                self.pos = at + 1;
            }
        }
        Ok(true)
    }
}

impl Default for XmppFramer {
    fn default() -> Self {
        XmppFramer::new(DEFAULT_MAX_STANZA, DEFAULT_MAX_DEPTH)
    }
}

impl Decoder for XmppFramer {
    type Item = XmppEvent;
    type Error = XmppCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<XmppEvent>, XmppCodecError> {
        loop {
            // Between items: drop whitespace (keepalives) right away so it
            // never accumulates.
            if self.mode == Mode::Text && self.depth == 0 && self.item_start.is_none() {
                let ws = src.iter().take_while(|b| b.is_ascii_whitespace()).count();
                src.advance(ws);
                self.pos = 0;
                match src.first() {
                    None => return Ok(None),
                    Some(b'<') => {
                        self.markup_start = 0;
                        self.mode = Mode::Open;
                        self.pos = 1;
                    }
                    Some(_) => {
                        return Err(XmppCodecError::NotWellFormed(
                            "text outside a stanza".into(),
                        ))
                    }
                }
            }
            match self.mode {
                Mode::Text => {
                    // Inside a stanza: skip character data up to the next '<'.
                    match src[self.pos..].iter().position(|&b| b == b'<') {
                        Some(off) => {
                            self.markup_start = self.pos + off;
                            self.pos = self.markup_start + 1;
                            self.mode = Mode::Open;
                        }
                        None => {
                            self.pos = src.len();
                            self.check_size()?;
                            return Ok(None);
                        }
                    }
                }
                Mode::Open => {
                    if !self.classify_markup(src)? {
                        self.pos = src.len();
                        self.check_size()?;
                        return Ok(None);
                    }
                }
                Mode::StartTag(quote) => {
                    let mut q = quote;
                    let mut found = None;
                    for (i, &b) in src[self.pos..].iter().enumerate() {
                        match (q, b) {
                            (Some(open), b) if b == open => q = None,
                            (Some(_), _) => {}
                            (None, b'\'' | b'"') => q = Some(b),
                            (None, b'>') => {
                                found = Some(self.pos + i);
                                break;
                            }
                            (None, b'<') => {
                                return Err(XmppCodecError::NotWellFormed(
                                    "'<' inside a tag".into(),
                                ))
                            }
                            _ => {}
                        }
                    }
                    match found {
                        Some(end) => {
                            self.pos = end + 1;
                            if let Some(ev) = self.start_tag_done(src, end)? {
                                return Ok(Some(ev));
                            }
                        }
                        None => {
                            self.mode = Mode::StartTag(q);
                            self.pos = src.len();
                            self.check_size()?;
                            return Ok(None);
                        }
                    }
                }
                Mode::EndTag => match src[self.pos..].iter().position(|&b| b == b'>') {
                    Some(off) => {
                        let end = self.pos + off;
                        self.pos = end + 1;
                        if let Some(ev) = self.end_tag_done(src, end)? {
                            return Ok(Some(ev));
                        }
                    }
                    None => {
                        self.pos = src.len();
                        self.check_size()?;
                        return Ok(None);
                    }
                },
                Mode::Cdata => {
                    let from = self.pos;
                    let hit = src[from..]
                        .iter()
                        .enumerate()
                        .find(|&(i, &b)| {
                            let at = from + i;
                            b == b'>' && at >= 2 && src[at - 2] == b']' && src[at - 1] == b']'
                        })
                        .map(|(i, _)| from + i);
                    match hit {
                        Some(end) => {
                            self.pos = end + 1;
                            self.mode = Mode::Text;
                        }
                        None => {
                            self.pos = src.len();
                            self.check_size()?;
                            return Ok(None);
                        }
                    }
                }
                Mode::Declaration => match src[self.pos..].iter().position(|&b| b == b'>') {
                    Some(off) => {
                        let end = self.pos + off;
                        if src[end - 1] != b'?' {
                            return Err(XmppCodecError::NotWellFormed(
                                "bad XML declaration".into(),
                            ));
                        }
                        // The declaration is only checked for shape; the
                        // header that follows is what matters.
                        src.advance(end + 1);
                        self.reset_scan();
                    }
                    None => {
                        self.pos = src.len();
                        self.check_size()?;
                        return Ok(None);
                    }
                },
            }
            self.check_size()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

    fn all(framer: &mut XmppFramer, buf: &mut BytesMut) -> Vec<XmppEvent> {
        let mut out = Vec::new();
        while let Some(ev) = framer.decode(buf).unwrap() {
            out.push(ev);
        }
        out
    }

    #[test]
    fn header_stanzas_and_close() {
        let mut f = XmppFramer::default();
        let mut buf = BytesMut::from(
            format!("{HEADER} <presence/>\n<message to='b@x'><body>a&gt;b</body></message></stream:stream>")
                .as_str(),
        );
        let evs = all(&mut f, &mut buf);
        assert_eq!(evs.len(), 4, "{evs:?}");
        assert!(
            matches!(&evs[0], XmppEvent::StreamOpen(h) if h.get_attr("to") == Some("localhost"))
        );
        assert!(matches!(&evs[1], XmppEvent::Stanza(p) if p.name == "presence"));
        assert!(matches!(&evs[3], XmppEvent::StreamClose));
        assert!(buf.is_empty());
    }

    #[test]
    fn byte_at_a_time_gives_the_same_events() {
        let text = format!("{HEADER}<message id='1'><body>h\u{e9}llo \u{1F600} 'q' <![CDATA[<x>]]></body><x xmlns='urn:a' v=\"a>b\"/></message><iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
        let mut whole = XmppFramer::default();
        let expected = all(&mut whole, &mut BytesMut::from(text.as_str()));
        assert_eq!(expected.len(), 3);
        let mut f = XmppFramer::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in text.as_bytes() {
            buf.extend_from_slice(&[*b]);
            got.extend(all(&mut f, &mut buf));
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn refuses_dtd_pi_comment_and_text_outside() {
        for bad in [
            "<!DOCTYPE lolz [<!ENTITY lol 'lol'>]>",
            "<?php x?>",
            "<!-- c -->",
        ] {
            let mut f = XmppFramer::default();
            let mut buf = BytesMut::from(bad);
            assert!(
                matches!(f.decode(&mut buf), Err(XmppCodecError::RestrictedXml(_))),
                "{bad}"
            );
        }
        let mut f = XmppFramer::default();
        let mut buf = BytesMut::from(format!("{HEADER}hello").as_str());
        assert!(f.decode(&mut buf).unwrap().is_some());
        assert!(matches!(
            f.decode(&mut buf),
            Err(XmppCodecError::NotWellFormed(_))
        ));
    }

    #[test]
    fn size_limit_applies_to_an_unfinished_tag() {
        let mut f = XmppFramer::new(1024, 8);
        let mut buf = BytesMut::from(HEADER);
        assert!(f.decode(&mut buf).unwrap().is_some());
        buf.extend_from_slice(b"<message a='");
        for _ in 0..10 {
            buf.extend_from_slice(&[b'a'; 200]);
            if let Err(e) = f.decode(&mut buf) {
                assert!(matches!(e, XmppCodecError::StanzaTooLarge { max: 1024 }));
                return;
            }
        }
        panic!("no size error");
    }

    #[test]
    fn a_raised_limit_admits_what_the_lower_one_refused() {
        let stanza = format!("<message><body>{}</body></message>", "x".repeat(2000));
        let mut f = XmppFramer::new(1024, 8);
        let mut buf = BytesMut::from(format!("{HEADER}{stanza}").as_str());
        assert!(f.decode(&mut buf).unwrap().is_some());
        assert!(matches!(
            f.decode(&mut buf),
            Err(XmppCodecError::StanzaTooLarge { max: 1024 })
        ));
        let mut f = XmppFramer::new(1024, 8);
        f.set_max_stanza(4096);
        let mut buf = BytesMut::from(format!("{HEADER}{stanza}").as_str());
        assert!(f.decode(&mut buf).unwrap().is_some());
        assert!(matches!(f.decode(&mut buf), Ok(Some(XmppEvent::Stanza(_)))));
    }

    #[test]
    fn restart_expects_a_new_header() {
        let mut f = XmppFramer::default();
        let mut buf = BytesMut::from(format!("{HEADER}<auth/>{HEADER}<iq/>").as_str());
        assert!(matches!(
            f.decode(&mut buf).unwrap(),
            Some(XmppEvent::StreamOpen(_))
        ));
        assert!(matches!(
            f.decode(&mut buf).unwrap(),
            Some(XmppEvent::Stanza(_))
        ));
        f.restart();
        assert!(matches!(
            f.decode(&mut buf).unwrap(),
            Some(XmppEvent::StreamOpen(_))
        ));
        assert!(matches!(
            f.decode(&mut buf).unwrap(),
            Some(XmppEvent::Stanza(_))
        ));
    }

    #[test]
    fn websocket_framing_opens_carries_stanzas_and_closes() {
        let mut f = XmppFramer::websocket(DEFAULT_MAX_STANZA, DEFAULT_MAX_DEPTH);
        let mut buf = BytesMut::from(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>\
             <message xmlns='jabber:client' to='b@localhost'><body>hi</body></message>\
             <close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        );
        let events = all(&mut f, &mut buf);
        assert_eq!(events.len(), 3, "{events:?}");
        match &events[0] {
            XmppEvent::StreamOpen(h) => assert_eq!(h.get_attr("to"), Some("localhost")),
            other => panic!("{other:?}"),
        }
        match &events[1] {
            XmppEvent::Stanza(m) => {
                assert!(m.is("message", ns::CLIENT));
                assert_eq!(
                    m.get_child("body", ns::CLIENT).map(|b| b.text_content()),
                    Some("hi".to_string())
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(events[2], XmppEvent::StreamClose);
    }

    #[test]
    fn websocket_framing_refuses_stanzas_before_open_and_after_a_restart() {
        let mut f = XmppFramer::websocket(DEFAULT_MAX_STANZA, DEFAULT_MAX_DEPTH);
        let mut buf = BytesMut::from("<message><body>x</body></message>");
        assert!(matches!(
            f.decode(&mut buf),
            Err(XmppCodecError::BadStreamHeader(_))
        ));
        let mut f = XmppFramer::websocket(DEFAULT_MAX_STANZA, DEFAULT_MAX_DEPTH);
        let mut buf =
            BytesMut::from("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' version='1.0'/>");
        assert!(matches!(
            f.decode(&mut buf),
            Ok(Some(XmppEvent::StreamOpen(_)))
        ));
        assert!(f.in_stream());
        f.restart();
        assert!(!f.in_stream());
        let mut buf = BytesMut::from("<iq type='get' id='1'/>");
        assert!(
            f.decode(&mut buf).is_err(),
            "a restart expects a new <open/>"
        );
        // The stream tag of TCP framing is no WebSocket stream: refused at
        // once, not waited on for its end tag.
        let mut f = XmppFramer::websocket(DEFAULT_MAX_STANZA, DEFAULT_MAX_DEPTH);
        let mut buf = BytesMut::from(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        );
        assert!(matches!(
            f.decode(&mut buf),
            Err(XmppCodecError::BadStreamHeader(_))
        ));
    }
}
