//! MQTT topic ACLs of generic topics (DESIGN §5: "subject to topic ACLs"),
//! over real sockets with paho-mqtt clients and the shipped
//! `examples/acl.conf` (each user owns `devices/%u/#` and `users/%u/#`,
//! each client id `clients/%c/#`; user `ops` reads `devices/#` except
//! `devices/+/secret/#`): a wildcard subscriber only receives what it may
//! read (live and retained), refused publishes and subscriptions get 0x87,
//! the admin API replaces the rules at once (on every node, with
//! RabbitMQ), a bad file stops `imgate serve`, and no ACL is warned about.
//!
//! "Not received" is proven without sleeping: the subscriber then gets a
//! message published after the one it must not see; the broker queues a
//! session's deliveries in order, so the refused one would have come first.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use imgate_codecs::mqtt::{Connect, Packet, Properties, PubRespKind, Publish, QoS, Version};
use imgate_conformance::http::{fresh_nonce, now_ms, sign};
use imgate_conformance::mqtt::{MqttAgent, RawMqtt};
use imgate_conformance::rabbit_support::{amqp_url, Cluster};
use imgate_conformance::{unique, Gateway, WAIT};
use serde_json::{json, Value};

const NOT_AUTHORIZED: i64 = 0x87;
const V4_SUBACK_FAILURE: i64 = 0x80;
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/acl.conf");

fn acl_gateway() -> Gateway {
    Gateway::start_with(&[("IMGATE_MQTT_ACL_FILE", EXAMPLE)])
}

fn connect(g: &Gateway, user: &str, device: &str, version: u8) -> MqttAgent {
    let token = g.admin().token(user, device, 1);
    let mut a = MqttAgent::start(g.addr("mqtt"));
    let ack =
        a.connect(json!({"version": version, "client_id": device, "user": user, "token": token}));
    assert_eq!(ack["rc"], 0, "{ack}");
    a
}

fn publish(a: &mut MqttAgent, topic: &str, payload: &str, qos: u8, retain: bool) -> i64 {
    a.publish(json!({"topic": topic, "payload": payload, "qos": qos, "retain": retain}))
}

/// Publish `topic` (which `a` may write and is subscribed to) and wait
/// for it: everything routed to `a` before it has arrived by then.
fn marker(a: &mut MqttAgent, topic: &str) {
    let rc = publish(a, topic, "marker", 1, false);
    assert!(rc < 0x80, "marker publish refused: {rc}");
    a.message(topic);
}

/// No message on a topic containing `needle` among what `a` received.
fn assert_none_about(a: &mut MqttAgent, needle: &str) {
    let got = a.try_expect(Duration::ZERO, &|v| {
        v["event"] == "message" && v["topic"].as_str().is_some_and(|t| t.contains(needle))
    });
    assert!(got.is_none(), "received {got:?}");
}

/// A raw MQTT 5 client of `user` past CONNACK.
fn raw_v5(g: &Gateway, user: &str) -> RawMqtt {
    let (code, raw) = raw_v5_connect(g, user, None);
    assert_eq!(code, 0);
    raw
}

/// A raw MQTT 5 CONNECT of `user` (with `will`): the CONNACK code.
fn raw_v5_connect(
    g: &Gateway,
    user: &str,
    will: Option<imgate_codecs::mqtt::LastWill>,
) -> (u8, RawMqtt) {
    let device = unique("raw");
    let token = g.admin().token(user, &device, 1);
    let mut raw = RawMqtt::connect(g.addr("mqtt"), Version::V5);
    let connect = Connect {
        version: Version::V5,
        client_id: device,
        clean_start: true,
        keep_alive: 30,
        username: Some(user.into()),
        password: Some(token.into()),
        will,
        properties: Properties::default(),
    };
    raw.send(&Packet::Connect(connect), Version::V5);
    match raw.recv() {
        Some(Packet::ConnAck(a)) => (a.code, raw),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The (kind, reason byte) of the ack the server sends for a PUBLISH.
fn raw_publish_ack(raw: &mut RawMqtt, topic: &str, qos: QoS, pkid: u16) -> (PubRespKind, u8) {
    let p = Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        properties: Properties::default(),
        payload: "raw".into(),
    };
    raw.send(&Packet::Publish(p), Version::V5);
    match raw.recv() {
        Some(Packet::PubResp(r)) if r.pkid == pkid => (r.kind, r.reason),
        other => panic!("expected an ack for {pkid}, got {other:?}"),
    }
}

/// A signed admin request with a text body (or none).
fn admin(g: &Gateway, method: &str, body: Option<&str>) -> (u16, Value) {
    admin_with(&g.admin_url(), &g.secret, method, body)
}

fn admin_with(base: &str, secret: &str, method: &str, body: Option<&str>) -> (u16, Value) {
    let nonce = fresh_nonce();
    let ts = now_ms().to_string();
    let req = ureq::request(method, &format!("{base}/admin/mqtt/acl"))
        .timeout(WAIT)
        .set("nonce", &nonce)
        .set("timestamp", &ts)
        .set("sign", &sign(&nonce, secret, &ts))
        .set("content-type", "text/plain");
    let r = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("admin {method}: {e}"),
    };
    let status = resp.status();
    (status, resp.into_json().expect("JSON reply"))
}

#[test]
fn a_wildcard_subscriber_gets_only_what_it_may_read() {
    let g = acl_gateway();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let mut a = connect(&g, &alice, &unique("a"), 5);
    let cmd = format!("devices/{alice}/cmd");
    assert!(publish(&mut a, &cmd, "open", 1, true) < 0x80);
    let mut b = connect(&g, &bob, &unique("b"), 5);
    assert_eq!(b.subscribe("#", 1), vec![1], "bob may read something");
    assert_eq!(
        b.subscribe(&format!("devices/{alice}/#"), 1),
        vec![NOT_AUTHORIZED],
        "nothing under alice's subtree is bob's"
    );
    assert_eq!(a.subscribe(&format!("devices/{alice}/#"), 1), vec![1]);
    let r = a.message(&cmd);
    assert_eq!(
        (r["payload"].as_str(), r["retain"].as_bool()),
        (Some("open"), Some(true))
    );
    let t = format!("devices/{alice}/t");
    assert!(publish(&mut a, &t, "21.5", 1, false) < 0x80);
    assert_eq!(a.message(&t)["payload"], "21.5");
    marker(&mut b, &format!("devices/{bob}/t"));
    assert_none_about(&mut b, &alice);
}

#[test]
fn publishes_outside_the_acl_are_refused() {
    let g = acl_gateway();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let mut a = connect(&g, &alice, &unique("a"), 5);
    assert_eq!(a.subscribe(&format!("devices/{alice}/#"), 2), vec![2]);
    let mut b = connect(&g, &bob, &unique("b"), 5);
    assert_eq!(b.subscribe(&format!("devices/{bob}/#"), 1), vec![1]);
    let x = format!("devices/{alice}/x");
    // One connection per user (a second login of the same user on the
    // same platform ends the first).
    let mut raw = raw_v5(&g, &unique("mallory"));
    assert_eq!(
        raw_publish_ack(&mut raw, &x, QoS::AtLeastOnce, 1),
        (PubRespKind::PubAck, NOT_AUTHORIZED as u8)
    );
    assert_eq!(
        raw_publish_ack(&mut raw, &x, QoS::ExactlyOnce, 2),
        (PubRespKind::PubRec, NOT_AUTHORIZED as u8)
    );
    assert_eq!(
        publish(&mut b, &x, "q1", 1, false),
        NOT_AUTHORIZED,
        "paho sees it"
    );
    assert_eq!(
        publish(&mut b, &x, "kept", 1, true),
        NOT_AUTHORIZED,
        "retained too"
    );
    assert_eq!(
        publish(&mut b, "nobody/owns/this", "n", 1, false),
        NOT_AUTHORIZED
    );
    publish(&mut b, &x, "q0", 0, false);
    // The same connection goes on (QoS 0 was dropped in order before it).
    marker(&mut b, &format!("devices/{bob}/after"));
    // MQTT 3.1.1: acked, and dropped (as mosquitto does).
    let trudy = unique("trudy");
    let mut t4 = connect(&g, &trudy, &unique("t4"), 4);
    assert_eq!(publish(&mut t4, &x, "v4", 1, false), 0);
    assert_eq!(
        t4.subscribe(&format!("devices/{alice}/#"), 1),
        vec![V4_SUBACK_FAILURE]
    );
    assert_eq!(t4.subscribe(&format!("devices/{trudy}/#"), 1), vec![1]);
    marker(&mut t4, &format!("devices/{trudy}/v4"));
    // Alice got none of it, and no retained message was stored for her.
    assert_eq!(a.subscribe(&format!("devices/{alice}/+"), 1), vec![1]);
    marker(&mut a, &format!("devices/{alice}/end"));
    assert_none_about(&mut a, &x);
}

#[test]
fn client_id_patterns_and_deny_rules() {
    let g = acl_gateway();
    let (carol, dave, alice) = (unique("carol"), unique("dave"), unique("alice"));
    // `pattern readwrite clients/%c/#`: the device's own topic.
    let (dx, dy) = (unique("dx"), unique("dy"));
    let mut c = connect(&g, &carol, &dx, 5);
    assert_eq!(c.subscribe(&format!("clients/{dx}/#"), 1), vec![1]);
    let mut d = connect(&g, &dave, &dy, 5);
    assert_eq!(
        d.subscribe(&format!("clients/{dx}/#"), 1),
        vec![NOT_AUTHORIZED]
    );
    assert_eq!(d.subscribe("clients/#", 1), vec![1]);
    assert_eq!(
        publish(&mut d, &format!("clients/{dx}/cmd"), "x", 1, false),
        NOT_AUTHORIZED
    );
    let state = format!("clients/{dx}/state");
    assert!(publish(&mut c, &state, "on", 1, false) < 0x80);
    assert_eq!(c.message(&state)["payload"], "on");
    marker(&mut d, &format!("clients/{dy}/m"));
    assert_none_about(&mut d, &dx);
    // `ops` reads devices/#, but `topic deny devices/+/secret/#` wins.
    let mut ops = connect(&g, "ops", &unique("o"), 5);
    assert_eq!(ops.subscribe("devices/#", 1), vec![1]);
    assert_eq!(ops.subscribe("devices/+/secret/#", 1), vec![NOT_AUTHORIZED]);
    let mut a = connect(&g, &alice, &unique("a"), 5);
    assert_eq!(a.subscribe(&format!("devices/{alice}/#"), 1), vec![1]);
    let (t, secret) = (
        format!("devices/{alice}/t"),
        format!("devices/{alice}/secret/k"),
    );
    assert!(publish(&mut a, &t, "temp", 1, false) < 0x80);
    assert!(publish(&mut a, &secret, "pin", 1, false) < 0x80);
    assert_eq!(
        a.message(&secret)["payload"],
        "pin",
        "the deny is ops' only"
    );
    assert_eq!(ops.message(&t)["payload"], "temp");
    marker(&mut ops, "devices/ops/m");
    assert_none_about(&mut ops, "/secret/");
}

#[test]
fn admin_api_replaces_the_rules_for_live_subscriptions() {
    let g = acl_gateway();
    let (alice, bob) = (unique("alice"), unique("bob"));
    let mut a = connect(&g, &alice, &unique("a"), 5);
    let mut b = connect(&g, &bob, &unique("b"), 5);
    assert_eq!(b.subscribe("#", 1), vec![1]);
    let t = format!("devices/{alice}/t");
    assert!(publish(&mut a, &t, "before", 1, false) < 0x80);
    marker(&mut b, &format!("devices/{bob}/1"));
    assert_none_about(&mut b, &alice);

    let (status, r) = admin(&g, "GET", None);
    assert_eq!(status, 200, "{r}");
    let file = std::fs::read_to_string(EXAMPLE).unwrap();
    assert_eq!(
        (r["result"]["source"].as_str(), r["result"]["acl"].as_str()),
        (Some("file"), Some(file.as_str()))
    );
    let (status, r) = admin(&g, "PUT", Some("topic read a/#\nfrobnicate b\n"));
    assert_eq!((status, r["code"].as_i64()), (400, Some(251)), "{r}");
    assert!(r["msg"].as_str().unwrap_or("").contains("line 2"), "{r}");

    let rules = format!("{file}\nuser {bob}\ntopic read devices/#\n");
    let (status, r) = admin(&g, "PUT", Some(&rules));
    assert_eq!((status, r["code"].as_i64()), (200, Some(0)), "{r}");
    // Bob's `#` subscription, unchanged, now brings alice's telemetry.
    assert!(publish(&mut a, &t, "after", 1, false) < 0x80);
    assert_eq!(b.message(&t)["payload"], "after");
    let (_, r) = admin(&g, "GET", None);
    assert_eq!(r["result"]["source"], "api");
    assert_eq!(r["result"]["acl"].as_str(), Some(rules.as_str()));

    // Cleared: the file's rules again.
    let (status, r) = admin(&g, "DELETE", None);
    assert_eq!(
        (status, r["result"]["source"].as_str()),
        (200, Some("file")),
        "{r}"
    );
    assert!(publish(&mut a, &t, "cleared", 1, false) < 0x80);
    marker(&mut b, &format!("devices/{bob}/2"));
    assert_none_about(&mut b, &alice);
}

#[test]
fn a_bad_acl_file_stops_serve_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acl.conf");
    std::fs::write(
        &path,
        "# ok\npattern readwrite devices/%u/#\ntopic read a/#/b\n",
    )
    .unwrap();
    let mut cmd = Command::new(imgate_conformance::gateway::binary());
    cmd.arg("serve")
        .env_remove("IMGATE_CONFIG")
        .env("IMGATE_DATA_DIR", dir.path().join("data"))
        .env("IMGATE_STORE", "embedded")
        .env("IMGATE_MQTT_ACL_FILE", &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for listener in imgate_conformance::gateway::LISTENERS {
        cmd.env(format!("IMGATE_{listener}_ADDR"), "127.0.0.1:0");
    }
    let child = cmd.spawn().expect("starting imgate");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(WAIT) {
        Ok(out) => out.expect("imgate output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("imgate serve kept running with a bad ACL file");
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    assert!(
        stderr.contains("line 3") && stderr.contains("acl.conf"),
        "stderr: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
}

#[test]
fn serve_without_an_acl_warns_that_generic_topics_are_open() {
    const WARNING: &str = "generic topics outside im/ are open to every authenticated user";
    let open = Gateway::start();
    let log = open.log();
    assert!(log.contains("WARN") && log.contains(WARNING), "log: {log}");
    let closed = acl_gateway();
    let log = closed.log();
    assert!(!log.contains(WARNING), "log: {log}");
    assert!(log.contains("topic ACL in force"), "log: {log}");
}

#[test]
fn rabbit_an_acl_put_on_one_node_applies_on_the_other() {
    let Some(url) = amqp_url("rabbit_an_acl_put_on_one_node_applies_on_the_other") else {
        return;
    };
    let c = Cluster::start_with(&url, &[("IMGATE_MQTT_ACL_FILE", EXAMPLE)]);
    let (alice, bob) = (unique("alice"), unique("bob"));
    let mut a = connect(&c.a, &alice, &unique("a"), 5);
    let mut b = connect(&c.b, &bob, &unique("b"), 5);
    assert_eq!(b.subscribe("#", 1), vec![1]);
    // `ops` on node B may read it: once ops has it, node B routed it, to
    // bob too, under the file's rules.
    let mut ops = connect(&c.b, "ops", &unique("o"), 5);
    assert_eq!(ops.subscribe("devices/#", 1), vec![1]);
    let t = format!("devices/{alice}/t");
    // Alice on node A, bob on node B: not bob's to read.
    assert!(publish(&mut a, &t, "before", 1, false) < 0x80);
    assert_eq!(ops.message(&t)["payload"], "before");
    let file = std::fs::read_to_string(EXAMPLE).unwrap();
    let rules = format!("{file}\nuser {bob}\ntopic read devices/#\n");
    let (status, r) = admin_with(&c.a.admin_url(), &c.secret, "PUT", Some(&rules));
    assert_eq!((status, r["code"].as_i64()), (200, Some(0)), "{r}");
    // Node B follows through the store; wait until it reports the rules.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, r) = admin_with(&c.b.admin_url(), &c.secret, "GET", None);
        if r["result"]["source"] == "api" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node B never applied the ACL: {r}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(publish(&mut a, &t, "after", 1, false) < 0x80);
    let m = b.message(&t);
    assert_eq!(
        m["payload"], "after",
        "the message from before the PUT never came"
    );
}

/// The CONNACK code of an MQTT 5 CONNECT of `user` carrying a will to
/// `topic`.
fn connack_with_will(g: &Gateway, user: &str, topic: &str, retain: bool) -> u8 {
    let will = imgate_codecs::mqtt::LastWill {
        topic: topic.into(),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain,
        properties: Properties::default(),
    };
    raw_v5_connect(g, user, Some(will)).0
}

#[test]
fn a_will_outside_the_acl_is_refused_at_connect() {
    let g = acl_gateway();
    let bob = unique("bob");
    let alice = unique("alice");
    assert_eq!(
        i64::from(connack_with_will(
            &g,
            &bob,
            &format!("devices/{alice}/status"),
            false
        )),
        NOT_AUTHORIZED,
        "a will into another user's subtree"
    );
    assert_eq!(
        i64::from(connack_with_will(
            &g,
            &bob,
            &format!("devices/{alice}/status"),
            true
        )),
        NOT_AUTHORIZED,
        "a retained will into another user's subtree"
    );
    assert_eq!(
        connack_with_will(&g, &bob, &format!("devices/{bob}/status"), true),
        0,
        "a will into the user's own subtree"
    );
}
