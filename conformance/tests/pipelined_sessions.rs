//! Pipelined sessions (issue 10 item 3): a PB, MQTT or XMPP client may
//! send many messages without waiting for each ack; the answers come back
//! in its own order, errors at their place, ids in send order (DESIGN
//! §3.4), a resend in flight gets the original ack (§3.3), and a session
//! whose window is full stops reading its socket.

use imgate_codecs::mqtt::{
    Connect, Packet, Properties, PubRespKind, Publish, QoS, SubOptions, Subscribe, SubscribeFilter,
    Version,
};
use imgate_codecs::pb::{proto, PbRequest, PbServerMessage};
use imgate_codecs::xmpp::{ns, Element};
use imgate_conformance::fake_http::FakeHttp;
use imgate_conformance::mqtt::RawMqtt;
use imgate_conformance::xmpp::XmppRaw;
use imgate_conformance::{unique, Gateway, PbClient, WAIT};
use serde_json::json;

fn pb(g: &Gateway, user: &str, device: &str) -> PbClient {
    let token = g.admin().token(user, device, 2);
    PbClient::login_ok(g.addr("pb"), user, &token, device, 2)
}

fn pb_send(to: &str, kind: i32, text: &str, client_msg_id: &str) -> PbRequest {
    PbRequest::Send(proto::SendRequest {
        client_msg_id: client_msg_id.into(),
        conversation: Some(proto::Conversation {
            r#type: kind,
            target: to.into(),
            line: 0,
        }),
        payload: Some(proto::MessagePayload {
            r#type: 1,
            searchable_content: text.into(),
            persist_flag: 1,
            ..Default::default()
        }),
        to_users: vec![],
    })
}

/// The texts `user` finds in sync that `sender` sent, in id order.
fn synced_texts(g: &Gateway, user: &str, sender: &str) -> Vec<String> {
    g.client(user, "sync")
        .sync_all(0)
        .iter()
        .filter(|m| m["sender"] == sender)
        .map(|m| {
            m["payload"]["searchableContent"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[test]
fn pb_sends_in_flight_are_answered_in_order_with_errors_in_place() {
    let g = Gateway::start();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let mut c = pb(&g, &alice, "phone");
    // 0..12 written back to back, nothing read in between: 3 goes to an
    // unknown conversation type (251), 6 to a group that does not exist
    // (253, after a store read), 1 resends 0's clientMsgId while 0 is in
    // flight.
    let mut seqs = Vec::new();
    for i in 0..12 {
        let req = match i {
            1 => pb_send(&bob, 0, "resend", "m0"),
            3 => pb_send(&bob, 9, "bad type", "m3"),
            6 => pb_send("no-such-group", 1, "no group", "m6"),
            _ => pb_send(&bob, 0, &format!("t{i}"), &format!("m{i}")),
        };
        seqs.push(c.request(req));
    }
    let mut answers = Vec::new();
    while answers.len() < seqs.len() {
        let inc = c.recv(WAIT).expect("a SendResponse");
        if let PbServerMessage::SendResponse(r) = inc.msg {
            answers.push((inc.seq, r));
        }
    }
    let got_seqs: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(got_seqs, seqs, "answers in request order");
    let codes: Vec<i32> = answers.iter().map(|(_, r)| r.code).collect();
    assert_eq!(codes, vec![0, 0, 0, 251, 0, 0, 253, 0, 0, 0, 0, 0]);
    assert_eq!(
        answers[1].1.message_id, answers[0].1.message_id,
        "resend → original ack"
    );
    assert_eq!(answers[3].1.client_msg_id, "m3");
    let ids: Vec<u64> = answers
        .iter()
        .enumerate()
        .filter(|(i, (_, r))| r.code == 0 && *i != 1)
        .map(|(_, (_, r))| r.message_id)
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids in send order: {ids:?}"
    );
    let expected: Vec<String> = [0, 2, 4, 5, 7, 8, 9, 10, 11]
        .iter()
        .map(|i| format!("t{i}"))
        .collect();
    assert_eq!(synced_texts(&g, &bob, &alice), expected);
}

/// A sync review hook that answers nothing holds the sends in flight.
fn held_review_gateway(window: &str) -> (FakeHttp, Gateway) {
    let hook = FakeHttp::start(false, |_| (200, String::new()));
    let g = Gateway::start_with(&[
        ("IMGATE_REVIEW_URL", &hook.url),
        ("IMGATE_REVIEW_MODE", "review"),
        ("IMGATE_REVIEW_TIMEOUT_MS", "60000"),
        ("IMGATE_SEND_WINDOW", window),
    ]);
    (hook, g)
}

#[test]
fn pb_full_window_stops_reading_until_the_oldest_send_is_answered() {
    let (hook, g) = held_review_gateway("2");
    let mut c = pb(&g, &unique("alice"), "phone");
    let first = c.request(pb_send("bob", 0, "a", "a"));
    c.request(pb_send("bob", 0, "b", "b"));
    let heartbeat = c.request(PbRequest::Heartbeat);
    assert_eq!(hook.wait_for(2, WAIT).len(), 2, "both sends are in review");
    hook.open_gate();
    // The window (2) was full: the heartbeat was read, and echoed, only
    // after the first send was answered.
    let mut order = Vec::new();
    while !order.contains(&heartbeat) {
        order.push(c.recv(WAIT).expect("answers").seq);
    }
    assert_eq!(order[0], first, "{order:?}");
}

#[test]
fn pb_heartbeat_is_answered_while_sends_are_in_flight() {
    let (hook, g) = held_review_gateway("3");
    let mut c = pb(&g, &unique("alice"), "phone");
    c.request(pb_send("bob", 0, "a", "a"));
    c.request(pb_send("bob", 0, "b", "b"));
    let heartbeat = c.request(PbRequest::Heartbeat);
    // Room in the window: the heartbeat is echoed while both sends wait.
    let echo = c.recv(WAIT).expect("heartbeat echo");
    assert_eq!(echo.seq, heartbeat);
    assert!(matches!(echo.msg, PbServerMessage::Heartbeat));
    hook.open_gate();
    assert_eq!(hook.wait_for(2, WAIT).len(), 2);
}

fn mqtt5(g: &Gateway, user: &str) -> RawMqtt {
    let token = g.admin().token(user, "dev", 1);
    let mut raw = RawMqtt::connect(g.addr("mqtt"), Version::V5);
    raw.send(
        &Packet::Connect(Connect {
            version: Version::V5,
            client_id: "dev".into(),
            clean_start: true,
            keep_alive: 30,
            username: Some(user.into()),
            password: Some(token.into()),
            will: None,
            properties: Properties::default(),
        }),
        Version::V5,
    );
    match raw.recv() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    raw
}

#[test]
fn mqtt_im_sends_in_flight_get_pubacks_and_results_in_publish_order() {
    let g = Gateway::start();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let mut c = mqtt5(&g, &alice);
    c.send(
        &Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter {
                filter: "im/ack/dev".into(),
                options: SubOptions {
                    qos: QoS::AtMostOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                },
            }],
            properties: Properties::default(),
        }),
        Version::V5,
    );
    assert!(matches!(c.recv(), Some(Packet::SubAck(_))));
    // 10 PUBLISHes at once: 4 is not JSON, 7 goes to an unknown group.
    for i in 0..10u16 {
        let body = match i {
            4 => "not json".to_string(),
            7 => json!({"conv": {"type": 1, "target": "no-such-group", "line": 0},
                        "payload": {"type": 1, "searchableContent": "g"}, "clientMsgId": "m7"})
            .to_string(),
            _ => json!({"conv": {"type": 0, "target": bob, "line": 0},
                        "payload": {"type": 1, "searchableContent": format!("t{i}")},
                        "clientMsgId": format!("m{i}")})
            .to_string(),
        };
        c.send(
            &Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "im/send".into(),
                pkid: 100 + i,
                properties: Properties::default(),
                payload: body.into_bytes().into(),
            }),
            Version::V5,
        );
    }
    let mut pubacks = Vec::new();
    let mut results = Vec::new();
    while pubacks.len() < 10 {
        match c.recv().expect("answers") {
            Packet::PubResp(r) if r.kind == PubRespKind::PubAck => {
                pubacks.push((r.pkid, r.reason));
                assert_eq!(
                    results.len(),
                    pubacks.len(),
                    "result JSON before its PUBACK"
                );
            }
            Packet::Publish(p) if p.topic == "im/ack/dev" => {
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                results.push(v);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let pkids: Vec<u16> = pubacks.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        pkids,
        (100..110).collect::<Vec<_>>(),
        "PUBACKs in PUBLISH order"
    );
    let codes: Vec<i64> = results
        .iter()
        .map(|r| r["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![0, 0, 0, 0, 2, 0, 0, 253, 0, 0]);
    assert!(pubacks[4].1 >= 0x80 && pubacks[7].1 >= 0x80, "{pubacks:?}");
    let ids: Vec<u64> = results
        .iter()
        .filter(|r| r["code"] == 0)
        .map(|r| r["messageUid"].as_u64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids in send order: {ids:?}"
    );
    let expected: Vec<String> = [0, 1, 2, 3, 5, 6, 8, 9]
        .iter()
        .map(|i| format!("t{i}"))
        .collect();
    assert_eq!(synced_texts(&g, &bob, &alice), expected);
}

#[test]
fn xmpp_messages_in_flight_count_in_h_and_fail_in_stanza_order() {
    let g = Gateway::start();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let token = g.admin().token(&alice, "laptop", 3);
    let (mut c, _jid) = XmppRaw::login(g.addr("xmpp"), "localhost", &alice, &token);
    c.send("<enable xmlns='urn:xmpp:sm:3'/>");
    c.wait_for(|e| e.is("enabled", ns::SM), WAIT)
        .expect("SM enabled");
    // Six messages at once (3 and 5 to groups that do not exist), an iq
    // ping that waits for them, then an ack request.
    let mut burst = String::new();
    for i in 1..=6 {
        if i == 3 || i == 5 {
            burst.push_str(&format!(
                "<message type='groupchat' to='nogroup{i}@groups.localhost' id='m{i}'><body>g{i}</body></message>"
            ));
        } else {
            burst.push_str(&format!(
                "<message type='chat' to='{bob}@localhost' id='m{i}'><body>t{i}</body></message>"
            ));
        }
    }
    burst.push_str(
        "<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='urn:xmpp:sm:3'/>",
    );
    c.send(&burst);
    let mut seen: Vec<Element> = Vec::new();
    while !seen.iter().any(|e| e.is("a", ns::SM)) {
        seen.push(c.next_element(WAIT).expect("answers"));
    }
    let labels: Vec<String> = seen
        .iter()
        .map(|e| {
            format!(
                "{}:{}:{}",
                e.name,
                e.get_attr("type").unwrap_or(""),
                e.get_attr("id").or(e.get_attr("h")).unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        labels,
        vec![
            "message:error:m3",
            "message:error:m5",
            "iq:result:ping1",
            "a::7"
        ],
        "errors in stanza order, the iq after them, h counting all 7"
    );
    assert_eq!(synced_texts(&g, &bob, &alice), vec!["t1", "t2", "t4", "t6"]);
}
