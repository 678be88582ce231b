//! XMPP-lite against the real binary over raw sockets: negotiation, the
//! exact stanzas of chat and receipts, XEP-0198 counting and resumption
//! semantics, disco — what a client library would hide.

use std::time::Duration;

use imgate_codecs::xmpp::{ns, Element};
use imgate_conformance::xmpp::{auth_plain, stream_header, XmppRaw};
use imgate_conformance::{unique, Gateway, WAIT};

const DOMAIN: &str = "localhost";

fn login(g: &Gateway, user: &str, device: &str) -> (XmppRaw, String) {
    let token = g.admin().token(user, device, 3);
    XmppRaw::login(g.addr("xmpp"), DOMAIN, user, &token)
}

fn chat(to: &str, id: &str, body: &str) -> String {
    format!("<message to='{to}@{DOMAIN}' type='chat' id='{id}'><body>{body}</body><request xmlns='urn:xmpp:receipts'/></message>")
}

fn body_of(e: &Element) -> Option<String> {
    e.get_child("body", ns::CLIENT).map(Element::text_content)
}

fn is_message_with_body(e: &Element) -> bool {
    e.name == "message" && body_of(e).is_some()
}

#[test]
fn login_binds_the_tokens_device_and_bad_tokens_fail() {
    let g = Gateway::start();
    let alice = unique("alice");
    let (_c, jid) = login(&g, &alice, "laptop");
    assert_eq!(
        jid,
        format!("{alice}@{DOMAIN}/laptop"),
        "resource is the token's device"
    );

    let mut bad = XmppRaw::connect(g.addr("xmpp"));
    bad.send(&stream_header(DOMAIN));
    let features = bad.expect_features();
    let mechs = features
        .get_child("mechanisms", ns::SASL)
        .expect("SASL offered");
    assert_eq!(
        mechs
            .elements()
            .next()
            .map(Element::text_content)
            .as_deref(),
        Some("PLAIN")
    );
    bad.send(&auth_plain(&alice, "not-a-token"));
    let failure = bad.next_element(WAIT).expect("SASL failure");
    assert!(failure.is("failure", ns::SASL), "{}", failure.to_xml());
    assert!(failure.get_child("not-authorized", ns::SASL).is_some());
    let text = failure
        .get_child("text", ns::SASL)
        .map(Element::text_content)
        .unwrap_or_default();
    assert!(text.starts_with("6 "), "token error code 6 in {text:?}");
}

#[test]
fn stanza_before_auth_is_a_stream_error() {
    let g = Gateway::start();
    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send(&stream_header(DOMAIN));
    c.expect_features();
    c.send("<message to='bob@localhost' type='chat'><body>sneaky</body></message>");
    let (cond, text) = c.stream_error(WAIT).expect("stream error");
    assert_eq!(cond, "not-authorized");
    assert!(text.starts_with("244"), "{text}");
    assert!(c.wait_closed(WAIT));
}

#[test]
fn chat_receipts_and_idempotent_resend() {
    let g = Gateway::start();
    let alice = unique("alice");
    let bob = unique("bob");
    let (mut a, _) = login(&g, &alice, "pc");
    let (mut b, bob_jid) = login(&g, &bob, "pc");
    a.send(&chat(&bob, "c-1", "hello &amp; welcome"));
    let m = b
        .wait_for(is_message_with_body, WAIT)
        .expect("bob gets the message");
    assert_eq!(body_of(&m).as_deref(), Some("hello & welcome"));
    assert_eq!(
        m.get_attr("from"),
        Some(format!("{alice}@{DOMAIN}").as_str())
    );
    assert_eq!(m.get_attr("to"), Some(bob_jid.as_str()));
    let uid = m.get_attr("id").expect("stanza id").to_string();
    assert!(
        uid.parse::<u64>().is_ok(),
        "the stanza id is the messageUid: {uid}"
    );
    let sid = m
        .get_child("stanza-id", ns::STANZA_ID)
        .expect("XEP-0359 stanza-id");
    assert_eq!(sid.get_attr("id"), Some(uid.as_str()));
    assert!(
        m.get_child("request", ns::RECEIPTS).is_some(),
        "a receipt is requested"
    );

    // Bob's receipt acks the delivery and reaches alice with her own id.
    b.send(&format!("<message to='{alice}@{DOMAIN}' id='r1'><received xmlns='urn:xmpp:receipts' id='{uid}'/></message>"));
    let r = a
        .wait_for(|e| e.get_child("received", ns::RECEIPTS).is_some(), WAIT)
        .expect("alice gets the receipt");
    assert_eq!(
        r.get_child("received", ns::RECEIPTS)
            .and_then(|x| x.get_attr("id")),
        Some("c-1")
    );

    // Acked: a new login of bob's device gets nothing again.
    drop(b);
    let (mut b2, _) = login(&g, &bob, "pc");
    assert!(b2
        .wait_for(is_message_with_body, Duration::from_millis(700))
        .is_none());

    // A resend with the same stanza id stores nothing new.
    a.send(&chat(&bob, "c-1", "hello &amp; welcome"));
    a.send(&chat(&bob, "c-2", "second"));
    let next = b2
        .wait_for(is_message_with_body, WAIT)
        .expect("second message");
    assert_eq!(body_of(&next).as_deref(), Some("second"));
    let page = g.client(&bob, "web").sync_all(0);
    assert_eq!(page.len(), 2, "the resend was deduplicated: {page:?}");
}

#[test]
fn stream_management_acks_and_resumption_resend_only_unacked() {
    let g = Gateway::start();
    let alice = unique("alice");
    let bob = unique("bob");
    let (mut a, _) = login(&g, &alice, "pc");
    let (mut b, _) = login(&g, &bob, "pc");
    b.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    let enabled = b
        .wait_for(|e| e.is("enabled", ns::SM), WAIT)
        .expect("SM enabled");
    let previd = enabled.get_attr("id").expect("resumption id").to_string();

    // Alice's <a h> counts her message only once it is durable.
    a.send("<enable xmlns='urn:xmpp:sm:3'/>");
    a.wait_for(|e| e.is("enabled", ns::SM), WAIT)
        .expect("SM enabled for alice");
    for i in 1..=3 {
        a.send(&chat(&bob, &format!("m{i}"), &format!("m{i}")));
    }
    a.send("<r xmlns='urn:xmpp:sm:3'/>");
    let ack = a.wait_for(|e| e.is("a", ns::SM), WAIT).expect("server ack");
    assert_eq!(ack.get_attr("h"), Some("3"));
    assert_eq!(
        g.client(&alice, "web").sync_all(0).len(),
        3,
        "acked means stored"
    );

    let mut got = Vec::new();
    while got.len() < 3 {
        let m = b.wait_for(is_message_with_body, WAIT).expect("deliveries");
        got.push(body_of(&m).unwrap_or_default());
    }
    assert_eq!(got, ["m1", "m2", "m3"]);
    // Bob acks only the first message (stanza 1), then loses the link.
    b.send("<a xmlns='urn:xmpp:sm:3' h='1'/>");
    b.send("<r xmlns='urn:xmpp:sm:3'/>");
    b.wait_for(|e| e.is("a", ns::SM), WAIT)
        .expect("round trip after the ack");
    b.abort();
    a.send(&chat(&bob, "m4", "m4"));
    a.send("<r xmlns='urn:xmpp:sm:3'/>");
    a.wait_for(|e| e.is("a", ns::SM) && e.get_attr("h") == Some("4"), WAIT)
        .expect("m4 durable");

    // Resume: m1 is not sent again, m2..m4 are (m4 arrived while away).
    let token = g.admin().token(&bob, "pc", 3);
    let (mut r, resumed) = XmppRaw::resume(g.addr("xmpp"), DOMAIN, &bob, &token, &previd, 1);
    assert!(resumed.is("resumed", ns::SM), "{}", resumed.to_xml());
    let mut again = Vec::new();
    while again.len() < 3 {
        let m = r
            .wait_for(is_message_with_body, WAIT)
            .expect("resent deliveries");
        again.push(body_of(&m).unwrap_or_default());
    }
    assert_eq!(again, ["m2", "m3", "m4"]);
    assert!(r
        .wait_for(is_message_with_body, Duration::from_millis(500))
        .is_none());
}

#[test]
fn disco_ping_and_roster() {
    let g = Gateway::start();
    let (mut c, _) = login(&g, &unique("carol"), "pc");
    c.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let d = c
        .wait_for(|e| e.get_attr("id") == Some("d1"), WAIT)
        .expect("disco answer");
    let features: Vec<String> = d
        .get_child("query", ns::DISCO_INFO)
        .expect("query")
        .elements()
        .filter(|f| f.name == "feature")
        .filter_map(|f| f.get_attr("var").map(str::to_string))
        .collect();
    for f in [ns::PING, ns::RECEIPTS, ns::SM, ns::MAM, ns::DISCO_INFO] {
        assert!(features.iter().any(|x| x == f), "{f} in {features:?}");
    }
    c.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
    let p = c
        .wait_for(|e| e.get_attr("id") == Some("p1"), WAIT)
        .expect("pong");
    assert_eq!(p.get_attr("type"), Some("result"));
    c.send("<iq type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>");
    let v = c
        .wait_for(|e| e.get_attr("id") == Some("v1"), WAIT)
        .expect("vcard answer");
    // XEP-0054: no vCard yet is an empty one.
    assert_eq!(v.get_attr("type"), Some("result"), "{}", v.to_xml());
    let card = v.get_child("vCard", "vcard-temp").expect("a vCard");
    assert!(card.elements().next().is_none(), "{}", v.to_xml());
}
