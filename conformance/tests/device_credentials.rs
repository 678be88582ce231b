//! Device credentials over real sockets (DESIGN §5.1, issue 11 rows 12
//! and 13): long-lived device secrets issued and revoked through the
//! signed admin API and the CLI, accepted by MQTT (password), PB
//! (`LoginRequest.token`) and XMPP (SASL PLAIN); tokens for any device of
//! a user (MQTT 5 Assigned Client Identifier); revoking every token of a
//! user; platform-less logins that never kick each other.

use std::time::Duration;

use imgate_codecs::mqtt::{ConnAck, Connect, Packet, Properties, Version};
use imgate_codecs::pb::PbServerMessage;
use imgate_codecs::xmpp::ns;
use imgate_conformance::mqtt::RawMqtt;
use imgate_conformance::xmpp::{auth_plain, stream_header, XmppRaw};
use imgate_conformance::{unique, Client, Gateway, PbClient, WAIT};
use serde_json::{json, Value};

const DOMAIN: &str = "localhost";

/// Issue a device secret through the admin API.
fn issue_secret(g: &Gateway, user: &str, device: &str) -> String {
    let r = g.admin().post(
        "/admin/device/secret/issue",
        &json!({"userId": user, "deviceId": device}),
    );
    assert_eq!(r.code(), 0, "issue failed: {}", r.body);
    assert_eq!(r.result()["deviceId"], device);
    r.result()["secret"].as_str().expect("secret").to_string()
}

fn revoke_secret(g: &Gateway, user: &str, device: &str) -> Value {
    let r = g.admin().post(
        "/admin/device/secret/revoke",
        &json!({"userId": user, "deviceId": device}),
    );
    assert_eq!(r.code(), 0, "revoke failed: {}", r.body);
    r.result().clone()
}

/// A token from `/admin/user/get_token` with only the fields given.
fn token_with(g: &Gateway, body: Value) -> String {
    let r = g.admin().post("/admin/user/get_token", &body);
    assert_eq!(r.code(), 0, "get_token failed: {}", r.body);
    r.result()["token"].as_str().expect("token").to_string()
}

/// MQTT CONNECT; the CONNACK and the socket.
fn mqtt_connect(
    g: &Gateway,
    v: Version,
    user: &str,
    password: &str,
    client_id: &str,
    clean_start: bool,
) -> (ConnAck, RawMqtt) {
    let mut raw = RawMqtt::connect(g.addr("mqtt"), v);
    raw.send(
        &Packet::Connect(Connect {
            version: v,
            client_id: client_id.into(),
            clean_start,
            keep_alive: 60,
            username: Some(user.into()),
            password: Some(password.to_owned().into()),
            will: None,
            properties: Properties::default(),
        }),
        v,
    );
    match raw.recv() {
        Some(Packet::ConnAck(a)) => (a, raw),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn mqtt_code(g: &Gateway, user: &str, password: &str, client_id: &str) -> u8 {
    mqtt_connect(g, Version::V5, user, password, client_id, true)
        .0
        .code
}

fn pb_code(g: &Gateway, user: &str, credential: &str, device: &str) -> i32 {
    PbClient::connect(g.addr("pb"))
        .login(user, credential, device, 0)
        .code
}

/// SASL PLAIN with `password`; the SASL answer's element name.
fn xmpp_sasl(g: &Gateway, user: &str, password: &str) -> String {
    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send(&stream_header(DOMAIN));
    c.expect_features();
    c.send(&auth_plain(user, password));
    let answer = c.next_element(WAIT).expect("SASL answer");
    assert_eq!(answer.ns, ns::SASL, "{}", answer.to_xml());
    answer.name.clone()
}

/// The connection was kicked with `code` (a Kick push, then closed).
fn expect_kick(c: &mut PbClient, code: i32) {
    let kick = c.recv(WAIT).expect("a kick notice");
    match kick.msg {
        PbServerMessage::Kick(k) => assert_eq!(k.code, code, "{k:?}"),
        other => panic!("expected a Kick, got {other:?}"),
    }
    assert!(c.wait_closed(WAIT), "closed after the kick");
}

/// Nothing the connection received so far is a kick, and it answers.
fn assert_not_kicked(c: &mut PbClient, who: &str) {
    assert!(c.heartbeat(), "{who} answers a heartbeat");
    while let Some(inc) = c.recv(Duration::ZERO) {
        assert!(
            !matches!(inc.msg, PbServerMessage::Kick(_)),
            "{who} was kicked: {:?}",
            inc.msg
        );
    }
    assert!(!c.is_closed(), "{who} is still connected");
}

#[test]
fn a_device_secret_logs_in_over_mqtt_pb_and_xmpp_for_its_device_only() {
    let g = Gateway::start();
    let user = unique("iot");
    let secret = issue_secret(&g, &user, "sensor1");
    let other = issue_secret(&g, &user, "sensor2");
    assert!(secret.starts_with("ds1_"));

    // MQTT: password = secret, client id = the device.
    assert_eq!(mqtt_code(&g, &user, &secret, "sensor1"), 0);
    // MQTT 5 with no client id: the secret names its device, which the
    // CONNACK assigns.
    let (ack, _m) = mqtt_connect(&g, Version::V5, &user, &secret, "", true);
    assert_eq!(ack.code, 0);
    assert_eq!(
        ack.properties.assigned_client_identifier().as_deref(),
        Some("sensor1")
    );
    // PB: LoginRequest.token = secret.
    assert_eq!(pb_code(&g, &user, &secret, "sensor1"), 0);
    // XMPP: SASL PLAIN password = secret; the resource is its device.
    let (_x, jid) = XmppRaw::login(g.addr("xmpp"), DOMAIN, &user, &secret);
    assert_eq!(jid, format!("{user}@{DOMAIN}/sensor1"));
    let (_y, jid2) = XmppRaw::login(g.addr("xmpp"), DOMAIN, &user, &other);
    assert_eq!(jid2, format!("{user}@{DOMAIN}/sensor2"));

    // A wrong secret, another device's, another user's: refused.
    let wrong = format!("{}x", &secret[..secret.len() - 1]);
    assert_eq!(mqtt_code(&g, &user, &wrong, "sensor1"), 0x86);
    assert_eq!(mqtt_code(&g, &user, &secret, "sensor2"), 0x86);
    assert_eq!(mqtt_code(&g, &unique("mallory"), &secret, "sensor1"), 0x86);
    assert_eq!(pb_code(&g, &user, &secret, "sensor2"), 244);
    assert_eq!(pb_code(&g, &user, &wrong, "sensor1"), 244);
    assert_eq!(xmpp_sasl(&g, &user, &wrong), "failure");
    assert_eq!(xmpp_sasl(&g, &unique("mallory"), &secret), "failure");

    // The list shows the devices, never the secrets.
    let r = g
        .admin()
        .post("/admin/device/secret/list", &json!({"userId": user}));
    assert_eq!(r.code(), 0);
    let devices: Vec<&str> = r.result()["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(devices, vec!["sensor1", "sensor2"]);
    assert!(!r.body.to_string().contains(&secret[4..]));
}

#[test]
fn a_revoked_secret_is_refused_at_once_and_its_live_session_kicked() {
    let g = Gateway::start();
    let user = unique("iot");
    let secret = issue_secret(&g, &user, "meter");
    let keep = issue_secret(&g, &user, "valve");
    let mut live = PbClient::login_ok(g.addr("pb"), &user, &secret, "meter", 0);
    let mut other = PbClient::login_ok(g.addr("pb"), &user, &keep, "valve", 0);

    let r = revoke_secret(&g, &user, "meter");
    assert_eq!(r["deviceId"], "meter");
    expect_kick(&mut live, 6);
    assert_eq!(pb_code(&g, &user, &secret, "meter"), 244);
    assert_eq!(mqtt_code(&g, &user, &secret, "meter"), 0x86);
    assert_eq!(xmpp_sasl(&g, &user, &secret), "failure");
    // The user's other device keeps its session and its secret.
    assert_not_kicked(&mut other, "valve");
    assert_eq!(mqtt_code(&g, &user, &keep, "valve"), 0);
    // Revoking again: nothing to revoke.
    let again = g.admin().post(
        "/admin/device/secret/revoke",
        &json!({"userId": user, "deviceId": "meter"}),
    );
    assert_eq!(again.code(), 253);
}

#[test]
fn device_secrets_and_revocations_survive_a_restart() {
    let mut g = Gateway::start();
    let user = unique("iot");
    let kept = issue_secret(&g, &user, "kept");
    let gone = issue_secret(&g, &user, "gone");
    revoke_secret(&g, &user, "gone");
    g.restart();
    assert_eq!(pb_code(&g, &user, &kept, "kept"), 0);
    assert_eq!(mqtt_code(&g, &user, &kept, "kept"), 0);
    assert_eq!(pb_code(&g, &user, &gone, "gone"), 244);
}

#[test]
fn an_any_device_token_logs_in_from_two_client_ids_at_once() {
    let g = Gateway::start();
    let user = unique("fleet");
    let peer = unique("peer");
    // No clientId, no platform: any device, in no kick class.
    let token = token_with(&g, json!({"userId": user}));
    let star = token_with(&g, json!({"userId": user, "clientId": "*"}));
    let mut a = PbClient::login_ok(g.addr("pb"), &user, &token, "dev-a", 0);
    let mut b = PbClient::login_ok(g.addr("pb"), &user, &token, "dev-b", 0);
    let mut c = PbClient::login_ok(g.addr("pb"), &user, &star, "dev-c", 0);
    // A real exchange after all connected: a's message reaches the other
    // devices of the user (multi-device sync), so each is a device of its own.
    let sent = a.send_text(&peer, "from a", "m1");
    assert_eq!(sent.code, 0);
    for (dev, name) in [(&mut b, "dev-b"), (&mut c, "dev-c")] {
        let m = dev
            .next_deliver(WAIT)
            .expect("the user's other device gets the copy");
        assert_eq!(m.message_id, sent.message_id, "{name}");
        assert_not_kicked(dev, name);
    }
    assert_not_kicked(&mut a, "dev-a");
    // The same token over MQTT with a client id of the device's choosing.
    assert_eq!(mqtt_code(&g, &user, &token, "mqtt-dev"), 0);
    // A bound token still refuses another device.
    let bound = g.admin().token(&user, "phone", 2);
    assert_eq!(pb_code(&g, &user, &bound, "tablet"), 244);
    // PB cannot be told an assigned id: an empty client id is refused.
    assert_eq!(pb_code(&g, &user, &token, ""), 251);
}

#[test]
fn mqtt5_empty_client_id_with_an_any_device_token_gets_an_assigned_identifier() {
    let g = Gateway::start();
    let user = unique("fleet");
    let token = token_with(&g, json!({"userId": user}));
    let (ack1, _c1) = mqtt_connect(&g, Version::V5, &user, &token, "", true);
    let (ack2, _c2) = mqtt_connect(&g, Version::V5, &user, &token, "", true);
    assert_eq!((ack1.code, ack2.code), (0, 0));
    let id1 = ack1
        .properties
        .assigned_client_identifier()
        .expect("an Assigned Client Identifier (0x12)")
        .to_string();
    let id2 = ack2
        .properties
        .assigned_client_identifier()
        .expect("an Assigned Client Identifier (0x12)")
        .to_string();
    assert!(id1.starts_with("auto-") && id1.len() > 10, "{id1}");
    assert_ne!(id1, id2, "each connection gets its own");
    // A client id that cannot be a device id: 0x85 / 0x02.
    assert_eq!(mqtt_code(&g, &user, &token, "*"), 0x85);
    // MQTT 3.1.1: an empty id needs clean session (§3.1.3.1); with it, the
    // gateway assigns one.
    let (v4_dirty, _) = mqtt_connect(&g, Version::V4, &user, &token, "", false);
    assert_eq!(v4_dirty.code, 0x02);
    let (v4_clean, _) = mqtt_connect(&g, Version::V4, &user, &token, "", true);
    assert_eq!(v4_clean.code, 0);
}

#[test]
fn revoking_all_tokens_refuses_old_ones_and_accepts_new_ones() {
    let g = Gateway::start();
    let user = unique("lost-phone");
    let old = g.admin().token(&user, "phone", 2);
    let old_any = token_with(&g, json!({"userId": user}));
    let secret = issue_secret(&g, &user, "sensor");
    let mut live = PbClient::login_ok(g.addr("pb"), &user, &old, "phone", 2);

    let r = g
        .admin()
        .post("/admin/user/revoke_tokens", &json!({"userId": user}));
    assert_eq!(r.code(), 0, "{}", r.body);
    assert!(r.result()["revokedBefore"].as_i64().unwrap_or(0) > 0);
    expect_kick(&mut live, 6);

    assert_eq!(pb_code(&g, &user, &old, "phone"), 6);
    assert_eq!(pb_code(&g, &user, &old_any, "x"), 6);
    assert_eq!(mqtt_code(&g, &user, &old, "phone"), 0x86);
    assert_eq!(xmpp_sasl(&g, &user, &old), "failure");
    let http = Client::new(&g.http_url(), &old).get("/v1/sync?since=0");
    assert_eq!(http.code(), 6, "{}", http.body);
    // Other users' tokens are untouched.
    let bystander = unique("bystander");
    let theirs = g.admin().token(&bystander, "phone", 2);
    assert_eq!(pb_code(&g, &bystander, &theirs, "phone"), 0);
    // A token issued after the revocation works; so does the device secret.
    let new = g.admin().token(&user, "phone", 2);
    assert_eq!(pb_code(&g, &user, &new, "phone"), 0);
    assert_eq!(pb_code(&g, &user, &secret, "sensor"), 0);
}

#[test]
fn two_devices_with_platform_less_tokens_never_kick_each_other() {
    let g = Gateway::start();
    let user = unique("bots");
    let peer = unique("peer");
    // get_token with no platform, bound to each device.
    let t1 = token_with(&g, json!({"userId": user, "clientId": "bot1"}));
    let t2 = token_with(&g, json!({"userId": user, "clientId": "bot2"}));
    let mut bot1 = PbClient::login_ok(g.addr("pb"), &user, &t1, "bot1", 0);
    let mut bot2 = PbClient::login_ok(g.addr("pb"), &user, &t2, "bot2", 0);
    // Both auto-reconnect: each new login replaces only its own device.
    let mut bot1b = PbClient::login_ok(g.addr("pb"), &user, &t1, "bot1", 0);
    expect_kick(&mut bot1, 7);
    let mut bot2b = PbClient::login_ok(g.addr("pb"), &user, &t2, "bot2", 0);
    expect_kick(&mut bot2, 7);
    // After both connected, they exchange a message each way (through the
    // user's multi-device copy): neither was kicked by the other.
    let s1 = bot1b.send_text(&peer, "from bot1", "b1");
    assert_eq!(s1.code, 0);
    let got = bot2b.next_deliver(WAIT).expect("bot2 gets bot1's copy");
    assert_eq!(got.message_id, s1.message_id);
    let s2 = bot2b.send_text(&peer, "from bot2", "b2");
    assert_eq!(s2.code, 0);
    let got = bot1b.next_deliver(WAIT).expect("bot1 gets bot2's copy");
    assert_eq!(got.message_id, s2.message_id);
    assert_not_kicked(&mut bot1b, "bot1");
    assert_not_kicked(&mut bot2b, "bot2");
    // A token that asks for a class still follows the rule.
    let pc1 = g.admin().token(&user, "pc1", 3);
    let pc2 = g.admin().token(&user, "pc2", 3);
    let mut first = PbClient::login_ok(g.addr("pb"), &user, &pc1, "pc1", 3);
    let _second = PbClient::login_ok(g.addr("pb"), &user, &pc2, "pc2", 3);
    expect_kick(&mut first, 7);
    assert_not_kicked(&mut bot1b, "bot1");
}

#[test]
fn the_cli_issues_lists_and_revokes_device_secrets_and_tokens() {
    let g = Gateway::start();
    let user = unique("cli-iot");
    let secret = g
        .admin_cli(&["device-secret", "issue", "--user", &user, "--device", "d1"])
        .trim()
        .to_string();
    assert_eq!(mqtt_code(&g, &user, &secret, "d1"), 0);
    let list: Value =
        serde_json::from_str(&g.admin_cli(&["device-secret", "list", "--user", &user]))
            .expect("JSON list");
    assert_eq!(list["devices"][0]["deviceId"], "d1");
    g.admin_cli(&["device-secret", "revoke", "--user", &user, "--device", "d1"]);
    assert_eq!(mqtt_code(&g, &user, &secret, "d1"), 0x86);

    // get-token without a device: any device of the user.
    let token = g.admin_cli(&["get-token", &user]).trim().to_string();
    assert_eq!(pb_code(&g, &user, &token, "one"), 0);
    assert_eq!(pb_code(&g, &user, &token, "two"), 0);
    g.admin_cli(&["revoke-tokens", "--user", &user]);
    assert_eq!(pb_code(&g, &user, &token, "one"), 6);
}

/// On the RabbitMQ store, a secret issued on node A logs in on node B; its
/// revocation on A kicks B's live session and is refused on B; a token
/// revocation on A is refused on B. Needs `IMGATE_TEST_AMQP`.
#[test]
fn device_credentials_reach_every_node_on_rabbitmq() {
    use imgate_conformance::rabbit_support::{amqp_url, eventually, try_pb_login, Cluster};
    let Some(url) = amqp_url("device_credentials_reach_every_node_on_rabbitmq") else {
        return;
    };
    let c = Cluster::start(&url);
    let user = unique("mn-iot");
    let secret = issue_secret(&c.a, &user, "pump");
    let mut on_b = None;
    eventually("node B accepts the secret issued on A", WAIT, || {
        on_b = try_pb_login(c.b.addr("pb"), &user, &secret, "pump", 0).ok();
        on_b.is_some()
    });
    let mut on_b = on_b.expect("logged in on node B");
    revoke_secret(&c.a, &user, "pump");
    expect_kick(&mut on_b, 6);
    assert_eq!(pb_code(&c.b, &user, &secret, "pump"), 244);

    let old = c.a.admin().token(&user, "phone", 2);
    assert_eq!(pb_code(&c.b, &user, &old, "phone"), 0);
    let r =
        c.a.admin()
            .post("/admin/user/revoke_tokens", &json!({"userId": user}));
    assert_eq!(r.code(), 0);
    eventually("node B refuses the revoked token", WAIT, || {
        pb_code(&c.b, &user, &old, "phone") == 6
    });
}
