//! Delivery receipts only count from a message's recipients: a third user
//! who names someone else's message id in an XMPP `<received/>` or a PB
//! `DeliverAck` is refused (XMPP `<item-not-found/>`, PB Error 253), and
//! the sender hears nothing from them; the real recipient's receipt still
//! reaches the sender, whichever protocol it acks in.

use std::time::Duration;

use imgate_codecs::pb::{proto, PbRequest, PbServerMessage};
use imgate_codecs::xmpp::{ns, Element};
use imgate_conformance::xmpp::XmppRaw;
use imgate_conformance::{unique, Gateway, PbClient, WAIT};

const DOMAIN: &str = "localhost";

fn xmpp_login(g: &Gateway, user: &str, device: &str) -> (XmppRaw, String) {
    let token = g.admin().token(user, device, 3);
    XmppRaw::login(g.addr("xmpp"), DOMAIN, user, &token)
}

fn pb_login(g: &Gateway, user: &str, device: &str) -> PbClient {
    let token = g.admin().token(user, device, 2);
    PbClient::login_ok(g.addr("pb"), user, &token, device, 2)
}

fn chat(to: &str, id: &str) -> String {
    format!("<message to='{to}@{DOMAIN}' type='chat' id='{id}'><body>for {to} only</body><request xmlns='urn:xmpp:receipts'/></message>")
}

fn receipt(to: &str, stanza_id: &str, message_id: &str) -> String {
    format!("<message to='{to}@{DOMAIN}' id='{stanza_id}'><received xmlns='urn:xmpp:receipts' id='{message_id}'/></message>")
}

fn is_receipt(e: &Element) -> bool {
    e.name == "message" && e.get_child("received", ns::RECEIPTS).is_some()
}

/// The first receipt the sender gets: who it is from and the id it names.
fn first_receipt(sender: &mut XmppRaw) -> (String, String) {
    let r = sender
        .wait_for(is_receipt, WAIT)
        .expect("the sender gets a receipt");
    let id = r
        .get_child("received", ns::RECEIPTS)
        .and_then(|x| x.get_attr("id"))
        .unwrap_or_default()
        .to_string();
    (r.get_attr("from").unwrap_or_default().to_string(), id)
}

/// XMPP ping; its answer means every stanza sent before it was handled
/// (a session handles a receipt before it reads the next stanza).
fn ping(c: &mut XmppRaw, id: &str) {
    c.send(&format!(
        "<iq type='get' id='{id}'><ping xmlns='{}'/></iq>",
        ns::PING
    ));
    c.wait_for(|e| e.name == "iq" && e.get_attr("id") == Some(id), WAIT)
        .expect("ping answered");
}

#[test]
fn a_forged_xmpp_receipt_is_refused_and_the_sender_hears_only_the_recipient() {
    let g = Gateway::start();
    let (alice, bob, mallory) = (unique("alice"), unique("bob"), unique("mallory"));
    let (mut a, _) = xmpp_login(&g, &alice, "pc");
    let (mut b, _) = xmpp_login(&g, &bob, "pc");
    let (mut m, _) = xmpp_login(&g, &mallory, "pc");
    a.send(&chat(&bob, "c-1"));
    let got = b
        .wait_for(
            |e| e.name == "message" && e.get_child("body", ns::CLIENT).is_some(),
            WAIT,
        )
        .expect("bob gets alice's message");
    let uid = got.get_attr("id").expect("messageUid").to_string();

    // Mallory never had it, but claims it.
    m.send(&receipt(&alice, "forged-1", &uid));
    ping(&mut m, "sync-1");
    // Bob really has it.
    b.send(&receipt(&alice, "r-1", &uid));
    assert_eq!(
        first_receipt(&mut a),
        (format!("{bob}@{DOMAIN}/pc"), "c-1".to_string()),
        "the receipt alice gets is bob's, not mallory's"
    );

    let refusal = m
        .wait_for(
            |e| e.name == "message" && e.get_attr("id") == Some("forged-1"),
            WAIT,
        )
        .expect("mallory's receipt is answered");
    assert_eq!(
        refusal.get_attr("type"),
        Some("error"),
        "{}",
        refusal.to_xml()
    );
    let error = refusal.get_child("error", ns::CLIENT).expect("<error>");
    assert!(
        error
            .get_child("item-not-found", ns::STANZA_ERRORS)
            .is_some(),
        "{}",
        refusal.to_xml()
    );
    let text = error
        .get_child("text", ns::STANZA_ERRORS)
        .map(Element::text_content)
        .unwrap_or_default();
    assert!(text.starts_with("253 "), "{text}");
}

#[test]
fn a_forged_pb_deliver_ack_is_refused_and_the_sender_hears_only_the_recipient() {
    let g = Gateway::start();
    let (alice, bob, mallory) = (unique("alice"), unique("bob"), unique("mallory"));
    let (mut a, _) = xmpp_login(&g, &alice, "pc");
    let mut phone = pb_login(&g, &bob, "phone");
    let mut m = pb_login(&g, &mallory, "phone");
    a.send(&chat(&bob, "c-1"));
    let uid = phone
        .next_deliver(WAIT)
        .expect("bob's phone gets alice's message")
        .message_id;

    // Mallory never had it, but claims it; her heartbeat's answer means
    // the ack was handled (a session handles frames in order).
    let seq = m.request(PbRequest::DeliverAck(proto::DeliverAck { message_id: uid }));
    assert!(m.heartbeat());

    // A device of bob's that logged in after the message (so it was never
    // handed it here) may still ack it: bob is its recipient.
    let mut tablet = pb_login(&g, &bob, "tablet");
    tablet.ack(uid);
    assert!(tablet.heartbeat());
    assert!(
        tablet.recv(Duration::ZERO).is_none(),
        "bob's ack is not refused"
    );
    assert_eq!(
        first_receipt(&mut a),
        (format!("{bob}@{DOMAIN}/tablet"), "c-1".to_string()),
        "the receipt alice gets is bob's, not mallory's"
    );
    match m.recv(Duration::ZERO) {
        Some(i) if i.seq == seq => match i.msg {
            PbServerMessage::Error(e) => assert_eq!(e.code, 253, "{e:?}"),
            other => panic!("expected Error 253, got {other:?}"),
        },
        other => panic!("mallory's DeliverAck is answered with Error 253, got {other:?}"),
    }
}
