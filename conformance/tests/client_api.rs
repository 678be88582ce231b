//! The client HTTP API: bearer tokens, send, sync, idempotent resends,
//! groups, SSE, bad input — against the real binary over real HTTP.

use std::time::Duration;

use imgate_conformance::{unique, Client, Gateway, SseReader, WAIT};
use serde_json::{json, Value};

#[test]
fn bad_or_missing_bearer_token_is_401_code_6() {
    let g = Gateway::start();
    let nobody = Client::new(&g.http_url(), "not-a-token");
    let r = nobody.get("/v1/sync?since=0");
    assert_eq!((r.status, r.code()), (401, 6));
    let r = nobody.send_text("bob", "hi", "1");
    assert_eq!((r.status, r.code()), (401, 6));
    // A token signed by another gateway's secret is refused too.
    let other = Gateway::start();
    let foreign = other.admin().token("alice", "phone", 2);
    let r = Client::new(&g.http_url(), &foreign).get("/v1/sync");
    assert_eq!(r.code(), 6);
    // Tokens expire.
    let short = Gateway::start_with(&[("IMGATE_TOKEN_TTL_SECS", "0")]);
    let r = short.client("alice", "phone").get("/v1/sync");
    assert_eq!(r.code(), 6);
}

#[test]
fn send_then_sync_with_every_payload_field() {
    let g = Gateway::start();
    let alice = g.client("alice", "phone");
    let bob = g.client("bob", "laptop");
    let payload = json!({
        "type": 3, "searchableContent": "a picture", "pushContent": "push", "content": "c",
        "base64edData": "AAECAwQ=", "mediaType": 2, "remoteMediaUrl": "https://example.invalid/p.png",
        "persistFlag": 3, "expireDuration": 60, "mentionedType": 1, "mentionedTarget": ["bob"],
        "extra": "{\"k\":1}", "pushData": "pd"
    });
    let r = alice.post(
        "/v1/messages",
        &json!({"conv": {"type": 0, "target": "bob", "line": 0}, "payload": payload, "clientMsgId": "c-1"}),
    );
    assert_eq!((r.status, r.code()), (200, 0), "{:?}", r.body);
    let uid = r.result()["messageUid"].as_u64().unwrap();
    assert_eq!(r.result()["messageUidStr"], uid.to_string());
    assert!(r.result()["timestamp"].as_i64().unwrap() > 1_700_000_000_000);

    let msgs = bob.sync_all(0);
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m["messageUid"].as_u64(), Some(uid));
    assert_eq!(m["messageUidStr"], uid.to_string());
    assert_eq!(m["sender"], "alice");
    assert_eq!(m["conv"], json!({"type": 0, "target": "bob", "line": 0}));
    assert_eq!(m["payload"], payload);
    assert_eq!(m["clientMsgId"], "c-1");
    // The sender's other devices see it too (multi-device sync).
    assert_eq!(g.client("alice", "tablet").sync_all(0).len(), 1);
    // Nobody else does.
    assert!(g.client("carol", "phone").sync_all(0).is_empty());
}

#[test]
fn resend_with_same_client_msg_id_is_idempotent() {
    let g = Gateway::start();
    let alice = g.client("alice", "phone");
    let a = alice.send_text("bob", "once", "same-id");
    let b = alice.send_text("bob", "once", "same-id");
    assert_eq!(a.code(), 0);
    assert_eq!(b.code(), 0);
    assert_eq!(a.result()["messageUid"], b.result()["messageUid"]);
    assert_eq!(a.result()["timestamp"], b.result()["timestamp"]);
    assert_eq!(b.result()["duplicate"], true);
    assert_eq!(g.client("bob", "x").sync_all(0).len(), 1);
    // Another sender may use the same client id.
    let c = g
        .client("carol", "phone")
        .send_text("bob", "other", "same-id");
    assert_ne!(c.result()["messageUid"], a.result()["messageUid"]);
}

#[test]
fn sync_is_ordered_and_paged() {
    let g = Gateway::start();
    let alice = g.client("alice", "phone");
    let mut sent = Vec::new();
    for i in 0..30 {
        let r = alice.send_text("bob", &format!("m{i}"), &format!("k{i}"));
        sent.push(r.result()["messageUid"].as_u64().unwrap());
    }
    let bob = g.client("bob", "phone");
    let first = bob.get("/v1/sync?since=0&limit=7");
    assert_eq!(first.result()["messages"].as_array().unwrap().len(), 7);
    assert_eq!(first.result()["hasMore"], true);
    let all: Vec<u64> = bob
        .sync_all(0)
        .iter()
        .map(|m| m["messageUid"].as_u64().unwrap())
        .collect();
    assert_eq!(all, sent, "sync returns every message in send order");
    let texts: Vec<String> = bob
        .sync_all(sent[9])
        .iter()
        .map(|m| {
            m["payload"]["searchableContent"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts.first().map(String::as_str), Some("m10"));
    assert_eq!(texts.len(), 20);
    let bad = bob.get("/v1/sync?since=abc");
    assert_eq!((bad.status, bad.code()), (400, 251));
    // History of the conversation, newest first.
    let h = bob.get("/v1/history?type=0&target=alice&limit=5");
    let ids: Vec<u64> = h.result()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["messageUid"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, sent.iter().rev().take(5).copied().collect::<Vec<_>>());
}

#[test]
fn group_send_by_member_and_non_member() {
    let g = Gateway::start();
    let gid = unique("grp");
    g.admin().create_group(&gid, "alice", &["bob", "carol"]);
    let alice = g.client("alice", "phone");
    let send = |c: &Client, to_users: Value| {
        c.post(
            "/v1/messages",
            &json!({"conv": {"type": 1, "target": gid, "line": 0}, "payload": {"type": 1, "searchableContent": "hi all"}, "toUsers": to_users}),
        )
    };
    assert_eq!(send(&alice, json!([])).code(), 0);
    for u in ["bob", "carol"] {
        let msgs = g.client(u, "phone").sync_all(0);
        assert_eq!(msgs.len(), 1, "{u} gets the group message");
        assert_eq!(msgs[0]["conv"]["target"], gid.as_str());
    }
    let mallory = g.client("mallory", "phone");
    let r = send(&mallory, json!([]));
    assert_eq!((r.status, r.code()), (403, 9));
    assert!(mallory.sync_all(0).is_empty());
    // toUsers narrows delivery to those members.
    assert_eq!(send(&alice, json!(["bob"])).code(), 0);
    assert_eq!(g.client("bob", "phone").sync_all(0).len(), 2);
    assert_eq!(g.client("carol", "phone").sync_all(0).len(), 1);
    // Unknown group.
    let r = alice.post(
        "/v1/messages",
        &json!({"conv": {"type": 1, "target": "no-such-group"}, "payload": {"type": 1, "searchableContent": "x"}}),
    );
    assert_eq!(r.code(), 253);
}

#[test]
fn bad_input_gets_json_errors() {
    let g = Gateway::start_with(&[("IMGATE_MAX_BODY_BYTES", "4096")]);
    let alice = g.client("alice", "phone");
    let r = alice.post_raw("/v1/messages", "{\"conv\": ");
    assert_eq!((r.status, r.code()), (400, 2));
    let r = alice.post_raw("/v1/messages", "[1,2,3]");
    assert_eq!((r.status, r.code()), (400, 2));
    let big = format!(
        "{{\"conv\":{{\"type\":0,\"target\":\"bob\"}},\"payload\":{{\"type\":1,\"searchableContent\":\"{}\"}}}}",
        "x".repeat(10_000)
    );
    let r = alice.post_raw("/v1/messages", &big);
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), 2);
    let r = alice.post(
        "/v1/messages",
        &json!({"conv": {"type": 42, "target": "bob"}, "payload": {"type": 1}}),
    );
    assert_eq!((r.status, r.code()), (400, 251));
    let r = alice.post(
        "/v1/messages",
        &json!({"conv": {"type": 0, "target": ""}, "payload": {"type": 1}}),
    );
    assert_eq!((r.status, r.code()), (400, 251));
    let r = alice.post(
        "/v1/messages",
        &json!({"conv": {"type": 0, "target": "bob"}, "payload": {"base64edData": "%%%"}}),
    );
    assert_eq!((r.status, r.code()), (400, 2));
    // Still serving after all that.
    assert_eq!(alice.send_text("bob", "still here", "ok").code(), 0);
}

#[test]
fn rate_limit_is_429_with_retry_after() {
    let g = Gateway::start_with(&[
        ("IMGATE_RATE_LIMIT_MESSAGES", "3"),
        ("IMGATE_RATE_LIMIT_PER_SECS", "3600"),
    ]);
    let alice = g.client("alice", "phone");
    for i in 0..3 {
        assert_eq!(alice.send_text("bob", "x", &format!("r{i}")).code(), 0);
    }
    let r = alice.send_text("bob", "x", "r3");
    assert_eq!((r.status, r.code()), (429, 250));
    assert!(r
        .retry_after
        .as_deref()
        .is_some_and(|v| v.parse::<u64>().unwrap() >= 1));
    // Another user is not affected.
    assert_eq!(
        g.client("carol", "phone")
            .send_text("bob", "x", "c1")
            .code(),
        0
    );
}

#[test]
fn sse_delivers_live_and_resumes_with_last_event_id() {
    let g = Gateway::start();
    let alice = g.client("alice", "phone");
    let bob = g.client("bob", "web");
    let mut events = SseReader::open(&g.http_url(), &bob.token, None, Duration::from_millis(200));
    let sent = alice.send_text("bob", "live one", "s1");
    let uid = sent.result()["messageUid"].as_u64().unwrap();
    let ev = events.next_event(WAIT).expect("a live event");
    assert_eq!(ev.id.as_deref(), Some(uid.to_string().as_str()));
    let m: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(m["messageUid"].as_u64(), Some(uid));
    assert_eq!(m["payload"]["searchableContent"], "live one");
    drop(events);

    // While bob is away two more arrive; resuming from the last id gets both, in order.
    let a = alice.send_text("bob", "missed 1", "s2").result()["messageUid"]
        .as_u64()
        .unwrap();
    let b = alice.send_text("bob", "missed 2", "s3").result()["messageUid"]
        .as_u64()
        .unwrap();
    let mut resumed = SseReader::open(
        &g.http_url(),
        &bob.token,
        Some(&uid.to_string()),
        Duration::from_millis(200),
    );
    let e1 = resumed.next_event(WAIT).expect("first missed");
    let e2 = resumed.next_event(WAIT).expect("second missed");
    assert_eq!(e1.id, Some(a.to_string()));
    assert_eq!(e2.id, Some(b.to_string()));
    // And live ones after the replay.
    let c = alice.send_text("bob", "after", "s4").result()["messageUid"]
        .as_u64()
        .unwrap();
    assert_eq!(
        resumed.next_event(WAIT).expect("live after replay").id,
        Some(c.to_string())
    );
    // Alice's stream does not see bob's other conversations.
    let mut alice_events = SseReader::open(
        &g.http_url(),
        &alice.token,
        None,
        Duration::from_millis(200),
    );
    g.client("carol", "x")
        .send_text("bob", "private to bob", "p1");
    let d = alice.send_text("bob", "mine", "s5").result()["messageUid"]
        .as_u64()
        .unwrap();
    assert_eq!(
        alice_events.next_event(WAIT).expect("own message").id,
        Some(d.to_string())
    );
}

#[test]
fn unknown_paths_wrong_methods_and_bad_queries_are_json_with_a_code() {
    let g = Gateway::start();
    let c = g.client(&unique("q-user"), "phone");
    // Unknown path: 404 with NotExist (253), on both listeners.
    let r = c.get("/v1/no-such-thing");
    assert_eq!((r.status, r.code()), (404, 253), "{:?}", r.body);
    let r = g.admin().post("/admin/no/such/thing", &json!({}));
    assert_eq!((r.status, r.code()), (404, 253), "{:?}", r.body);
    // Known path, wrong method: 405 with InvalidParameter (251).
    let r = c.get("/v1/messages");
    assert_eq!((r.status, r.code()), (405, 251), "{:?}", r.body);
    // Query strings that do not parse: 400 with 251 and a message.
    for path in [
        "/v1/sync?since=0&limit=lots",
        "/v1/history?type=x&target=bob",
        "/v1/history",
    ] {
        let r = c.get(path);
        assert_eq!((r.status, r.code()), (400, 251), "{path}: {:?}", r.body);
        assert!(
            r.body["msg"].as_str().is_some_and(|m| m.contains("query")),
            "{path}: {:?}",
            r.body
        );
    }
}
