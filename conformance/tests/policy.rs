//! The policy pipeline through several protocols (HTTP, PB, XMPP), against
//! the real binary: sensitive words (reject / drop / mask, traditional
//! Chinese folding, live changes, persistence, hit log), the review hook (forward never blocks; review
//! verdicts; fail-closed), user status, rate-limit overrides, the daily
//! quota, and connection admission.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use imgate_codecs::pb::PbServerMessage;
use imgate_codecs::xmpp::{ns, Element};
use imgate_conformance::fake_http::FakeHttp;
use imgate_conformance::xmpp::XmppRaw;
use imgate_conformance::{Gateway, PbClient, WAIT};
use serde_json::json;

const ANDROID: i32 = 2;

fn pb(g: &Gateway, user: &str, device: &str) -> PbClient {
    let token = g.admin().token(user, device, ANDROID);
    PbClient::login_ok(g.addr("pb"), user, &token, device, ANDROID)
}

fn add_words(g: &Gateway, words: &[&str]) {
    let r = g
        .admin()
        .post("/admin/sensitive/add", &json!({ "words": words }));
    assert_eq!(r.code(), 0, "{:?}", r.body);
}

#[test]
fn reject_is_242_on_http_and_pb_and_word_changes_apply_at_once() {
    let mut g = Gateway::start();
    let http = g.client("alice", "web");
    let mut alice = pb(&g, "alice", "phone");
    assert_eq!(
        http.send_text("bob", "a forbiddenword here", "h0").code(),
        0,
        "not listed yet"
    );
    add_words(&g, &["forbiddenword", "违禁词"]);
    // The very next message sees the new list: no restart.
    let r = http.send_text("bob", "a FORBIDDEN-word here", "h1");
    assert_eq!((r.status, r.code()), (403, 242));
    assert_eq!(alice.send_text("bob", "含有违 禁词的消息", "p1").code, 242);
    let q = g.admin().post("/admin/sensitive/query", &json!({}));
    assert_eq!(q.result()["words"], json!(["forbiddenword", "违禁词"]));
    let hits = g
        .admin()
        .post("/admin/sensitive/hits", &json!({"userId": "alice"}));
    let hits = hits.result()["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["words"], json!(["违禁词"]));
    assert_eq!(hits[0]["action"], "reject");
    // Only the message that passed is stored.
    assert_eq!(g.client("bob", "x").sync_all(0).len(), 1);
    // The list survives a restart, and deleting takes effect at once.
    g.restart();
    let http = g.client("alice", "web");
    assert_eq!(http.send_text("bob", "forbiddenword", "h2").code(), 242);
    let d = g
        .admin()
        .post("/admin/sensitive/del", &json!({"words": ["forbiddenword"]}));
    assert_eq!(d.result()["removed"], 1);
    assert_eq!(http.send_text("bob", "forbiddenword", "h3").code(), 0);
}

#[test]
fn mask_is_seen_masked_by_a_pb_recipient_and_drop_stores_nothing() {
    let g = Gateway::start_with(&[
        ("IMGATE_SENSITIVE_STRATEGY", "mask"),
        ("IMGATE_SENSITIVE_STRATEGY_BY_TYPE", "1=drop"),
    ]);
    add_words(&g, &["darn"]);
    let mut bob = pb(&g, "bob", "phone");
    let http = g.client("alice", "web");
    let r = http.post(
        "/v1/messages",
        &json!({"conv": {"type": 0, "target": "bob"}, "payload": {"type": 1, "searchableContent": "oh DARN it", "pushContent": "darn!"}}),
    );
    assert_eq!(r.code(), 0);
    let m = bob.next_deliver(WAIT).expect("masked delivery");
    let p = m.payload.unwrap();
    assert_eq!(p.searchable_content, "oh **** it");
    assert_eq!(p.push_content, "****!");
    // Group conversations drop: success for the sender, nothing delivered.
    g.admin().create_group("gdrop", "alice", &["bob"]);
    let r = http.post(
        "/v1/messages",
        &json!({"conv": {"type": 1, "target": "gdrop"}, "payload": {"type": 1, "searchableContent": "darn"}}),
    );
    assert_eq!(r.code(), 0);
    assert_eq!(r.result()["messageUid"], 0);
    let synced = g.client("bob", "x").sync_all(0);
    assert_eq!(synced.len(), 1, "the dropped message is not stored");
    let hits = g.admin().post("/admin/sensitive/hits", &json!({}));
    let actions: Vec<String> = hits.result()["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, vec!["drop", "mask"]);
}

fn xmpp(g: &Gateway, user: &str, device: &str) -> XmppRaw {
    let token = g.admin().token(user, device, 3);
    XmppRaw::login(g.addr("xmpp"), "localhost", user, &token).0
}

fn body_of(e: &Element) -> Option<String> {
    e.get_child("body", ns::CLIENT).map(Element::text_content)
}

/// A word listed in simplified Chinese matches the same word written in
/// traditional characters (and the other way round); the XMPP recipient
/// sees exactly the original characters masked, and an XMPP sender whose
/// message is rejected gets `<policy-violation/>` with code 242.
#[test]
fn traditional_chinese_is_folded_masked_for_xmpp_and_rejected_as_policy_violation() {
    let g = Gateway::start_with(&[
        ("IMGATE_SENSITIVE_STRATEGY", "mask"),
        ("IMGATE_SENSITIVE_STRATEGY_BY_TYPE", "1=reject"),
    ]);
    add_words(&g, &["敏感词", "發票"]);
    let mut bob = xmpp(&g, "bob", "pc");
    let http = g.client("alice", "web");
    assert_eq!(
        http.send_text("bob", "這是敏感詞嗎？开发票", "t1").code(),
        0
    );
    let m = bob
        .wait_for(|e| e.name == "message" && body_of(e).is_some(), WAIT)
        .expect("masked delivery");
    assert_eq!(body_of(&m).as_deref(), Some("這是***嗎？开**"));

    let mut alice = xmpp(&g, "alice", "pc");
    g.admin().create_group("tw-group", "alice", &["bob"]);
    alice.send("<message to='tw-group@groups.localhost' type='groupchat' id='g1'><body>敏 感 詞</body></message>");
    let err = alice
        .wait_for(
            |e| e.name == "message" && e.get_attr("type") == Some("error"),
            WAIT,
        )
        .expect("a stanza error");
    let error = err.get_child("error", ns::CLIENT).expect("<error/>");
    assert!(
        error
            .get_child("policy-violation", ns::STANZA_ERRORS)
            .is_some(),
        "{err:?}"
    );
    let text = error
        .get_child("text", ns::STANZA_ERRORS)
        .map(Element::text_content)
        .unwrap_or_default();
    assert!(text.starts_with("242"), "{text}");
}

#[test]
fn forward_never_blocks_senders_and_delivers_every_message() {
    // The review service accepts connections but answers nothing until
    // the gate opens: if forwarding were on the send path, sends would hang.
    let hook = FakeHttp::start(false, |_| (200, String::new()));
    let g = Gateway::start_with(&[
        ("IMGATE_REVIEW_URL", &hook.url),
        ("IMGATE_REVIEW_MODE", "forward"),
    ]);
    let http = g.client("alice", "web");
    let mut alice = pb(&g, "alice", "phone");
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = http.send_text("bob", &format!("h{i}"), &format!("h{i}"));
        assert_eq!(r.code(), 0);
        ids.push(r.result()["messageUid"].as_u64().unwrap());
        let p = alice.send_text("bob", &format!("p{i}"), &format!("p{i}"));
        assert_eq!(p.code, 0);
        ids.push(p.message_id);
    }
    // All 20 were acked while the review service had answered nothing.
    assert!(!hook.wait_for(1, WAIT).is_empty(), "forwarding started");
    hook.open_gate();
    let got = hook.wait_for(20, WAIT);
    let mut forwarded: Vec<u64> = got
        .iter()
        .map(|b| b["messageUid"].as_u64().unwrap())
        .collect();
    forwarded.sort();
    ids.sort();
    assert_eq!(forwarded, ids);
    assert_eq!(got[0]["sender"], "alice");
    assert!(got[0]["timestamp"].as_i64().unwrap() > 0);
    let metrics = g.admin().get_text("/metrics");
    assert!(
        metrics.contains("imgate_review_forward_total{outcome=\"delivered\"}"),
        "{metrics}"
    );
}

#[test]
fn review_verdicts_pass_replace_reject() {
    let hook = FakeHttp::start(true, |body| {
        let text = body["payload"]["searchableContent"].as_str().unwrap_or("");
        if text.contains("spam") {
            (403, "spam".into())
        } else if text.contains("rewrite") {
            (
                200,
                json!({"payload": {"type": 1, "searchableContent": "[edited]"}}).to_string(),
            )
        } else {
            (200, String::new())
        }
    });
    let g = Gateway::start_with(&[
        ("IMGATE_REVIEW_URL", &hook.url),
        ("IMGATE_REVIEW_MODE", "review"),
    ]);
    let http = g.client("alice", "web");
    let mut alice = pb(&g, "alice", "phone");
    let mut bob = pb(&g, "bob", "phone");
    assert_eq!(http.send_text("bob", "hello", "1").code(), 0);
    assert_eq!(
        bob.next_deliver(WAIT)
            .unwrap()
            .payload
            .unwrap()
            .searchable_content,
        "hello"
    );
    let r = http.send_text("bob", "buy spam", "2");
    assert_eq!((r.status, r.code()), (403, 242));
    assert_eq!(alice.send_text("bob", "more spam", "3").code, 242);
    assert_eq!(alice.send_text("bob", "please rewrite me", "4").code, 0);
    assert_eq!(
        bob.next_deliver(WAIT)
            .unwrap()
            .payload
            .unwrap()
            .searchable_content,
        "[edited]"
    );
}

#[test]
fn review_fail_closed_refuses_when_the_service_does_not_answer() {
    let hook = FakeHttp::start(false, |_| (200, String::new()));
    let g = Gateway::start_with(&[
        ("IMGATE_REVIEW_URL", &hook.url),
        ("IMGATE_REVIEW_MODE", "review"),
        ("IMGATE_REVIEW_FAIL_OPEN", "false"),
        ("IMGATE_REVIEW_TIMEOUT_MS", "300"),
    ]);
    let r = g.client("alice", "web").send_text("bob", "x", "1");
    assert_eq!(r.code(), 249);
    assert!(g.client("bob", "x").sync_all(0).is_empty());
    hook.open_gate();
}

#[test]
fn muted_and_forbidden_users_on_http_and_pb() {
    let g = Gateway::start();
    let admin = g.admin();
    let http = g.client("mallory", "web");
    let mut online = pb(&g, "mallory", "phone");
    assert_eq!(
        admin
            .post(
                "/admin/user/status",
                &json!({"userId": "mallory", "status": 1})
            )
            .code(),
        0
    );
    let r = http.send_text("bob", "hi", "1");
    assert_eq!((r.status, r.code()), (403, 8));
    assert_eq!(online.send_text("bob", "hi", "2").code, 8);
    assert!(online.heartbeat(), "muted users stay online");
    let f = admin.post(
        "/admin/user/status",
        &json!({"userId": "mallory", "status": 2}),
    );
    assert_eq!(f.result()["kicked"], 1);
    match online.recv(WAIT).expect("kick").msg {
        PbServerMessage::Kick(k) => assert_eq!(k.code, 245),
        other => panic!("expected Kick, got {other:?}"),
    }
    assert!(online.wait_closed(WAIT));
    let token = admin.token("mallory", "phone", ANDROID);
    let mut again = PbClient::connect(g.addr("pb"));
    assert_eq!(again.login("mallory", &token, "phone", ANDROID).code, 245);
    assert_eq!(http.get("/v1/sync").code(), 245);
    let got = admin.post("/admin/user/status/get", &json!({"userId": "mallory"}));
    assert_eq!(got.result()["status"], 2);
    assert_eq!(
        admin
            .post(
                "/admin/user/status",
                &json!({"userId": "mallory", "status": 0})
            )
            .code(),
        0
    );
    assert_eq!(http.send_text("bob", "back", "3").code(), 0);
    assert_eq!(
        admin
            .post(
                "/admin/user/status",
                &json!({"userId": "mallory", "status": 7})
            )
            .code(),
        251
    );
}

#[test]
fn per_user_rate_override_and_daily_quota() {
    let g = Gateway::start_with(&[
        ("IMGATE_RATE_LIMIT_MESSAGES", "2"),
        ("IMGATE_RATE_LIMIT_PER_SECS", "3600"),
        ("IMGATE_DAILY_QUOTA", "5"),
    ]);
    let http = g.client("alice", "web");
    let mut alice = pb(&g, "alice", "phone");
    assert_eq!(http.send_text("bob", "1", "1").code(), 0);
    assert_eq!(alice.send_text("bob", "2", "2").code, 0);
    assert_eq!(http.send_text("bob", "3", "3").code(), 250);
    assert_eq!(alice.send_text("bob", "3", "3p").code, 250);
    let o = g.admin().post(
        "/admin/user/rate_limit",
        &json!({"userId": "alice", "messages": 100, "perSecs": 1}),
    );
    assert_eq!(o.code(), 0);
    assert_eq!(
        http.send_text("bob", "4", "4").code(),
        0,
        "the override applies at once"
    );
    assert_eq!(alice.send_text("bob", "5", "5").code, 0);
    assert_eq!(http.send_text("bob", "6", "6").code(), 0);
    // 5 sent today: the quota is used up, on every protocol.
    let r = http.send_text("bob", "7", "7");
    assert_eq!((r.status, r.code()), (429, 250));
    assert!(r.retry_after.is_some());
    assert_eq!(alice.send_text("bob", "8", "8").code, 250);
    assert_eq!(g.client("carol", "x").send_text("bob", "c", "c").code(), 0);
    // The count is the store's: a restart does not hand out a new quota.
    drop(alice);
    let mut g = g;
    g.restart();
    let r = g.client("alice", "web").send_text("bob", "9", "9");
    assert_eq!((r.status, r.code()), (429, 250), "{:?}", r.body);
}

/// True if the server closes a fresh connection without a word.
fn refused(addr: &str) -> bool {
    let mut s = TcpStream::connect(addr).expect("tcp connect");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0))
}

#[test]
fn connection_admission_per_ip_rate_per_listener_caps_and_per_ip_open_cap() {
    let g = Gateway::start_with(&[("IMGATE_CONN_RATE_PER_IP", "1")]);
    // One new connection per second from one IP: a burst of 10 is mostly refused.
    let refused_count = (0..10).filter(|_| refused(g.addr("pb"))).count();
    assert!(refused_count >= 5, "only {refused_count} of 10 refused");

    let g = Gateway::start_with(&[("IMGATE_MAX_CONNECTIONS", "2")]);
    let a = pb(&g, "u1", "d");
    let _b = pb(&g, "u2", "d");
    assert!(refused(g.addr("pb")), "third connection refused");
    // Each listener has its own cap: half-sent HTTP requests fill the HTTP
    // listener (and only it) — PB is full, yet MQTT and XMPP still admit.
    let mut half_sent: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(g.addr("http")).expect("http connect");
            s.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .expect("half a request");
            s
        })
        .collect();
    assert!(refused(g.addr("http")), "the HTTP listener is full");
    assert!(
        !refused(g.addr("mqtt")),
        "MQTT admits while PB and HTTP are full"
    );
    assert!(
        !refused(g.addr("xmpp")),
        "XMPP admits while PB and HTTP are full"
    );
    half_sent.clear();
    drop(a);
    // Once the server has seen the close, a new connection is admitted.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let token = g.admin().token("u3", "d", ANDROID);
        let mut c = PbClient::connect(g.addr("pb"));
        let seq = c.request(imgate_codecs::pb::PbRequest::Login(
            imgate_codecs::pb::proto::LoginRequest {
                user_id: "u3".into(),
                token,
                client_id: "d".into(),
                platform: ANDROID,
            },
        ));
        let _ = seq;
        if c.recv(Duration::from_secs(2)).is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
    }

    // One IP holds at most IMGATE_MAX_CONNECTIONS_PER_IP open, over all
    // listeners.
    let g = Gateway::start_with(&[("IMGATE_MAX_CONNECTIONS_PER_IP", "2")]);
    let _a = pb(&g, "u1", "d");
    // (A round trip, so the server has admitted it before the next.)
    let mut x = XmppRaw::connect(g.addr("xmpp"));
    x.send(&imgate_conformance::xmpp::stream_header("localhost"));
    x.expect_features();
    assert!(
        refused(g.addr("mqtt")),
        "a third open connection from one IP"
    );
}

/// Reads until the server closes; false if it kept the connection open
/// for `WAIT`.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

#[test]
fn http_headers_bodies_and_idle_keepalives_have_deadlines_and_admin_keeps_no_per_ip_limits() {
    let g = Gateway::start_with(&[
        ("IMGATE_HTTP_HEADER_TIMEOUT_SECS", "1"),
        ("IMGATE_HTTP_BODY_TIMEOUT_SECS", "1"),
        ("IMGATE_MAX_CONNECTIONS_PER_IP", "2"),
    ]);
    // Headers that never end: the connection is closed.
    let mut slow = TcpStream::connect(g.addr("http")).expect("http connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    assert!(closed_by_server(&mut slow), "half-sent headers held open");

    // A body that never comes: 408 with code 249 (timeout), then closed.
    let mut s = TcpStream::connect(g.addr("http")).expect("http connect");
    s.write_all(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"to\":",
    )
    .unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "got {got:?}");
    assert!(got.contains("\"code\":249"), "got {got:?}");

    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(g.addr("http")).expect("http connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(closed_by_server(&mut idle), "idle keep-alive held open");

    // Two open connections from this IP fill its share: client listeners
    // refuse, the admin API still answers.
    let _a = pb(&g, "u1", "d");
    let mut x = XmppRaw::connect(g.addr("xmpp"));
    x.send(&imgate_conformance::xmpp::stream_header("localhost"));
    x.expect_features();
    assert!(refused(g.addr("http")), "a third connection from one IP");
    let token = g.admin().token("u2", "d", ANDROID);
    assert!(!token.is_empty());
}
