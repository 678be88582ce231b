//! MQTT and the IM namespace (DESIGN §5.3) with real paho-mqtt clients
//! (3.1.1 and 5): login, own inbox only, `im/send` across MQTT, HTTP and
//! PB, PUBACK only after durability, offline redelivery.

use imgate_codecs::mqtt::{reason, Connect, Packet, Version};
use imgate_conformance::mqtt::{MqttAgent, RawMqtt};
use imgate_conformance::{unique, Gateway, PbClient, WAIT};
use serde_json::{json, Value};

fn connect_as(g: &Gateway, user: &str, device: &str, version: u8) -> MqttAgent {
    let token = g.admin().token(user, device, 1);
    let mut a = MqttAgent::start(g.addr("mqtt"));
    let ack =
        a.connect(json!({"version": version, "client_id": device, "user": user, "token": token}));
    assert_eq!(ack["rc"], 0, "{ack}");
    a
}

fn payload_of(msg: &Value) -> Value {
    serde_json::from_str(msg["payload"].as_str().unwrap_or("")).expect("JSON payload")
}

#[test]
fn login_accepts_tokens_and_refuses_bad_credentials() {
    let g = Gateway::start();
    let user = unique("mq-auth");
    for version in [4u8, 5] {
        let _ok = connect_as(&g, &user, &format!("dev{version}"), version);
        let mut bad = MqttAgent::start(g.addr("mqtt"));
        let ack = bad
            .connect(json!({"version": version, "client_id": "x", "user": user, "token": "nope"}));
        // paho reports both the 3.1.1 code 4 and the MQTT 5 0x86 as 134.
        assert_eq!(ack["rc"], 134, "{ack}");
    }
    // The 3.1.1 wire code itself is 0x04.
    let mut raw = RawMqtt::connect(g.addr("mqtt"), Version::V4);
    raw.send(
        &Packet::Connect(Connect {
            version: Version::V4,
            client_id: "d".into(),
            clean_start: true,
            keep_alive: 30,
            username: Some(user.clone()),
            password: Some("wrong".into()),
            will: None,
            properties: Default::default(),
        }),
        Version::V4,
    );
    match raw.until_closed().first() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, reason::V4_BAD_USER_NAME_OR_PASSWORD),
        other => panic!("expected CONNACK 4, got {other:?}"),
    }
}

#[test]
fn own_inbox_only_and_messages_cross_mqtt_http_and_pb() {
    let g = Gateway::start();
    let alice = unique("mq-alice");
    let bob = unique("mq-bob");
    let dave = unique("mq-dave");
    let mut a = connect_as(&g, &alice, "a-dev", 5);
    assert_eq!(a.subscribe(&format!("im/inbox/{alice}"), 1), vec![1]);
    assert_eq!(a.subscribe(&format!("im/inbox/{bob}"), 1), vec![0x87]);
    assert_eq!(a.subscribe("im/ack/a-dev", 1), vec![1]);
    assert_eq!(a.subscribe("im/ack/someone-else", 1), vec![0x87]);
    let mut c = connect_as(&g, &unique("mq-carol"), "c-dev", 4);
    assert_eq!(c.subscribe(&format!("im/inbox/{bob}"), 1), vec![0x80]);

    // HTTP → MQTT
    let r = g
        .client(&bob, "b-http")
        .send_text(&alice, "from http", "h1");
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let m = payload_of(&a.message(&format!("im/inbox/{alice}")));
    assert_eq!(m["sender"], bob.as_str());
    assert_eq!(m["payload"]["searchableContent"], "from http");
    assert_eq!(
        m["messageUidStr"],
        m["messageUid"].as_u64().unwrap().to_string()
    );

    // PB → MQTT
    let dave_token = g.admin().token(&dave, "d-pb", 1);
    let mut pb = PbClient::login_ok(g.addr("pb"), &dave, &dave_token, "d-pb", 1);
    assert_eq!(pb.send_text(&alice, "from pb", "p1").code, 0);
    let m = payload_of(&a.message(&format!("im/inbox/{alice}")));
    assert_eq!(
        (
            m["sender"].as_str(),
            m["payload"]["searchableContent"].as_str()
        ),
        (Some(dave.as_str()), Some("from pb"))
    );

    // MQTT → PB, with the result on im/ack/<clientId> and PUBACK after it.
    let send = json!({"conv": {"type": 0, "target": dave, "line": 0},
        "payload": {"type": 1, "searchableContent": "from mqtt", "extra": "x"}, "clientMsgId": "m1"});
    let rc = a.publish(json!({"topic": "im/send", "qos": 1, "payload": send.to_string()}));
    assert_eq!(rc, 0);
    let result = payload_of(&a.message("im/ack/a-dev"));
    assert_eq!(
        (result["code"].as_i64(), result["clientMsgId"].as_str()),
        (Some(0), Some("m1"))
    );
    let uid = result["messageUid"].as_u64().expect("messageUid");
    let d = pb.next_deliver(WAIT).expect("PB delivery");
    assert_eq!((d.message_id, d.sender.as_str()), (uid, alice.as_str()));
    assert_eq!(d.payload.as_ref().map(|p| p.extra.as_str()), Some("x"));

    // MQTT → HTTP (sync)
    let send = json!({"conv": {"type": 0, "target": bob, "line": 0},
        "payload": {"type": 1, "searchableContent": "to http"}, "clientMsgId": "m2"});
    assert_eq!(
        a.publish(json!({"topic": "im/send", "qos": 1, "payload": send.to_string()})),
        0
    );
    assert_eq!(payload_of(&a.message("im/ack/a-dev"))["clientMsgId"], "m2");
    let synced = g.client(&bob, "b-http").sync_all(0);
    assert!(synced
        .iter()
        .any(|m| m["clientMsgId"] == "m2" && m["sender"] == alice.as_str()));

    // A rejection: MQTT 5 reason 0x99 and code 2 on im/ack.
    assert_eq!(
        a.publish(json!({"topic": "im/send", "qos": 1, "payload": "{not json"})),
        0x99
    );
    assert_eq!(payload_of(&a.message("im/ack/a-dev"))["code"], 2);
    // Reserved topics cannot be published to.
    assert_eq!(
        a.publish(json!({"topic": format!("im/inbox/{bob}"), "qos": 1, "payload": "x"})),
        0x87
    );
}

#[test]
fn puback_means_durable_even_after_kill_9() {
    let mut g = Gateway::start();
    let alice = unique("mq-dur-a");
    let bob = unique("mq-dur-b");
    let mut a = connect_as(&g, &alice, "a-dev", 4);
    for i in 0..20 {
        let send = json!({"conv": {"type": 0, "target": bob, "line": 0},
            "payload": {"type": 1, "searchableContent": format!("m{i}")}, "clientMsgId": format!("c{i}")});
        assert_eq!(
            a.publish(json!({"topic": "im/send", "qos": 1, "payload": send.to_string()})),
            0
        );
    }
    g.kill9();
    drop(a);
    g.restart();
    let ids: Vec<String> = g
        .client(&bob, "b")
        .sync_all(0)
        .iter()
        .filter_map(|m| m["clientMsgId"].as_str().map(str::to_owned))
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    assert_eq!(ids, want);
}

#[test]
fn persistent_session_gets_what_it_missed_and_unacked_is_redelivered() {
    let g = Gateway::start();
    let alice = unique("mq-off-a");
    let bob = unique("mq-off-b");
    let token = g.admin().token(&alice, "a-dev", 1);
    let opts = json!({"version": 4, "client_id": "a-dev", "user": alice, "token": token, "clean": false, "manual_ack": true});
    let mut a = MqttAgent::start(g.addr("mqtt"));
    assert_eq!(a.connect(opts.clone())["rc"], 0);
    let inbox = format!("im/inbox/{alice}");
    assert_eq!(a.subscribe(&inbox, 1), vec![1]);
    let http = g.client(&bob, "b");
    http.send_text(&alice, "one", "o1");
    let first = a.message(&inbox);
    // Not acked: crash, reconnect without subscribing again.
    a.cmd(json!({"op": "crash"}));
    drop(a);
    http.send_text(&alice, "two", "o2");
    let mut a = MqttAgent::start(g.addr("mqtt"));
    let ack = a.connect(opts.clone());
    assert_eq!(
        (ack["rc"].as_i64(), ack["session_present"].as_bool()),
        (Some(0), Some(true))
    );
    let again = a.message(&inbox);
    assert_eq!(
        payload_of(&again)["messageUid"],
        payload_of(&first)["messageUid"]
    );
    a.cmd(json!({"op": "ack", "mid": again["mid"]}));
    let second = a.message(&inbox);
    assert_eq!(payload_of(&second)["payload"]["searchableContent"], "two");
    a.cmd(json!({"op": "ack", "mid": second["mid"]}));
    a.cmd(json!({"op": "disconnect"}));
    a.event("disconnected");
    drop(a);
    // Everything acked: a new connection gets nothing old.
    http.send_text(&alice, "three", "o3");
    let mut a = MqttAgent::start(g.addr("mqtt"));
    assert_eq!(a.connect(opts)["rc"], 0);
    let next = payload_of(&a.message(&inbox));
    assert_eq!(next["payload"]["searchableContent"], "three");
}

#[test]
fn im_read_marks_a_conversation_read_like_http_and_pb() {
    let g = Gateway::start();
    let (m, h) = (unique("rd-m"), unique("rd-h"));
    let token = g.admin().token(&m, "dev1", 3);
    let sent = g.client(&h, "web").send_text(&m, "read me", &unique("c"));
    assert_eq!(sent.code(), 0, "{:?}", sent.body);
    let uid = sent.result()["messageUid"].as_u64().expect("uid");
    let unread = |g: &Gateway| {
        let list = g.client(&m, "web2").get("/v1/conversations");
        list.result()["conversations"][0].clone()
    };
    assert_eq!(unread(&g)["unread"], 1);
    let mut a = MqttAgent::start(g.addr("mqtt"));
    let ack = a.connect(json!({"client_id": "dev1", "user": m, "token": token, "version": 5}));
    assert_eq!(ack["rc"], 0, "{ack}");
    let read = json!({"conv": {"type": 0, "target": h, "line": 0}, "messageUid": uid.to_string()});
    let rc = a.publish(json!({"topic": "im/read", "qos": 1, "payload": read.to_string()}));
    assert_eq!(rc, 0, "PUBACK success");
    let c = unread(&g);
    assert_eq!(c["unread"], 0, "{c}");
    assert_eq!(c["readUpto"], uid, "{c}");
    // A read of a conversation the user does not have: 0x90 (253).
    let bad = json!({"conv": {"type": 0, "target": unique("nobody"), "line": 0}});
    let rc = a.publish(json!({"topic": "im/read", "qos": 1, "payload": bad.to_string()}));
    assert_eq!(rc, 0x90, "PUBACK names the error");
}
