//! The generic MQTT broker outside `im/` (DESIGN §5.3) with real
//! paho-mqtt clients: retained messages, wills (with MQTT 5 will delay),
//! wildcards, QoS 2, persistent sessions with offline queueing and DUP
//! redelivery (also across a restart), and MQTT 5 properties.

use std::time::{Duration, Instant};

use imgate_conformance::gateway::conformance_store;
use imgate_conformance::mqtt::MqttAgent;
use imgate_conformance::{unique, Gateway};
use serde_json::{json, Value};

fn opts(g: &Gateway, user: &str, device: &str, version: u8) -> Value {
    let token = g.admin().token(user, device, 1);
    json!({"version": version, "client_id": device, "user": user, "token": token})
}

fn connect(g: &Gateway, o: Value) -> MqttAgent {
    let mut a = MqttAgent::start(g.addr("mqtt"));
    let ack = a.connect(o);
    assert_eq!(ack["rc"], 0, "{ack}");
    a
}

#[test]
fn retained_wildcards_and_qos2() {
    let g = Gateway::start();
    let t = unique("wild");
    let mut p = connect(&g, opts(&g, &unique("pub"), "p", 4));
    assert_eq!(
        p.publish(
            json!({"topic": format!("{t}/1/temp"), "payload": "21", "qos": 1, "retain": true})
        ),
        0
    );
    let mut s = connect(&g, opts(&g, &unique("sub"), "s", 5));
    assert_eq!(s.subscribe(&format!("{t}/+/temp"), 2), vec![2]);
    let r = s.message(&format!("{t}/1/temp"));
    assert_eq!(
        (r["payload"].as_str(), r["retain"].as_bool()),
        (Some("21"), Some(true))
    );
    assert_eq!(s.subscribe(&format!("{t}/#"), 2), vec![2]);
    // Retained again for the new filter; then live traffic at QoS 2.
    assert_eq!(s.message(&format!("{t}/1/temp"))["retain"], true);
    assert_eq!(
        p.publish(json!({"topic": format!("{t}/2/temp"), "payload": "q2", "qos": 2})),
        0
    );
    let m = s.message(&format!("{t}/2/temp"));
    assert_eq!(
        (m["qos"].as_i64(), m["retain"].as_bool()),
        (Some(2), Some(false))
    );
    // Overlapping subscriptions: delivered once.
    assert!(s
        .try_expect(Duration::from_millis(300), &|v| v["topic"]
            == format!("{t}/2/temp"))
        .is_none());
    p.publish(json!({"topic": format!("{t}/x/hum"), "payload": "h", "qos": 0}));
    assert_eq!(s.message(&format!("{t}/x/hum"))["payload"], "h");
    // Clearing the retained message.
    p.publish(json!({"topic": format!("{t}/1/temp"), "payload": "", "qos": 1, "retain": true}));
    let mut late = connect(&g, opts(&g, &unique("late"), "l", 4));
    late.subscribe(&format!("{t}/#"), 1);
    p.publish(json!({"topic": format!("{t}/end"), "payload": "e", "qos": 1}));
    let first = late.expect("a message", |v| v["event"] == "message");
    assert_eq!(
        first["topic"],
        format!("{t}/end"),
        "the cleared retained message is gone"
    );
}

#[test]
fn wills_fire_on_abnormal_close_and_respect_will_delay() {
    let g = Gateway::start();
    let t = unique("will");
    let mut w = connect(&g, opts(&g, &unique("watch"), "w", 4));
    w.subscribe(&format!("{t}/#"), 1);
    let mut o = opts(&g, &unique("dev"), "d", 4);
    o["will"] = json!({"topic": format!("{t}/v4"), "payload": "gone", "qos": 1});
    let mut d = connect(&g, o);
    d.cmd(json!({"op": "crash"}));
    assert_eq!(w.message(&format!("{t}/v4"))["payload"], "gone");
    // A clean DISCONNECT sends no will.
    let mut o = opts(&g, &unique("dev"), "d2", 4);
    o["will"] = json!({"topic": format!("{t}/clean"), "payload": "x", "qos": 1});
    let mut d = connect(&g, o);
    d.cmd(json!({"op": "disconnect"}));
    d.event("disconnected");
    // MQTT 5 will delay: not before the delay has passed.
    let mut o = opts(&g, &unique("dev5"), "d5", 5);
    o["clean"] = json!(false);
    o["props"] = json!({"SessionExpiryInterval": 60});
    o["will"] = json!({"topic": format!("{t}/v5"), "payload": "late", "qos": 1, "props": {"WillDelayInterval": 2}});
    let mut d = connect(&g, o);
    let crashed = Instant::now();
    d.cmd(json!({"op": "crash"}));
    assert_eq!(w.message(&format!("{t}/v5"))["payload"], "late");
    assert!(
        crashed.elapsed() >= Duration::from_millis(1500),
        "will came after {:?}",
        crashed.elapsed()
    );
    assert!(
        w.try_expect(Duration::from_millis(200), &|v| v["topic"]
            == format!("{t}/clean"))
            .is_none(),
        "no will after a clean disconnect"
    );
}

#[test]
fn persistent_sessions_queue_offline_and_redeliver_with_dup_across_restart() {
    let mut g = Gateway::start();
    let t = unique("queue");
    let sub_user = unique("qsub");
    let pub_user = unique("qpub");
    let mut so = opts(&g, &sub_user, "s", 4);
    so["clean"] = json!(false);
    so["manual_ack"] = json!(true);
    let mut s = connect(&g, so.clone());
    s.subscribe(&format!("{t}/#"), 1);
    s.cmd(json!({"op": "disconnect"}));
    s.event("disconnected");
    drop(s);
    let mut p = connect(&g, opts(&g, &pub_user, "p", 4));
    for i in 0..3 {
        assert_eq!(
            p.publish(json!({"topic": format!("{t}/{i}"), "payload": format!("m{i}"), "qos": 1})),
            0
        );
    }
    p.publish(json!({"topic": format!("{t}/kept"), "payload": "r", "qos": 1, "retain": true}));
    drop(p);
    // Survives a kill -9 (queued QoS 1 and retained are in mqtt.redb).
    g.kill9();
    g.restart();
    so["token"] = json!(g.admin().token(&sub_user, "s", 1));
    let mut s = MqttAgent::start(g.addr("mqtt"));
    let ack = s.connect(so.clone());
    assert_eq!(
        (ack["rc"].as_i64(), ack["session_present"].as_bool()),
        (Some(0), Some(true))
    );
    let first = s.message(&format!("{t}/0"));
    assert_eq!(first["payload"], "m0");
    // Not acked: crash and come back: redelivered with DUP.
    s.cmd(json!({"op": "crash"}));
    drop(s);
    let mut s = connect(&g, so.clone());
    let again = s.message(&format!("{t}/0"));
    assert_eq!(
        (again["payload"].as_str(), again["dup"].as_bool()),
        (Some("m0"), Some(true))
    );
    for m in [
        again,
        s.message(&format!("{t}/1")),
        s.message(&format!("{t}/2")),
        s.message(&format!("{t}/kept")),
    ] {
        s.cmd(json!({"op": "ack", "mid": m["mid"]}));
    }
    // Retained survives the restart too.
    let mut late = connect(&g, opts(&g, &unique("late"), "l", 5));
    late.subscribe(&format!("{t}/kept"), 1);
    assert_eq!(late.message(&format!("{t}/kept"))["payload"], "r");
}

/// A publisher's PUBACK means durable even when the persistent subscriber
/// is online and has not acked yet: a kill -9 at that moment loses nothing.
#[test]
fn online_persistent_session_keeps_unacked_messages_across_kill_9() {
    let mut g = Gateway::start();
    let t = unique("online");
    let sub_user = unique("osub");
    let mut so = opts(&g, &sub_user, "s", 4);
    so["clean"] = json!(false);
    so["manual_ack"] = json!(true);
    let mut s = connect(&g, so.clone());
    s.subscribe(&format!("{t}/#"), 1);
    let mut p = connect(&g, opts(&g, &unique("opub"), "p", 4));
    for i in 0..3 {
        assert_eq!(
            p.publish(json!({"topic": format!("{t}/{i}"), "payload": format!("m{i}"), "qos": 1})),
            0
        );
    }
    // Online and received, never acked.
    for i in 0..3 {
        assert_eq!(s.message(&format!("{t}/{i}"))["payload"], format!("m{i}"));
    }
    g.kill9();
    drop((s, p));
    g.restart();
    so["token"] = json!(g.admin().token(&sub_user, "s", 1));
    let mut s = MqttAgent::start(g.addr("mqtt"));
    let ack = s.connect(so);
    assert_eq!(
        (ack["rc"].as_i64(), ack["session_present"].as_bool()),
        (Some(0), Some(true))
    );
    for i in 0..3 {
        let m = s.message(&format!("{t}/{i}"));
        assert_eq!(m["payload"], format!("m{i}"));
        s.cmd(json!({"op": "ack", "mid": m["mid"]}));
    }
}

#[test]
fn mqtt5_properties_flow_control_and_aliases() {
    let g = Gateway::start();
    let t = unique("v5");
    let mut so = opts(&g, &unique("sub5"), "s", 5);
    so["manual_ack"] = json!(true);
    so["props"] = json!({"ReceiveMaximum": 1});
    let mut s = connect(&g, so);
    assert_eq!(
        s.subscribe_with(
            json!({"topic": format!("{t}/#"), "qos": 1, "props": {"SubscriptionIdentifier": 7}})
        ),
        vec![1]
    );
    assert_eq!(
        s.subscribe_with(json!({"topic": format!("{t}/nl"), "qos": 1, "no_local": true})),
        vec![1]
    );
    let mut p = connect(&g, opts(&g, &unique("pub5"), "p", 5));
    let props = json!({"UserProperty": [["k", "v"]], "ContentType": "text/plain",
        "PayloadFormatIndicator": 1, "MessageExpiryInterval": 60});
    assert_eq!(
        p.publish(json!({"topic": format!("{t}/a"), "payload": "1", "qos": 1, "props": props})),
        0
    );
    let m = s.message(&format!("{t}/a"));
    assert_eq!(m["props"]["UserProperty"], json!([["k", "v"]]));
    assert_eq!(m["props"]["ContentType"], "text/plain");
    assert_eq!(m["props"]["PayloadFormatIndicator"], 1);
    assert_eq!(m["props"]["SubscriptionIdentifier"], json!([7]));
    let left = m["props"]["MessageExpiryInterval"].as_i64().unwrap_or(0);
    assert!((1..=60).contains(&left), "expiry {left}");
    // Receive Maximum 1: the second message waits for the first PUBACK.
    p.publish(json!({"topic": format!("{t}/b"), "payload": "2", "qos": 1}));
    assert!(s
        .try_expect(Duration::from_millis(500), &|v| v["topic"]
            == format!("{t}/b"))
        .is_none());
    s.cmd(json!({"op": "ack", "mid": m["mid"]}));
    let b = s.message(&format!("{t}/b"));
    s.cmd(json!({"op": "ack", "mid": b["mid"]}));
    // Inbound topic alias: set with the topic, then used alone.
    p.publish(json!({"topic": format!("{t}/alias"), "payload": "x1", "qos": 1, "props": {"TopicAlias": 3}}));
    let x = s.message(&format!("{t}/alias"));
    s.cmd(json!({"op": "ack", "mid": x["mid"]}));
    p.publish(json!({"topic": "", "payload": "x2", "qos": 1, "props": {"TopicAlias": 3}}));
    let x2 = s.message(&format!("{t}/alias"));
    assert_eq!(x2["payload"], "x2");
    s.cmd(json!({"op": "ack", "mid": x2["mid"]}));
    // No matching subscribers: reason 0x10 (still a success). On the
    // RabbitMQ store the message also goes to the other nodes, whose
    // subscribers this node cannot know, so it says plain success (MQTT 5
    // §3.4.2.1: 0x10 only when the server knows there are none).
    let no_subscribers = if conformance_store().starts_with("amqp") {
        0x00
    } else {
        0x10
    };
    assert_eq!(
        p.publish(json!({"topic": format!("{}/none", unique("x")), "payload": "", "qos": 1})),
        no_subscribers
    );
}

/// Shared subscriptions (MQTT 5 §4.8.2; 3.1.1 clients may join too): each
/// message goes to exactly one member of the group while ordinary
/// subscribers get every message; a member that leaves gets nothing more;
/// no retained messages on a shared subscribe; the IM inbox cannot be
/// shared.
#[test]
fn shared_subscriptions_deliver_each_message_to_one_member() {
    let g = Gateway::start();
    let t = unique("shared");
    let group = format!("$share/workers/{t}/jobs/#");
    let mut p = connect(&g, opts(&g, &unique("spub"), "p", 5));
    // Nobody subscribed yet: 0x10 on one node (0 when other nodes may have
    // subscribers).
    let kept = p.publish(
        json!({"topic": format!("{t}/jobs/kept"), "payload": "old", "qos": 1, "retain": true}),
    );
    assert!(kept == 0 || kept == 0x10, "{kept}");
    let mut n = connect(&g, opts(&g, &unique("plain"), "n", 5));
    assert_eq!(n.subscribe(&format!("{t}/jobs/#"), 1), vec![1]);
    let mut w1 = connect(&g, opts(&g, &unique("w1"), "w1", 5));
    let mut w2 = connect(&g, opts(&g, &unique("w2"), "w2", 4));
    assert_eq!(w1.subscribe(&group, 1), vec![1]);
    assert_eq!(w2.subscribe(&group, 1), vec![1]);
    let topics: Vec<String> = (0..10).map(|i| format!("{t}/jobs/{i}")).collect();
    for (i, topic) in topics.iter().enumerate() {
        assert_eq!(
            p.publish(json!({"topic": topic, "payload": format!("j{i}"), "qos": 1})),
            0
        );
    }
    for topic in &topics {
        n.message(topic);
    }
    // Every job once, over both workers.
    let is_job = |v: &Value| v["event"] == "message" && v["topic"] != format!("{t}/jobs/kept");
    let (mut got1, mut got2) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    while got1.len() + got2.len() < topics.len() {
        assert!(Instant::now() < deadline, "jobs missing: {got1:?} {got2:?}");
        if let Some(m) = w1.try_expect(Duration::from_millis(50), &is_job) {
            got1.push(m["topic"].as_str().unwrap_or_default().to_string());
        }
        if let Some(m) = w2.try_expect(Duration::from_millis(50), &is_job) {
            got2.push(m["topic"].as_str().unwrap_or_default().to_string());
        }
    }
    assert!(
        !got1.is_empty() && !got2.is_empty(),
        "both workers get jobs: {got1:?} {got2:?}"
    );
    let mut all: Vec<String> = got1.iter().chain(&got2).cloned().collect();
    all.sort();
    let mut want = topics.clone();
    want.sort();
    assert_eq!(all, want, "each job exactly once");
    // No retained message on a shared subscribe.
    for w in [&mut w1, &mut w2] {
        assert!(w
            .try_expect(Duration::from_millis(200), &|v| v["topic"]
                == format!("{t}/jobs/kept"))
            .is_none());
    }
    // A member that leaves gets nothing more.
    w1.cmd(json!({"op": "unsubscribe", "topic": group}));
    w1.event("unsuback");
    for i in 10..14 {
        p.publish(json!({"topic": format!("{t}/jobs/{i}"), "payload": "late", "qos": 1}));
    }
    for i in 10..14 {
        w2.message(&format!("{t}/jobs/{i}"));
    }
    assert!(w1.try_expect(Duration::from_millis(200), &is_job).is_none());
    // Malformed share names and the IM inbox.
    assert_eq!(w1.subscribe("$share//x", 1), vec![0x8F]);
    let inbox_user = unique("inboxer");
    let mut im = connect(&g, opts(&g, &inbox_user, "i", 5));
    assert_eq!(
        im.subscribe(&format!("$share/g/im/inbox/{inbox_user}"), 1),
        vec![0x9E]
    );
}
