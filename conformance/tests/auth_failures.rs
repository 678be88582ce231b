//! Refused logins are counted by protocol and reason in `/metrics`
//! (`imgate_auth_failures_total`) and logged at info with the user and
//! the reason; logins and logouts are logged at info too.

use imgate_codecs::mqtt::{Connect, Packet, Properties, Version};
use imgate_conformance::mqtt::RawMqtt;
use imgate_conformance::{unique, Gateway};

fn failures(g: &Gateway, protocol: &str, code: i32) -> u64 {
    let text = g.admin().get_text("/metrics");
    let needle = format!("imgate_auth_failures_total{{protocol=\"{protocol}\",");
    text.lines()
        .filter(|l| l.starts_with(&needle) && l.contains(&format!("code=\"{code}\"}}")))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
        .unwrap_or_else(|| panic!("no {needle} code {code} line in:\n{text}"))
}

/// An MQTT 5 CONNECT of `user` with `password`: the CONNACK code (the
/// connection closes when this returns).
fn mqtt_login(g: &Gateway, user: &str, client_id: &str, password: &str) -> u8 {
    let mut raw = RawMqtt::connect(g.addr("mqtt"), Version::V5);
    raw.send(
        &Packet::Connect(Connect {
            version: Version::V5,
            client_id: client_id.into(),
            clean_start: true,
            keep_alive: 30,
            username: Some(user.into()),
            password: Some(password.to_string().into()),
            will: None,
            properties: Properties::default(),
        }),
        Version::V5,
    );
    match raw.recv() {
        Some(Packet::ConnAck(a)) => a.code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn refused_logins_are_counted_by_protocol_and_reason_and_logged() {
    let g = Gateway::start();
    let user = unique("victim");
    assert_eq!(failures(&g, "mqtt", 6), 0);
    assert_ne!(mqtt_login(&g, &user, "d", "not-a-token"), 0);
    assert_eq!(failures(&g, "mqtt", 6), 1, "a bad token: code 6");
    // Another user's valid token: 244.
    let other = g.admin().token(&unique("other"), "d", 2);
    assert_ne!(mqtt_login(&g, &user, "d", &other), 0);
    assert_eq!(failures(&g, "mqtt", 244), 1, "another user's token: 244");
    assert_eq!(failures(&g, "pb", 6), 0, "counted for its protocol only");
    // A good login is logged too.
    let token = g.admin().token(&user, "d", 2);
    assert_eq!(mqtt_login(&g, &user, "d", &token), 0);
    let log = g.log();
    assert!(
        log.contains("login refused") && log.contains(&user),
        "log: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains(" INFO ")
            && l.contains("login")
            && l.contains(&user)
            && !l.contains("refused")),
        "log: {log}"
    );
}

#[test]
fn http_bearer_tokens_go_through_the_same_login_and_are_counted() {
    let g = Gateway::start();
    assert_eq!(failures(&g, "http", 6), 0);
    let client = |token: &str| imgate_conformance::Client::new(&g.http_url(), token);
    let bad = client("not-a-token").get("/v1/sync?since=0");
    assert_eq!(bad.status, 401, "{bad:?}");
    assert_eq!(failures(&g, "http", 6), 1, "a bad bearer token: code 6");
    // A forbidden user's valid token is refused like on every protocol.
    let user = unique("http-forbidden");
    let token = g.admin().token(&user, "web", 2);
    assert_eq!(client(&token).get("/v1/sync?since=0").status, 200);
    let set = g.admin().post(
        "/admin/user/status",
        &serde_json::json!({"userId": user, "status": 2}),
    );
    assert_eq!(set.status, 200, "{set:?}");
    let refused = client(&token).get("/v1/sync?since=0");
    assert_ne!(refused.status, 200, "{refused:?}");
    assert_eq!(failures(&g, "http", 245), 1, "a forbidden user: 245");
}
