//! Two real gateway processes on one RabbitMQ (DESIGN §7): a user on node
//! A messages a user on node B; kill -9 node A with messages acked, node
//! B has them all; generic MQTT topics (outside `im/`) and retained
//! messages reach subscribers on every node, also on a node started later.
//!
//! Needs `IMGATE_TEST_AMQP` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! without it each test says so on stderr and passes. The nodes share an
//! admin secret (so a token works on either) and a name prefix unique to
//! the test, whose queues are deleted at the end.

use std::time::{Duration, Instant};

use imgate_conformance::mqtt::MqttAgent;
use imgate_conformance::rabbit_support::{amqp_url, Cluster};
use imgate_conformance::{unique, Client, Gateway, SseReader, WAIT};
use serde_json::json;

fn uids(messages: &[serde_json::Value]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| m["messageUid"].as_u64())
        .collect()
}

/// Poll a real condition until it holds, within [`WAIT`].
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn user_on_node_a_messages_user_on_node_b() {
    let Some(url) = amqp_url("user_on_node_a_messages_user_on_node_b") else {
        return;
    };
    let c = Cluster::start(&url);
    let alice = c.a.client("mn-alice", "laptop");
    let bob = c.b.client("mn-bob", "web");
    let mut events = SseReader::open(
        &c.b.http_url(),
        &bob.token,
        None,
        Duration::from_millis(200),
    );
    let r = alice.send_text("mn-bob", "hello from node A", "mn-1");
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let uid = r.result()["messageUid"].as_u64().expect("messageUid");
    // SSE on node B receives it...
    let ev = loop {
        let ev = events.next_event(WAIT).expect("an SSE event on node B");
        if ev.id.is_some() {
            break ev;
        }
    };
    assert_eq!(ev.id.as_deref(), Some(uid.to_string().as_str()));
    let msg: serde_json::Value = serde_json::from_str(&ev.data).expect("event JSON");
    assert_eq!(msg["sender"], "mn-alice");
    assert_eq!(msg["payload"]["searchableContent"], "hello from node A");
    // ...and sync on node B shows it (and on A, for alice).
    eventually("sync on node B", || uids(&bob.sync_all(0)) == vec![uid]);
    assert_eq!(uids(&alice.sync_all(0)), vec![uid]);
    // Bob answers from node B; alice sees it on node A.
    let r = bob.send_text("mn-alice", "hi A, this is B", "mn-2");
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let back = r.result()["messageUid"].as_u64().expect("messageUid");
    assert!(back > uid);
    eventually("sync on node A", || {
        uids(&alice.sync_all(0)) == vec![uid, back]
    });
    // A resend of the first message through the other node is a duplicate.
    let again =
        Client::new(&c.b.http_url(), &alice.token).send_text("mn-bob", "hello from node A", "mn-1");
    assert_eq!(again.code(), 0, "{:?}", again.body);
    assert_eq!(again.result()["messageUid"].as_u64(), Some(uid));
    assert_eq!(uids(&bob.sync_all(0)), vec![uid, back]);
}

#[test]
fn kill_9_node_a_after_acks_node_b_has_everything() {
    let Some(url) = amqp_url("kill_9_node_a_after_acks_node_b_has_everything") else {
        return;
    };
    let mut c = Cluster::start(&url);
    let senders: Vec<Client> = (0..4)
        .map(|i| c.a.client(&format!("mn-sender{i}"), "dev"))
        .collect();
    let acked = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (t, sender) in senders.iter().enumerate() {
            let acked = &acked;
            s.spawn(move || {
                for i in 0..25 {
                    let r = sender.send_text(
                        "mn-durable",
                        &format!("t{t}-m{i}"),
                        &format!("t{t}-m{i}"),
                    );
                    assert_eq!(r.code(), 0, "{:?}", r.body);
                    acked
                        .lock()
                        .unwrap()
                        .push(r.result()["messageUid"].as_u64().expect("messageUid"));
                }
            });
        }
    });
    c.a.kill9();
    let mut acked = acked.into_inner().unwrap();
    acked.sort();
    assert_eq!(acked.len(), 100);
    let reader = c.b.client("mn-durable", "phone");
    eventually("every acked message on node B", || {
        uids(&reader.sync_all(0)) == acked
    });
    // Node A comes back and catches up too.
    c.a.restart();
    let on_a = c.a.client("mn-durable", "phone");
    assert_eq!(uids(&on_a.sync_all(0)), acked);
}

/// An MQTT client (paho, through the conformance agent) on node `g`.
fn mqtt(g: &Gateway, user: &str, device: &str, version: u8) -> MqttAgent {
    let token = g.admin().token(user, device, 1);
    let mut agent = MqttAgent::start(g.addr("mqtt"));
    let ack = agent.connect(json!({
        "version": version, "client_id": device, "user": user, "token": token
    }));
    assert_eq!(ack["rc"], 0, "{ack}");
    agent
}

#[test]
fn generic_mqtt_topics_and_retained_messages_reach_every_node() {
    let Some(url) = amqp_url("generic_mqtt_topics_and_retained_messages_reach_every_node") else {
        return;
    };
    let c = Cluster::start(&url);
    let t = unique("iot");
    let live = format!("{t}/live");
    let state = format!("{t}/state");
    let mut on_b = mqtt(&c.b, "mn-watch-b", "wb", 5);
    assert_eq!(on_b.subscribe(&format!("{t}/#"), 1), vec![1]);
    let mut on_a = mqtt(&c.a, "mn-watch-a", "wa", 4);
    assert_eq!(on_a.subscribe(&format!("{t}/#"), 1), vec![1]);
    let mut publisher = mqtt(&c.a, "mn-sensor", "s1", 4);

    // A QoS 1 publish on node A reaches the subscriber on node B...
    assert_eq!(
        publisher.publish(json!({"topic": live, "payload": "hello B", "qos": 1})),
        0
    );
    let m = on_b.message(&live);
    assert_eq!(
        (
            m["payload"].as_str(),
            m["qos"].as_i64(),
            m["retain"].as_bool()
        ),
        (Some("hello B"), Some(1), Some(false)),
        "{m}"
    );
    // ...and node A's own subscriber exactly once (no loop through the bus).
    assert_eq!(on_a.message(&live)["payload"], "hello B");
    assert!(
        on_a.try_expect(Duration::from_millis(700), &|v| v["topic"] == live)
            .is_none(),
        "node A delivered its own publish twice"
    );

    // A retained message set on node A: the live copy reaches B at once...
    assert_eq!(
        publisher.publish(json!({"topic": state, "payload": "on", "qos": 1, "retain": true})),
        0
    );
    assert_eq!(on_b.message(&state)["payload"], "on");
    // ...and a new subscriber on node B gets it as a retained message (node
    // B applies retained updates from the stream, milliseconds later).
    let deadline = Instant::now() + WAIT;
    let retained = loop {
        let mut late = mqtt(&c.b, "mn-late-b", &unique("lb"), 4);
        assert_eq!(late.subscribe(&format!("{t}/+"), 1), vec![1]);
        if let Some(m) = late.try_expect(Duration::from_millis(500), &|v| {
            v["event"] == "message" && v["topic"] == state
        }) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "node B never had the retained message"
        );
    };
    assert_eq!(
        (retained["payload"].as_str(), retained["retain"].as_bool()),
        (Some("on"), Some(true)),
        "{retained}"
    );

    // A node started after the publish has it before it says `ready`.
    let c3 = c.add_node(3);
    let mut on_c = mqtt(&c3, "mn-late-c", "lc", 5);
    assert_eq!(on_c.subscribe(&format!("{t}/+"), 1), vec![1]);
    let m = on_c.message(&state);
    assert_eq!(
        (m["payload"].as_str(), m["retain"].as_bool()),
        (Some("on"), Some(true)),
        "{m}"
    );
    // Live traffic from node C reaches A and B too.
    let mut from_c = mqtt(&c3, "mn-sensor-c", "s3", 5);
    assert_eq!(
        from_c.publish(json!({"topic": format!("{t}/fromc"), "payload": "c", "qos": 1})),
        0
    );
    assert_eq!(on_a.message(&format!("{t}/fromc"))["payload"], "c");
    assert_eq!(on_b.message(&format!("{t}/fromc"))["payload"], "c");

    // Clearing the retained message on node C clears it everywhere.
    assert_eq!(
        from_c.publish(json!({"topic": state, "payload": "", "qos": 1, "retain": true})),
        0
    );
    assert_eq!(on_b.message(&state)["payload"], "");
    let deadline = Instant::now() + WAIT;
    loop {
        let mut late = mqtt(&c.a, "mn-late-a", &unique("la"), 4);
        late.subscribe(&format!("{t}/+"), 1);
        assert_eq!(
            publisher.publish(json!({"topic": format!("{t}/end"), "payload": "e", "qos": 1})),
            0
        );
        let first = late.expect("a message", |v| v["event"] == "message");
        if first["topic"] == format!("{t}/end") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node A kept the cleared retained message"
        );
    }
}

#[test]
fn policy_changes_on_one_node_apply_on_every_node() {
    let Some(url) = amqp_url("policy_changes_on_one_node_apply_on_every_node") else {
        return;
    };
    let cluster = Cluster::start(&url);
    let (a, b) = (&cluster.a, &cluster.b);
    let on_b = b.client("alice", "web");
    let mut pb_on_b = {
        let token = b.admin().token("mallory", "phone", 2);
        imgate_conformance::PbClient::login_ok(b.addr("pb"), "mallory", &token, "phone", 2)
    };
    // A word added through node A's admin API...
    let r = a
        .admin()
        .post("/admin/sensitive/add", &json!({"words": ["clusterword"]}));
    assert_eq!(r.code(), 0, "{:?}", r.body);
    eventually("node B has the word", || {
        b.admin()
            .post("/admin/sensitive/query", &json!({}))
            .result()["words"]
            == json!(["clusterword"])
    });
    // ...is enforced by node B, with no restart.
    let sent = on_b.send_text("bob", "a clusterword here", "w1");
    assert_eq!((sent.status, sent.code()), (403, 242));
    // A user forbidden on node A is kicked from node B and cannot log in there.
    let f = a.admin().post(
        "/admin/user/status",
        &json!({"userId": "mallory", "status": 2}),
    );
    assert_eq!(f.code(), 0);
    match pb_on_b.recv(WAIT).expect("a kick notice on node B").msg {
        imgate_codecs::pb::PbServerMessage::Kick(k) => assert_eq!(k.code, 245),
        other => panic!("expected Kick, got {other:?}"),
    }
    let token = b.admin().token("mallory", "phone", 2);
    let mut again = imgate_conformance::PbClient::connect(b.addr("pb"));
    assert_eq!(again.login("mallory", &token, "phone", 2).code, 245);
    // A node started afterwards has the policy before it serves.
    let c = cluster.add_node(3);
    let late = c
        .client("alice", "web")
        .send_text("bob", "clusterword", "w2");
    assert_eq!(late.code(), 242);
}

#[test]
fn daily_quota_is_one_count_for_every_node() {
    let Some(url) = amqp_url("daily_quota_is_one_count_for_every_node") else {
        return;
    };
    let cluster = Cluster::start_with(&url, &[("IMGATE_DAILY_QUOTA", "3")]);
    let on_a = cluster.a.client("quinn", "web");
    let on_b = cluster.b.client("quinn", "desk");
    assert_eq!(on_a.send_text("bob", "1", "q1").code(), 0);
    assert_eq!(on_b.send_text("bob", "2", "q2").code(), 0);
    assert_eq!(on_a.send_text("bob", "3", "q3").code(), 0);
    // Once node B has indexed the three (its count is kept with them)...
    eventually("node B indexed quinn's messages", || {
        on_b.sync_all(0).len() == 3
    });
    // ...the quota is used up on both nodes, not three per node.
    let r = on_b.send_text("bob", "4", "q4");
    assert_eq!((r.status, r.code()), (429, 250), "{:?}", r.body);
    assert_eq!(on_a.send_text("bob", "5", "q5").code(), 250);
    assert_eq!(
        cluster
            .b
            .client("rita", "x")
            .send_text("bob", "r", "r1")
            .code(),
        0
    );
}

#[test]
fn im_across_nodes_between_pb_mqtt_and_xmpp() {
    use imgate_codecs::xmpp::{ns, Element};
    use imgate_conformance::xmpp::XmppRaw;
    let Some(url) = amqp_url("im_across_nodes_between_pb_mqtt_and_xmpp") else {
        return;
    };
    let c = Cluster::start(&url);
    let (alice, bob, carol) = (unique("mn-alice"), unique("mn-bob"), unique("mn-carol"));
    // bob (MQTT) and carol (XMPP) on node B; alice (PB) on node A.
    let mut bob_mqtt = mqtt(&c.b, &bob, "bob-dev", 5);
    let inbox = format!("im/inbox/{bob}");
    assert_eq!(bob_mqtt.subscribe(&inbox, 1), vec![1]);
    let carol_token = c.b.admin().token(&carol, "carol-dev", 3);
    let (mut carol_x, _) = XmppRaw::login(c.b.addr("xmpp"), "localhost", &carol, &carol_token);
    let alice_token = c.a.admin().token(&alice, "alice-dev", 2);
    let mut alice_pb = imgate_conformance::PbClient::login_ok(
        c.a.addr("pb"),
        &alice,
        &alice_token,
        "alice-dev",
        2,
    );

    // PB on A → MQTT on B.
    let r = alice_pb.send_text(&bob, "pb to mqtt", "x1");
    assert_eq!(r.code, 0);
    let m = bob_mqtt.message(&inbox);
    let v: serde_json::Value =
        serde_json::from_str(m["payload"].as_str().expect("payload")).unwrap();
    assert_eq!(v["messageUid"].as_u64(), Some(r.message_id));
    assert_eq!(v["payload"]["searchableContent"], "pb to mqtt");

    // PB on A → XMPP on B.
    let r2 = alice_pb.send_text(&carol, "pb to xmpp", "x2");
    assert_eq!(r2.code, 0);
    let body = |e: &Element| e.get_child("body", ns::CLIENT).map(Element::text_content);
    let got = carol_x
        .wait_for(|e| e.name == "message" && body(e).is_some(), WAIT)
        .expect("carol gets alice's message on node B");
    assert_eq!(body(&got).as_deref(), Some("pb to xmpp"));
    assert_eq!(got.get_attr("id"), Some(r2.message_id.to_string().as_str()));

    // MQTT on B → PB on A.
    assert_eq!(
        bob_mqtt.publish(json!({
            "topic": "im/send", "qos": 1,
            "payload": json!({"conv": {"type": 0, "target": alice}, "payload": {"type": 1, "searchableContent": "mqtt to pb"}, "clientMsgId": "m1"}).to_string()
        })),
        0
    );
    let d = alice_pb
        .next_deliver(WAIT)
        .expect("alice gets bob's MQTT message on node A");
    assert_eq!(d.sender, bob);
    assert_eq!(d.payload.unwrap().searchable_content, "mqtt to pb");

    // XMPP on B → PB on A.
    carol_x.send(&format!(
        "<message to='{alice}@localhost' type='chat' id='c1'><body>xmpp to pb</body></message>"
    ));
    let d = alice_pb
        .next_deliver(WAIT)
        .expect("alice gets carol's XMPP message on node A");
    assert_eq!(d.sender, carol);
    assert_eq!(d.payload.unwrap().searchable_content, "xmpp to pb");
}

/// The multi-endpoint kick rule holds across nodes: a phone login on node
/// B ends the phone session on node A (or, if the two logins raced, the
/// other one: exactly one survives), and a PC session stays.
#[test]
fn second_phone_login_on_another_node_kicks_the_first() {
    use imgate_codecs::pb::PbServerMessage;
    use imgate_conformance::PbClient;
    let Some(url) = amqp_url("second_phone_login_on_another_node_kicks_the_first") else {
        return;
    };
    let c = Cluster::start(&url);
    let user = unique("mn-kick");
    let login = |g: &Gateway, device: &str, platform: i32| {
        let token = g.admin().token(&user, device, platform);
        PbClient::login_ok(g.addr("pb"), &user, &token, device, platform)
    };
    let mut phone1 = login(&c.a, "phone1", 2);
    let mut laptop = login(&c.a, "laptop", 3);
    // A round trip through the store on node A, so phone1's announcement
    // is normally ahead of phone2's login.
    assert_eq!(phone1.send_text(&user, "note to self", "k1").code, 0);
    let mut phone2 = login(&c.b, "phone2", 1);
    let is_kick = |m: &PbServerMessage| matches!(m, PbServerMessage::Kick(k) if k.code == 7);
    let deadline = Instant::now() + WAIT;
    let (kicked, survivor) = loop {
        assert!(
            Instant::now() < deadline,
            "no session was kicked across nodes"
        );
        if let Some(m) = phone1.recv(Duration::from_millis(100)) {
            if is_kick(&m.msg) {
                break (phone1, phone2);
            }
        }
        if let Some(m) = phone2.recv(Duration::from_millis(100)) {
            if is_kick(&m.msg) {
                break (phone2, phone1);
            }
        }
    };
    let (mut kicked, mut survivor) = (kicked, survivor);
    assert!(kicked.wait_closed(WAIT), "the kicked session is closed");
    assert!(survivor.heartbeat(), "the other phone stays online");
    assert!(laptop.heartbeat(), "another platform class stays online");
}

/// An XMPP recipient's receipt reaches the XMPP sender on the other node.
#[test]
fn xmpp_receipts_cross_nodes() {
    use imgate_codecs::xmpp::{ns, Element};
    use imgate_conformance::xmpp::XmppRaw;
    let Some(url) = amqp_url("xmpp_receipts_cross_nodes") else {
        return;
    };
    let c = Cluster::start(&url);
    let (alice, bob) = (unique("mn-rcpt-a"), unique("mn-rcpt-b"));
    let login = |g: &Gateway, user: &str| {
        let token = g.admin().token(user, "pc", 3);
        XmppRaw::login(g.addr("xmpp"), "localhost", user, &token).0
    };
    let mut a = login(&c.a, &alice);
    let mut b = login(&c.b, &bob);
    a.send(&format!("<message to='{bob}@localhost' type='chat' id='x-1'><body>hi</body><request xmlns='urn:xmpp:receipts'/></message>"));
    let m = b
        .wait_for(
            |e: &Element| e.name == "message" && e.get_child("body", ns::CLIENT).is_some(),
            WAIT,
        )
        .expect("bob gets the message on node B");
    let uid = m.get_attr("id").expect("stanza id").to_string();
    b.send(&format!("<message to='{alice}@localhost' id='r-1'><received xmlns='urn:xmpp:receipts' id='{uid}'/></message>"));
    let r = a
        .wait_for(
            |e: &Element| e.get_child("received", ns::RECEIPTS).is_some(),
            WAIT,
        )
        .expect("alice gets the receipt on node A");
    assert_eq!(
        r.get_child("received", ns::RECEIPTS)
            .and_then(|x| x.get_attr("id")),
        Some("x-1")
    );
}
