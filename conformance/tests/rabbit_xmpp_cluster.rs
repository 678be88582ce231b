//! XMPP across two real gateway nodes on one RabbitMQ: XEP-0184 receipts
//! for acks made on the other node (a PB DeliverAck, XMPP receipts from a
//! user's two devices), which come through the delivery cursors; and
//! XEP-0198 resumption on the other node — after the link dropped, back
//! while the old connection is still open (it is kicked), and after
//! kill -9 of the old node — with the unacked deliveries again (same ids)
//! and resent stanzas stored once.
//!
//! Needs `IMGATE_TEST_AMQP` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! without it each test says so on stderr and passes. The nodes share an
//! admin secret (so a token works on either) and a name prefix unique to
//! the test, whose queues are deleted at the end.

use std::time::{Duration, Instant};

use imgate_codecs::xmpp::{ns, Element};
use imgate_conformance::rabbit_support::{amqp_url, eventually, Cluster};
use imgate_conformance::xmpp::XmppRaw;
use imgate_conformance::{unique, Gateway, PbClient, WAIT};

const DOMAIN: &str = "localhost";

/// A logged-in, bound XMPP client of `user`/`device` on node `g`.
fn xmpp(g: &Gateway, user: &str, device: &str, platform: i32) -> XmppRaw {
    let token = g.admin().token(user, device, platform);
    XmppRaw::login(g.addr("xmpp"), DOMAIN, user, &token).0
}

fn chat(to: &str, id: &str, body: &str) -> String {
    format!("<message to='{to}@{DOMAIN}' type='chat' id='{id}'><body>{body}</body><request xmlns='urn:xmpp:receipts'/></message>")
}

fn received(to: &str, uid: &str) -> String {
    format!("<message to='{to}@{DOMAIN}' id='r-{uid}'><received xmlns='urn:xmpp:receipts' id='{uid}'/></message>")
}

fn body_of(e: &Element) -> Option<String> {
    e.get_child("body", ns::CLIENT).map(Element::text_content)
}

fn is_chat(e: &Element) -> bool {
    e.name == "message" && body_of(e).is_some()
}

fn receipt_id(e: &Element) -> Option<&str> {
    e.get_child("received", ns::RECEIPTS)
        .and_then(|r| r.get_attr("id"))
}

/// The receipt for the sender's message `id`.
fn receipt(c: &mut XmppRaw, id: &str) -> Element {
    c.wait_for(|e| receipt_id(e) == Some(id), WAIT)
        .unwrap_or_else(|| panic!("no receipt for {id}"))
}

/// The next `n` chat messages: (stanza id = messageUid, body).
fn deliveries(c: &mut XmppRaw, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|_| {
            let m = c.wait_for(is_chat, WAIT).expect("a delivery");
            let id = m.get_attr("id").expect("stanza id").to_string();
            (id, body_of(&m).unwrap_or_default())
        })
        .collect()
}

/// `<enable resume='true'/>`: the SM id.
fn enable_resume(c: &mut XmppRaw) -> String {
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    let enabled = c
        .wait_for(|e| e.is("enabled", ns::SM), WAIT)
        .expect("SM enabled");
    assert_eq!(enabled.get_attr("resume"), Some("true"));
    enabled.get_attr("id").expect("SM id").to_string()
}

/// `<r/>`, and the server's `<a h>`.
fn server_h(c: &mut XmppRaw) -> u32 {
    c.send("<r xmlns='urn:xmpp:sm:3'/>");
    let a = c.wait_for(|e| e.is("a", ns::SM), WAIT).expect("<a h>");
    a.get_attr("h")
        .and_then(|h| h.parse().ok())
        .expect("numeric h")
}

/// Connect to `g`, authenticate and send `<resume previd h>`: the client
/// and the answer (`<resumed>` or `<failed>`).
fn resume(g: &Gateway, user: &str, device: &str, previd: &str, h: u32) -> (XmppRaw, Element) {
    let token = g.admin().token(user, device, 3);
    XmppRaw::resume(g.addr("xmpp"), DOMAIN, user, &token, previd, h)
}

fn resumed_h(answer: &Element, previd: &str) -> u32 {
    assert!(answer.is("resumed", ns::SM), "{}", answer.to_xml());
    assert_eq!(answer.get_attr("previd"), Some(previd));
    answer
        .get_attr("h")
        .and_then(|h| h.parse().ok())
        .expect("numeric h")
}

/// Make sure node `to` has read every SM state node `from` announced
/// before now: a probe session enables resumption on `from` (announced
/// after those states, by the same flusher) and is resumed on `to`,
/// polled until `to` knows it.
fn sm_barrier(from: &Gateway, to: &Gateway) {
    let user = unique("probe");
    let mut probe = xmpp(from, &user, "probe", 3);
    let previd = enable_resume(&mut probe);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_r, answer) = resume(to, &user, "probe", &previd, 0);
        if answer.is("resumed", ns::SM) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the other node never learned this node's SM states"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Messages from `sender` in `user`'s sync (on node `g`).
fn synced_from(g: &Gateway, user: &str, sender: &str) -> usize {
    g.client(user, "sync")
        .sync_all(0)
        .iter()
        .filter(|m| m["sender"] == sender)
        .count()
}

#[test]
fn xmpp_sender_gets_receipts_for_acks_on_the_other_node() {
    let Some(url) = amqp_url("xmpp_sender_gets_receipts_for_acks_on_the_other_node") else {
        return;
    };
    let c = Cluster::start(&url);
    let (alice, bob, carol) = (unique("xc-alice"), unique("xc-bob"), unique("xc-carol"));
    let mut a = xmpp(&c.a, &alice, "pc", 3);

    // A PB recipient on node B: its DeliverAck is the receipt on node A.
    let token = c.b.admin().token(&bob, "phone", 2);
    let mut pb = PbClient::login_ok(c.b.addr("pb"), &bob, &token, "phone", 2);
    a.send(&chat(&bob, "to-pb-1", "hello PB"));
    let d = pb.next_deliver(WAIT).expect("bob gets it on node B");
    pb.ack(d.message_id);
    let r = receipt(&mut a, "to-pb-1");
    assert_eq!(
        r.get_attr("from"),
        Some(format!("{bob}@{DOMAIN}/phone").as_str())
    );

    // An XMPP recipient on node B with two devices: no announcement per
    // ack any more, the receipt comes from the first device's cursor, and
    // only once.
    let mut pc = xmpp(&c.b, &carol, "pc", 3);
    let mut phone = xmpp(&c.b, &carol, "phone", 2);
    a.send(&chat(&carol, "to-x-1", "hello XMPP"));
    let (uid1, _) = deliveries(&mut pc, 1).remove(0);
    assert_eq!(deliveries(&mut phone, 1)[0].0, uid1);
    pc.send(&received(&alice, &uid1));
    let r = receipt(&mut a, "to-x-1");
    assert_eq!(
        r.get_attr("from"),
        Some(format!("{carol}@{DOMAIN}/pc").as_str())
    );
    phone.send(&received(&alice, &uid1));
    // The phone's next ack moves its cursor after the first one's: once
    // the second message's receipt is here, a second receipt for the first
    // would have come before it.
    a.send(&chat(&carol, "to-x-2", "again"));
    let (uid2, _) = deliveries(&mut phone, 1).remove(0);
    phone.send(&received(&alice, &uid2));
    let r = receipt(&mut a, "to-x-2");
    assert_eq!(
        r.get_attr("from"),
        Some(format!("{carol}@{DOMAIN}/phone").as_str())
    );
    assert!(
        !a.seen.iter().any(|e| receipt_id(e) == Some("to-x-1")),
        "one receipt per message: {:?}",
        a.seen.iter().map(Element::to_xml).collect::<Vec<_>>()
    );
}

#[test]
fn sm_resumes_on_the_other_node_and_back() {
    let Some(url) = amqp_url("sm_resumes_on_the_other_node_and_back") else {
        return;
    };
    let c = Cluster::start(&url);
    let (alice, bob) = (unique("xs-alice"), unique("xs-bob"));
    let mut a = xmpp(&c.a, &alice, "pc", 3);
    let mut b = xmpp(&c.a, &bob, "pc", 3);
    let previd = enable_resume(&mut b);
    for i in 1..=3 {
        a.send(&chat(&bob, &format!("s-{i}"), &format!("m{i}")));
    }
    // Bob gets three messages and acks none of them; his own message
    // is handled (h = 1).
    let got = deliveries(&mut b, 3);
    let bodies: Vec<&str> = got.iter().map(|(_, body)| body.as_str()).collect();
    assert_eq!(bodies, ["m1", "m2", "m3"]);
    b.send(&chat(&alice, "b-1", "from bob"));
    assert_eq!(server_h(&mut b), 1);
    sm_barrier(&c.a, &c.b);

    // The link drops; bob resumes on node B with node A's counters, and
    // the unacked messages come again with the same ids.
    b.abort();
    let (mut b2, answer) = resume(&c.b, &bob, "pc", &previd, 3);
    assert_eq!(resumed_h(&answer, &previd), 1, "node A's last h");
    assert_eq!(deliveries(&mut b2, 3), got);
    // Acking them on node B gives alice her receipts on node A (and node
    // A's index the cursor).
    b2.send("<a xmlns='urn:xmpp:sm:3' h='6'/>");
    for i in 1..=3 {
        receipt(&mut a, &format!("s-{i}"));
    }
    // Further messages reach the resumed session.
    a.send(&chat(&bob, "s-4", "m4"));
    let m4 = deliveries(&mut b2, 1);
    assert_eq!(m4[0].1, "m4");
    // A resend with the same stanza id counts in h but is stored once.
    b2.send(&chat(&alice, "b-1", "from bob"));
    assert_eq!(server_h(&mut b2), 2);
    sm_barrier(&c.b, &c.a);

    // Back to node A while the node-B connection is still open: the
    // resuming login ends it, and the counters come from node B.
    let (mut b3, answer) = resume(&c.a, &bob, "pc", &previd, 7);
    let (condition, _) = b2
        .stream_error(WAIT)
        .expect("the old connection on node B is kicked");
    assert_eq!(condition, "conflict");
    assert_eq!(resumed_h(&answer, &previd), 2, "node B's last h");
    // m1..m3 were acked on node B: only m4 comes again, then new ones.
    assert_eq!(deliveries(&mut b3, 1), m4);
    a.send(&chat(&bob, "s-5", "m5"));
    assert_eq!(deliveries(&mut b3, 1)[0].1, "m5");
    assert_eq!(synced_from(&c.b, &alice, &bob), 1, "b-1 is stored once");
}

#[test]
fn sm_resumes_on_the_other_node_after_kill_9() {
    let Some(url) = amqp_url("sm_resumes_on_the_other_node_after_kill_9") else {
        return;
    };
    let mut c = Cluster::start(&url);
    let (alice, bob) = (unique("xk-alice"), unique("xk-bob"));
    let mut a = xmpp(&c.b, &alice, "pc", 3);
    let mut b = xmpp(&c.a, &bob, "pc", 3);
    let previd = enable_resume(&mut b);
    a.send(&chat(&bob, "k-1", "m1"));
    a.send(&chat(&bob, "k-2", "m2"));
    let got = deliveries(&mut b, 2);
    b.send(&chat(&alice, "b-1", "first"));
    assert_eq!(server_h(&mut b), 1);
    sm_barrier(&c.a, &c.b);
    // This one's count may or may not have left node A before it dies.
    b.send(&chat(&alice, "b-2", "second"));
    assert_eq!(server_h(&mut b), 2);
    c.a.kill9();

    let (mut b2, answer) = resume(&c.b, &bob, "pc", &previd, 2);
    let h = resumed_h(&answer, &previd);
    assert!(
        (1..=2).contains(&h),
        "h = {h}: node A's last announced count"
    );
    assert_eq!(deliveries(&mut b2, 2), got, "unacked, so sent again");
    // The client resends what the server's h does not cover (and here b-2
    // in any case): the store keeps one copy.
    b2.send(&chat(&alice, "b-2", "second"));
    assert_eq!(server_h(&mut b2), h + 1);
    a.send(&chat(&bob, "k-3", "m3"));
    assert_eq!(deliveries(&mut b2, 1)[0].1, "m3");
    assert_eq!(synced_from(&c.b, &alice, &bob), 2, "b-1 and b-2, once each");
    assert_eq!(synced_from(&c.b, &bob, &bob), 2);
}

#[test]
fn iqs_and_chat_states_route_to_a_client_on_the_other_node() {
    let Some(url) = amqp_url("iqs_and_chat_states_route_to_a_client_on_the_other_node") else {
        return;
    };
    let c = Cluster::start(&url);
    let (alice, bob) = (unique("xr-alice"), unique("xr-bob"));
    let mut a = xmpp(&c.a, &alice, "pc", 3);
    let mut b = xmpp(&c.b, &bob, "pc", 3);
    let (alice_full, bob_full) = (format!("{alice}@{DOMAIN}/pc"), format!("{bob}@{DOMAIN}/pc"));
    // An IQ to Bob's full JID reaches Bob's client on node B, and its
    // answer comes back to Alice on node A (RFC 6120 §10.5.4).
    a.send(&format!(
        "<iq type='get' id='v1' to='{bob_full}'><query xmlns='jabber:iq:version'/></iq>"
    ));
    let q = b
        .wait_for(|e| e.name == "iq" && e.get_attr("id") == Some("v1"), WAIT)
        .expect("the IQ on node B");
    assert_eq!(q.get_attr("from"), Some(alice_full.as_str()));
    assert_eq!(q.get_attr("type"), Some("get"));
    b.send(&format!(
        "<iq type='result' id='v1' to='{alice_full}'><query xmlns='jabber:iq:version'><name>raw</name></query></iq>"
    ));
    let answer = a
        .wait_for(|e| e.name == "iq" && e.get_attr("id") == Some("v1"), WAIT)
        .expect("the answer on node A");
    assert_eq!(answer.get_attr("type"), Some("result"));
    assert_eq!(answer.get_attr("from"), Some(bob_full.as_str()));

    // A chat state to Bob's bare JID reaches his available resource.
    b.send("<presence/><iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
    b.wait_for(|e| e.get_attr("id") == Some("p1"), WAIT)
        .expect("ping answered: the presence was handled");
    a.send(&format!(
        "<message to='{bob}@{DOMAIN}' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    ));
    let state = b
        .wait_for(
            |e| {
                e.get_child("composing", "http://jabber.org/protocol/chatstates")
                    .is_some()
            },
            WAIT,
        )
        .expect("the chat state on node B");
    assert_eq!(state.get_attr("from"), Some(alice_full.as_str()));
}

fn muc_codes(e: &Element) -> Vec<String> {
    e.get_child("x", ns::MUC_USER)
        .map(|x| {
            x.elements()
                .filter(|s| s.name == "status")
                .filter_map(|s| s.get_attr("code").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rooms_and_absent_resources_across_nodes() {
    let Some(url) = amqp_url("rooms_and_absent_resources_across_nodes") else {
        return;
    };
    let c = Cluster::start(&url);
    let (alice, bob, grp) = (unique("xr-alice"), unique("xr-bob"), unique("xr-room"));
    c.a.admin().create_group(&grp, &alice, &[&alice, &bob]);
    let mut a = xmpp(&c.a, &alice, "pc", 3);
    let mut b = xmpp(&c.b, &bob, "pc", 3);
    let room = format!("{grp}@groups.{DOMAIN}");

    // An IQ to a resource on no node: service-unavailable from node A
    // once no node took it; one to Bob's resource on node B reaches him.
    a.send(&format!(
        "<iq type='get' id='absent-1' to='{bob}@{DOMAIN}/nowhere'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    let err = a
        .wait_for(
            |e| e.name == "iq" && e.get_attr("id") == Some("absent-1"),
            WAIT,
        )
        .expect("an answer for the absent resource");
    assert_eq!(err.get_attr("type"), Some("error"), "{}", err.to_xml());
    let error = err.get_child("error", ns::CLIENT).expect("error");
    assert!(
        error
            .get_child("service-unavailable", ns::STANZA_ERRORS)
            .is_some(),
        "{}",
        err.to_xml()
    );
    a.send(&format!(
        "<iq type='get' id='there-1' to='{bob}@{DOMAIN}/pc'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    let routed = b
        .wait_for(
            |e| e.name == "iq" && e.get_attr("id") == Some("there-1"),
            WAIT,
        )
        .expect("the IQ routed to node B");
    assert_eq!(
        routed.get_attr("from"),
        Some(format!("{alice}@{DOMAIN}/pc").as_str())
    );

    // Bob joins on node B; Alice on node A sees him, and he sees her.
    b.send(&format!(
        "<presence to='{room}/bob-nick'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    let own = b
        .wait_for(
            |e| e.name == "presence" && muc_codes(e).contains(&"110".to_string()),
            WAIT,
        )
        .expect("bob's self-presence");
    assert_eq!(
        own.get_attr("from"),
        Some(format!("{room}/bob-nick").as_str())
    );
    let bob_in = format!("{room}/bob-nick");
    eventually(
        "node A knows bob is in the room",
        Duration::from_secs(10),
        || {
            a.send(&format!(
            "<presence to='{room}/alice-nick'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ));
            let mut saw_bob = false;
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Some(e) = a.next_element(deadline.saturating_duration_since(Instant::now())) {
                if e.name == "presence" && e.get_attr("from") == Some(bob_in.as_str()) {
                    saw_bob = true;
                }
                if e.name == "presence" && muc_codes(&e).contains(&"110".to_string()) {
                    break;
                }
            }
            if !saw_bob {
                a.send(&format!(
                    "<presence to='{room}/alice-nick' type='unavailable'/>"
                ));
            }
            saw_bob
        },
    );
    let alice_in = format!("{room}/alice-nick");
    b.wait_for(
        |e| {
            e.name == "presence"
                && e.get_attr("from") == Some(alice_in.as_str())
                && e.get_attr("type").is_none()
        },
        WAIT,
    )
    .expect("bob sees alice join from the other node");

    // The owner on node A kicks bob on node B: 307.
    a.send(&format!(
        "<iq type='set' id='kick-1' to='{room}'><query xmlns='http://jabber.org/protocol/muc#admin'><item nick='bob-nick' role='none'/></query></iq>"
    ));
    let done = a
        .wait_for(
            |e| e.name == "iq" && e.get_attr("id") == Some("kick-1"),
            WAIT,
        )
        .expect("the kick answered");
    assert_eq!(done.get_attr("type"), Some("result"), "{}", done.to_xml());
    let kicked = b
        .wait_for(
            |e| {
                e.name == "presence"
                    && e.get_attr("type") == Some("unavailable")
                    && e.get_attr("from") == Some(bob_in.as_str())
            },
            WAIT,
        )
        .expect("bob is told he was kicked");
    let codes = muc_codes(&kicked);
    assert!(
        codes.contains(&"307".to_string()) && codes.contains(&"110".to_string()),
        "{}",
        kicked.to_xml()
    );
}
