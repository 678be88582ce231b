//! Fuzz the XMPP framer in RFC 7395 framing (XMPP over WebSocket):
//! arbitrary bytes after an `<open/>`, fed whole and in two pieces split
//! at a byte the input chooses. It must never panic, must give the same
//! events either way, and whatever stanza it accepts must serialize as a
//! standalone message (`to_standalone_xml`) that parses back identically.
#![no_main]

use bytes::BytesMut;
use imgate_codecs::xmpp::{XmppEvent, XmppFramer};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const OPEN: &[u8] =
    b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>";

fn events(chunks: &[&[u8]]) -> (Vec<XmppEvent>, bool) {
    let mut framer = XmppFramer::websocket(4096, 16);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(ev)) => out.push(ev),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let (split, rest) = match data.split_first() {
        Some((s, r)) => (*s as usize, r),
        None => return,
    };
    let input = [OPEN, rest].concat();
    let (whole, whole_err) = events(&[&input]);
    let at = OPEN.len() + split.min(rest.len());
    let (parts, parts_err) = events(&[&input[..at], &input[at..]]);
    if !whole_err && !parts_err {
        assert_eq!(whole, parts);
    }
    for ev in &whole {
        if let XmppEvent::Stanza(el) = ev {
            let xml = el.to_standalone_xml();
            let again = [OPEN, xml.as_bytes()].concat();
            let (back, err) = events(&[&again]);
            assert!(!err, "serialized stanza does not parse: {xml}");
            assert_eq!(back.get(1), Some(ev));
        }
    }
});
