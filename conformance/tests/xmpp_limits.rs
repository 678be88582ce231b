//! XMPP resource limits against the real binary (issue 11), over raw
//! sockets:
//! - stream management's unacked window (`xmpp_sm_max_unacked`): a client
//!   that enables XEP-0198 and never acks gets no more than the window,
//!   then `policy-violation`; nothing it did not ack is lost (the store
//!   redelivers it at the next login), and a client that acks is never
//!   held up by the window;
//! - the pre-auth stanza limit (`xmpp_preauth_max_stanza`): a 100 KB
//!   stanza before SASL success ends the stream with `policy-violation`,
//!   the same stanza after authentication is handled.

use imgate_codecs::xmpp::{ns, Element};
use imgate_conformance::xmpp::{stream_header, XmppRaw};
use imgate_conformance::{unique, Gateway, WAIT};

const DOMAIN: &str = "localhost";

fn login(g: &Gateway, user: &str, device: &str) -> XmppRaw {
    let token = g.admin().token(user, device, 3);
    XmppRaw::login(g.addr("xmpp"), DOMAIN, user, &token).0
}

fn body_of(e: &Element) -> Option<String> {
    e.get_child("body", ns::CLIENT).map(Element::text_content)
}

fn enable_sm(c: &mut XmppRaw) {
    c.send("<enable xmlns='urn:xmpp:sm:3'/>");
    c.wait_for(|e| e.is("enabled", ns::SM), WAIT)
        .expect("SM enabled");
}

/// Read until `n` chat bodies arrived, answering every server `<r/>` with
/// `<a h>` counting the stanzas received since `<enabled/>` (XEP-0198 §4).
fn read_acking(c: &mut XmppRaw, n: usize) -> Vec<String> {
    let mut handled = 0u32;
    let mut bodies = Vec::new();
    while bodies.len() < n {
        let e = c
            .next_element(WAIT)
            .unwrap_or_else(|| panic!("stream ended after {bodies:?}"));
        if e.is("error", ns::STREAM) {
            panic!("stream error {} after {bodies:?}", e.to_xml());
        }
        if e.ns == ns::SM {
            if e.name == "r" {
                c.send(&format!("<a xmlns='urn:xmpp:sm:3' h='{handled}'/>"));
            }
            continue;
        }
        handled += 1;
        if e.name == "message" {
            if let Some(b) = body_of(&e) {
                bodies.push(b);
            }
        }
    }
    bodies
}

#[test]
fn sm_client_that_never_acks_is_closed_at_the_window_and_loses_nothing() {
    const WINDOW: usize = 5;
    let g = Gateway::start_with(&[
        ("IMGATE_XMPP_SM_MAX_UNACKED", "5"),
        // How long a full window waits for an ack.
        ("IMGATE_WRITE_TIMEOUT_SECS", "1"),
    ]);
    let (alice, bob, carol) = (unique("alice"), unique("bob"), unique("carol"));
    let http = g.client(&alice, "web");

    // Bob enables SM and never acks; 8 messages come for him.
    let mut b = login(&g, &bob, "pc");
    enable_sm(&mut b);
    let sent: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    for text in &sent {
        assert_eq!(http.send_text(&bob, text, text).code(), 0);
    }
    let (condition, text) = b.stream_error(WAIT).expect("a stream error");
    assert_eq!(condition, "policy-violation", "{text}");
    assert!(b.wait_closed(WAIT));
    let delivered: Vec<String> = b.seen.iter().filter_map(body_of).collect();
    assert_eq!(
        delivered,
        sent[..WINDOW],
        "exactly the window was delivered"
    );

    // Nothing was acked: all 8 come again at his next login.
    let mut b = login(&g, &bob, "pc");
    let mut again = Vec::new();
    while again.len() < sent.len() {
        let m = b
            .wait_for(|e| e.name == "message" && body_of(e).is_some(), WAIT)
            .expect("redelivered");
        again.extend(body_of(&m));
    }
    assert_eq!(again, sent);

    // A client that acks when asked gets far more than the window, and
    // stays connected.
    let mut c = login(&g, &carol, "pc");
    enable_sm(&mut c);
    let many: Vec<String> = (0..4 * WINDOW).map(|i| format!("c{i}")).collect();
    for text in &many {
        assert_eq!(http.send_text(&carol, text, text).code(), 0);
    }
    assert_eq!(read_acking(&mut c, many.len()), many);
    c.send("<iq type='get' id='still'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(c
        .wait_for(|e| e.get_attr("id") == Some("still"), WAIT)
        .is_some());
}

/// An iq ping padded to `bytes` (a second child the ping handler ignores).
fn padded_ping(id: &str, bytes: usize) -> String {
    format!(
        "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/><pad xmlns='urn:x-test:pad'>{}</pad></iq>",
        "x".repeat(bytes)
    )
}

#[test]
fn large_stanzas_are_refused_before_auth_and_accepted_after() {
    let g = Gateway::start();
    let big = padded_ping("big", 100 * 1024);

    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send(&stream_header(DOMAIN));
    c.expect_features();
    c.send(&big);
    let (condition, text) = c.stream_error(WAIT).expect("a stream error");
    assert_eq!(condition, "policy-violation", "{text}");
    assert!(text.contains("16384"), "names the pre-auth limit: {text}");
    assert!(c.wait_closed(WAIT));

    // Logged in, the same stanza is within the limit and answered.
    let mut c = login(&g, &unique("big"), "pc");
    c.send(&big);
    let pong = c
        .wait_for(|e| e.get_attr("id") == Some("big"), WAIT)
        .expect("the padded ping is answered");
    assert_eq!(pong.get_attr("type"), Some("result"), "{}", pong.to_xml());
}
