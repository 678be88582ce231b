//! Fuzz the XMPP framer: arbitrary bytes after an open stream header, fed
//! whole and in two pieces split at a byte the input chooses. It must
//! never panic, must give the same events either way, and whatever
//! stanza it accepts must serialize to XML it parses back identically.
#![no_main]

use bytes::BytesMut;
use imgate_codecs::xmpp::{XmppEvent, XmppFramer};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

fn events(chunks: &[&[u8]]) -> (Vec<XmppEvent>, bool) {
    let mut framer = XmppFramer::new(4096, 16);
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
    let input = [HEADER, rest].concat();
    let (whole, whole_err) = events(&[&input]);
    let at = HEADER.len() + split.min(rest.len());
    let (parts, parts_err) = events(&[&input[..at], &input[at..]]);
    if !whole_err && !parts_err {
        assert_eq!(whole, parts);
    }
    for ev in &whole {
        if let XmppEvent::Stanza(el) = ev {
            let again = [HEADER, el.to_xml().as_bytes()].concat();
            let (back, err) = events(&[&again]);
            assert!(!err, "serialized stanza does not parse: {}", el.to_xml());
            assert_eq!(back.get(1), Some(ev));
        }
    }
});
