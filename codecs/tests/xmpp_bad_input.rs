//! The XMPP framer on hostile input: every case is an error (never a
//! panic, never unbounded buffering), with the right stream condition.

use bytes::BytesMut;
use imgate_codecs::xmpp::{XmppCodecError, XmppEvent, XmppFramer};
use tokio_util::codec::Decoder;

const HEADER: &str = "<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/// Decode `input` after an open stream; the first error.
fn error_after_header(input: &[u8]) -> XmppCodecError {
    let mut framer = XmppFramer::new(64 * 1024, 16);
    let mut buf = BytesMut::from(HEADER);
    assert!(matches!(
        framer.decode(&mut buf),
        Ok(Some(XmppEvent::StreamOpen(_)))
    ));
    buf.extend_from_slice(input);
    loop {
        match framer.decode(&mut buf) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error for {:?}", String::from_utf8_lossy(input)),
            Err(e) => return e,
        }
    }
}

#[test]
fn hostile_inputs_get_their_stream_condition() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"<!DOCTYPE lolz [<!ENTITY lol 'lol'>]>".to_vec(),
            "restricted-xml",
        ),
        (
            b"<message><body>&lol;</body></message>".to_vec(),
            "restricted-xml",
        ),
        (b"<message><!-- hi --></message>".to_vec(), "restricted-xml"),
        (b"<message><?pi x?></message>".to_vec(), "restricted-xml"),
        (
            b"<message><body>x</message></stream:stream>".to_vec(),
            "not-well-formed",
        ),
        (
            b"<message><body>\xff</body></message>".to_vec(),
            "not-well-formed",
        ),
        (b"<message a='1' a='2'/>".to_vec(), "not-well-formed"),
        (b"<p:message/>".to_vec(), "not-well-formed"),
        (b"text outside".to_vec(), "not-well-formed"),
        (b"</stray>".to_vec(), "not-well-formed"),
        (
            [b"<message x='".as_slice(), &vec![b'a'; 70 * 1024]].concat(),
            "policy-violation",
        ),
        (b"<a>".repeat(20), "policy-violation"),
        (
            b"<message><body>\x01</body></message>".to_vec(),
            "not-well-formed",
        ),
    ];
    for (input, condition) in cases {
        let e = error_after_header(&input);
        assert_eq!(
            e.stream_condition(),
            condition,
            "{:?}: {e}",
            String::from_utf8_lossy(&input[..input.len().min(60)])
        );
        assert!(!e.can_continue());
    }
}

#[test]
fn ten_megabytes_without_a_gt_is_refused_at_the_limit() {
    let mut framer = XmppFramer::new(64 * 1024, 16);
    let mut buf = BytesMut::from(HEADER);
    assert!(framer.decode(&mut buf).unwrap().is_some());
    buf.extend_from_slice(b"<message ");
    let chunk = vec![b'a'; 8 * 1024];
    let mut fed = 0usize;
    let err = loop {
        buf.extend_from_slice(&chunk);
        fed += chunk.len();
        assert!(fed <= 10 * 1024 * 1024, "no error within 10 MB");
        match framer.decode(&mut buf) {
            Ok(None) => continue,
            Ok(Some(ev)) => panic!("unexpected {ev:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, XmppCodecError::StanzaTooLarge { .. }));
    assert!(
        fed <= 64 * 1024 + chunk.len(),
        "refused at the limit, after {fed} bytes"
    );
}

#[test]
fn a_dtd_before_the_header_is_refused() {
    let mut framer = XmppFramer::default();
    let mut buf =
        BytesMut::from("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><stream:stream>");
    assert!(matches!(
        framer.decode(&mut buf),
        Err(XmppCodecError::RestrictedXml(_))
    ));
}
