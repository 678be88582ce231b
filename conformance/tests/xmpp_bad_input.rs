//! Bad XMPP input against the real binary: each gets a stream error of the
//! right condition and a closed connection, while another logged-in
//! session keeps working and new logins still succeed (DESIGN §3.6).

use imgate_codecs::xmpp::ns;
use imgate_conformance::xmpp::{stream_header, XmppRaw};
use imgate_conformance::{unique, Gateway, WAIT};

const DOMAIN: &str = "localhost";

fn login(g: &Gateway, user: &str) -> XmppRaw {
    let token = g.admin().token(user, "pc", 3);
    XmppRaw::login(g.addr("xmpp"), DOMAIN, user, &token).0
}

/// The bystander still answers a ping.
fn still_alive(c: &mut XmppRaw, id: &str) {
    c.send(&format!(
        "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    let pong = c
        .wait_for(|e| e.get_attr("id") == Some(id), WAIT)
        .expect("bystander pong");
    assert_eq!(pong.get_attr("type"), Some("result"));
}

fn expect_stream_error(c: &mut XmppRaw, condition: &str) {
    let (cond, text) = c.stream_error(WAIT).expect("a stream error");
    assert_eq!(cond, condition, "stream error text: {text}");
    assert!(c.wait_closed(WAIT), "closed after the stream error");
}

#[test]
fn malformed_xml_and_dtds_and_floods_close_only_the_offender() {
    let g = Gateway::start();
    let mut bystander = login(&g, &unique("bystander"));

    // A billion-laughs DTD before the stream header.
    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]><lolz>&lol2;</lolz>");
    expect_stream_error(&mut c, "restricted-xml");

    // The same inside an authenticated stream.
    let mut c = login(&g, &unique("laugher"));
    c.send("<!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'>]>");
    expect_stream_error(&mut c, "restricted-xml");

    // An undeclared entity inside a stanza.
    let mut c = login(&g, &unique("entity"));
    c.send("<message to='x@localhost'><body>&lol9;</body></message>");
    expect_stream_error(&mut c, "restricted-xml");

    // Unclosed / mismatched tags.
    let mut c = login(&g, &unique("unclosed"));
    c.send("<message to='x@localhost'><body>unclosed</message></stream:stream>");
    expect_stream_error(&mut c, "not-well-formed");

    // Invalid UTF-8 inside a stanza.
    let mut c = login(&g, &unique("utf8"));
    assert!(c.send_bytes(b"<message to='x@localhost'><body>\xff\xfe\xc3</body></message>"));
    expect_stream_error(&mut c, "not-well-formed");

    // 10 MB of text without '>': refused at the stanza limit, long before.
    let mut c = login(&g, &unique("flood"));
    c.send("<message to='x@localhost' note='");
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..160 {
        if !c.send_bytes(&chunk) {
            break; // the server closed while we were still writing
        }
    }
    expect_stream_error(&mut c, "policy-violation");

    // Text outside any stanza before the header.
    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send("GET / HTTP/1.1\r\n\r\n");
    expect_stream_error(&mut c, "not-well-formed");

    // A processing instruction inside the stream.
    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send(&stream_header(DOMAIN));
    c.expect_features();
    c.send("<?evil x?>");
    expect_stream_error(&mut c, "restricted-xml");

    still_alive(&mut bystander, "alive-1");
    let mut fresh = login(&g, &unique("fresh"));
    still_alive(&mut fresh, "alive-2");
}

#[test]
fn stanzas_before_auth_and_bad_namespaces_are_stream_errors() {
    let g = Gateway::start();
    let mut bystander = login(&g, &unique("bystander"));

    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send(&stream_header(DOMAIN));
    c.expect_features();
    c.send("<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>");
    expect_stream_error(&mut c, "not-authorized");

    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>");
    expect_stream_error(&mut c, "invalid-namespace");

    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>");
    expect_stream_error(&mut c, "host-unknown");

    // STARTTLS is not offered; asking for it fails and closes.
    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send(&stream_header(DOMAIN));
    let features = c.expect_features();
    assert!(
        features.get_child("starttls", ns::TLS).is_none(),
        "no TLS without a certificate"
    );
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    let f = c.next_element(WAIT).expect("TLS failure");
    assert!(f.is("failure", ns::TLS));
    assert!(c.wait_closed(WAIT));

    // A pre-auth <auth> with 20,000 attributes (209 KB): once parsed for
    // seconds of CPU on a runtime worker, now refused at the attribute cap.
    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send(&stream_header(DOMAIN));
    c.expect_features();
    let attrs: String = (0..20_000).map(|i| format!(" a{i}='x'")).collect();
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'{attrs}>AGFsaWNlAHNlY3JldA==</auth>"
    ));
    expect_stream_error(&mut c, "policy-violation");

    // Under the pre-auth size limit, the attribute cap itself refuses: 500
    // attributes (7 KB).
    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send(&stream_header(DOMAIN));
    c.expect_features();
    let attrs: String = (0..500).map(|i| format!(" a{i}='x'")).collect();
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'{attrs}>AGFsaWNlAHNlY3JldA==</auth>"
    ));
    let (cond, text) = c.stream_error(WAIT).expect("a stream error");
    assert_eq!(cond, "policy-violation");
    assert!(
        text.contains("attributes"),
        "the attribute cap, not the size limit: {text}"
    );

    still_alive(&mut bystander, "alive");
}
