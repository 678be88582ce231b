//! Message semantics (`docs/messages.md`) over real sockets: persist flags
//! 0 and 4 reach online devices of every protocol and nothing else (no
//! sync, history, MAM, offline delivery, unread count), an expired message
//! is gone everywhere, the retention prunes history, and conversations
//! (last message, unread count, read position) are the same over HTTP and
//! PB. Runs on the store `IMGATE_CONFORMANCE_STORE` names.

use std::time::{Duration, Instant};

use imgate_codecs::pb::{proto, PbRequest, PbServerMessage};
use imgate_conformance::mqtt::MqttAgent;
use imgate_conformance::xmpp::{run_script, XmppScript};
use imgate_conformance::{unique, Client, Gateway, PbClient, WAIT};
use serde_json::{json, Value};

const DOMAIN: &str = "localhost";

/// HTTP send of a private text with a persist flag and expiry; its id.
fn send(c: &Client, to: &str, text: &str, flag: i32, expire: i32) -> u64 {
    let r = c.post(
        "/v1/messages",
        &json!({
            "conv": {"type": 0, "target": to, "line": 0},
            "payload": {"type": 1, "searchableContent": text, "persistFlag": flag,
                        "expireDuration": expire},
            "clientMsgId": unique("c"),
        }),
    );
    assert_eq!((r.status, r.code()), (200, 0), "{:?}", r.body);
    r.result()["messageUid"]
        .as_u64()
        .expect("an id even when live only")
}

fn texts(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| {
            m["payload"]["searchableContent"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn history(c: &Client, peer: &str) -> Vec<String> {
    let r = c.get(&format!("/v1/history?type=0&target={peer}&limit=50"));
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let mut t = texts(r.result()["messages"].as_array().expect("messages"));
    t.reverse();
    t
}

fn mam(g: &Gateway, user: &str, peer: &str) -> Vec<String> {
    let token = g.admin().token(user, "mam", 3);
    let out = run_script(
        g,
        "xmpp_mam.py",
        &[user, &token, &format!("{peer}@{DOMAIN}"), "50"],
    );
    assert_eq!(out["complete"], true, "{out}");
    out["pages"][0]
        .as_array()
        .expect("a page")
        .iter()
        .map(|b| b.as_str().unwrap_or("").to_string())
        .collect()
}

fn pb_login(g: &Gateway, user: &str, device: &str) -> PbClient {
    let token = g.admin().token(user, device, 2);
    PbClient::login_ok(g.addr("pb"), user, &token, device, 2)
}

fn pb_send(c: &mut PbClient, to: &str, text: &str, flag: i32) -> u64 {
    let r = c.send(proto::SendRequest {
        client_msg_id: unique("p"),
        conversation: Some(proto::Conversation {
            r#type: 0,
            target: to.into(),
            line: 0,
        }),
        payload: Some(proto::MessagePayload {
            r#type: 1,
            searchable_content: text.into(),
            persist_flag: flag,
            ..Default::default()
        }),
        to_users: vec![],
    });
    assert_eq!(r.code, 0);
    r.message_id
}

fn pb_text(c: &mut PbClient) -> String {
    let m = c.next_deliver(WAIT).expect("a delivery");
    c.ack(m.message_id);
    m.payload.map(|p| p.searchable_content).unwrap_or_default()
}

#[test]
fn live_only_messages_reach_online_devices_of_every_protocol_and_are_never_stored() {
    // Several devices of one platform class online at once.
    let g = Gateway::start_with(&[("IMGATE_MULTI_ENDPOINT", "true")]);
    let (alice, bob) = (unique("ls-alice"), unique("ls-bob"));
    let http_alice = g.client(&alice, "web");
    let http_bob = g.client(&bob, "web");
    // bob's tablet registers and goes offline: it must get only stored ones.
    drop(pb_login(&g, &bob, "tablet"));
    // bob online over PB, MQTT and XMPP.
    let mut pb_bob = pb_login(&g, &bob, "phone");
    let mut mq_bob = MqttAgent::start(g.addr("mqtt"));
    let token = g.admin().token(&bob, "mq", 1);
    let ack = mq_bob.connect(json!({"version": 5, "client_id": "mq", "user": bob, "token": token}));
    assert_eq!(ack["rc"], 0, "{ack}");
    assert_eq!(mq_bob.subscribe(&format!("im/inbox/{bob}"), 1), vec![1]);
    let xt = g.admin().token(&bob, "pc", 3);
    let mut xmpp_bob = XmppScript::spawn(&g, DOMAIN, "xmpp_recv.py", &[&bob, &xt, "5"]);
    assert_eq!(xmpp_bob.next_line()["event"], "ready");
    // alice sends from HTTP, PB and MQTT: two stored, three live only.
    send(&http_alice, &bob, "stored-1", 1, 0);
    send(&http_alice, &bob, "live-0", 0, 0);
    let mut pb_alice = pb_login(&g, &alice, "phone");
    pb_send(&mut pb_alice, &bob, "live-4", 4);
    let mut mq_alice = MqttAgent::start(g.addr("mqtt"));
    let at = g.admin().token(&alice, "amq", 1);
    let ack =
        mq_alice.connect(json!({"version": 5, "client_id": "amq", "user": alice, "token": at}));
    assert_eq!(ack["rc"], 0, "{ack}");
    let body = json!({"conv": {"type": 0, "target": bob, "line": 0},
        "payload": {"type": 1, "searchableContent": "live-mqtt", "persistFlag": 0},
        "clientMsgId": "mq-1"});
    let rc = mq_alice.publish(json!({"topic": "im/send", "qos": 1, "payload": body.to_string()}));
    assert_eq!(rc, 0, "live-only sends are acked");
    send(&http_alice, &bob, "stored-3", 3, 0);
    let all = ["stored-1", "live-0", "live-4", "live-mqtt", "stored-3"];
    // Every online device gets all five, in order.
    let got: Vec<String> = (0..5).map(|_| pb_text(&mut pb_bob)).collect();
    assert_eq!(got, all, "PB");
    let got: Vec<String> = (0..5)
        .map(|_| {
            let m = mq_bob.message(&format!("im/inbox/{bob}"));
            let v: Value = serde_json::from_str(m["payload"].as_str().unwrap_or("")).unwrap();
            v["payload"]["searchableContent"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(got, all, "MQTT");
    let out = xmpp_bob.finish();
    let got: Vec<&str> = out["received"]
        .as_array()
        .expect("received")
        .iter()
        .map(|r| r["body"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(got, all, "XMPP");
    // Nothing live only is kept: sync (HTTP, PB), history, MAM.
    let stored = ["stored-1", "stored-3"];
    assert_eq!(texts(&http_bob.sync_all(0)), stored);
    assert_eq!(
        texts(&http_alice.sync_all(0)),
        stored,
        "the sender's sync too"
    );
    let synced: Vec<String> = pb_bob
        .sync(0, 50)
        .messages
        .into_iter()
        .map(|m| m.payload.unwrap_or_default().searchable_content)
        .collect();
    assert_eq!(synced, stored);
    assert_eq!(history(&http_bob, &alice), stored);
    assert_eq!(mam(&g, &bob, &alice), stored);
    // The offline tablet gets the stored ones only.
    let mut tablet = pb_login(&g, &bob, "tablet");
    assert_eq!(pb_text(&mut tablet), "stored-1");
    assert_eq!(pb_text(&mut tablet), "stored-3");
    send(&http_alice, &bob, "marker", 1, 0);
    assert_eq!(pb_text(&mut tablet), "marker", "nothing else was pending");
    // Only persist flag 3 counts as unread.
    let r = http_bob.get("/v1/conversations");
    assert_eq!(r.result()["conversations"][0]["unread"], 1, "{:?}", r.body);
}

#[test]
fn an_expired_message_is_not_delivered_synced_or_archived() {
    let g = Gateway::start();
    let (alice, bob) = (unique("ex-alice"), unique("ex-bob"));
    let http_alice = g.client(&alice, "web");
    let http_bob = g.client(&bob, "web");
    drop(pb_login(&g, &bob, "tablet"));
    send(&http_alice, &bob, "short", 3, 1);
    send(&http_alice, &bob, "long", 3, 3600);
    assert_eq!(texts(&http_bob.sync_all(0)), ["short", "long"]);
    // Bounded wait for the second to pass on the server's clock.
    let deadline = Instant::now() + WAIT;
    while texts(&http_bob.sync_all(0)) != ["long"] {
        assert!(Instant::now() < deadline, "the short one never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(history(&http_bob, &alice), ["long"]);
    assert_eq!(mam(&g, &bob, &alice), ["long"]);
    let mut tablet = pb_login(&g, &bob, "tablet");
    assert_eq!(pb_text(&mut tablet), "long", "the expired one is skipped");
    let synced: Vec<String> = tablet
        .sync(0, 50)
        .messages
        .into_iter()
        .map(|m| m.payload.unwrap_or_default().searchable_content)
        .collect();
    assert_eq!(synced, ["long"]);
}

#[test]
fn the_retention_prunes_history_older_than_its_days() {
    let g = Gateway::start_with(&[
        ("IMGATE_RETENTION_DAYS", "1"),
        ("IMGATE_PRUNE_INTERVAL_SECS", "1"),
    ]);
    let (alice, bob) = (unique("rt-alice"), unique("rt-bob"));
    let now = imgate_conformance::http::now_ms();
    let line = |old: &str, ts: i64, text: &str| {
        json!({"messageUid": old, "sender": alice, "conv": {"type": 0, "target": bob, "line": 0},
               "payload": {"type": 1, "searchableContent": text}, "timestamp": ts})
    };
    let r = g.admin().post(
        "/admin/import/messages",
        &json!({"messages": [line("o1", now - 3 * 86_400_000, "three days old"),
                             line("o2", now - 3_600_000, "an hour old")]}),
    );
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let http_bob = g.client(&bob, "web");
    // The pruning pass runs every second: bounded wait for it.
    let deadline = Instant::now() + WAIT;
    while texts(&http_bob.sync_all(0)) != ["an hour old"] {
        assert!(
            Instant::now() < deadline,
            "not pruned: {:?}",
            http_bob.sync_all(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(history(&http_bob, &alice), ["an hour old"]);
    assert_eq!(mam(&g, &bob, &alice), ["an hour old"]);
}

fn pb_conversations(c: &mut PbClient, before: u64, limit: i32) -> proto::ConversationsResponse {
    let seq = c.request(PbRequest::Conversations(proto::ConversationsRequest {
        before,
        limit,
    }));
    match c.response(seq) {
        PbServerMessage::ConversationsResponse(r) => r,
        other => panic!("expected ConversationsResponse, got {other:?}"),
    }
}

fn pb_mark_read(c: &mut PbClient, conv: proto::Conversation, id: u64) -> proto::MarkReadResponse {
    let seq = c.request(PbRequest::MarkRead(proto::MarkReadRequest {
        conversation: Some(conv),
        message_id: id,
    }));
    match c.response(seq) {
        PbServerMessage::MarkReadResponse(r) => r,
        other => panic!("expected MarkReadResponse, got {other:?}"),
    }
}

#[test]
fn conversations_and_read_positions_are_shared_by_http_and_pb() {
    let g = Gateway::start();
    let (alice, bob, carol) = (unique("cv-alice"), unique("cv-bob"), unique("cv-carol"));
    let http_alice = g.client(&alice, "web");
    let http_bob = g.client(&bob, "web");
    let texts_ids: Vec<u64> = (0..3)
        .map(|i| send(&http_alice, &bob, &format!("t{i}"), 3, 0))
        .collect();
    let tip = send(&http_alice, &bob, "a tip", 1, 0);
    let from_carol = send(&g.client(&carol, "web"), &bob, "hello", 3, 0);
    // HTTP: newest activity first, last message, unread (flag 3 only).
    let r = http_bob.get("/v1/conversations");
    assert_eq!((r.status, r.code()), (200, 0), "{:?}", r.body);
    let list = r.result()["conversations"]
        .as_array()
        .expect("list")
        .clone();
    assert_eq!(list.len(), 2);
    assert_eq!(
        list[0]["conv"],
        json!({"type": 0, "target": carol, "line": 0})
    );
    assert_eq!(list[0]["lastMessageUid"], from_carol);
    assert_eq!(list[0]["unread"], 1);
    assert_eq!(list[1]["conv"]["target"], alice.as_str());
    assert_eq!(list[1]["lastMessage"]["messageUid"], tip);
    assert_eq!(
        list[1]["lastMessage"]["payload"]["searchableContent"],
        "a tip"
    );
    assert_eq!(list[1]["lastMessageUidStr"], tip.to_string());
    assert_eq!(
        (list[1]["unread"].as_u64(), list[1]["readUpto"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(r.result()["hasMore"], false);
    // The sender has nothing unread.
    let r = http_alice.get("/v1/conversations");
    assert_eq!(r.result()["conversations"][0]["unread"], 0);
    assert_eq!(
        r.result()["conversations"][0]["conv"]["target"],
        bob.as_str()
    );
    // Paging.
    let r = http_bob.get("/v1/conversations?limit=1");
    assert_eq!(r.result()["hasMore"], true);
    let r = http_bob.get(&format!("/v1/conversations?limit=1&before={from_carol}"));
    assert_eq!(
        r.result()["conversations"][0]["conv"]["target"],
        alice.as_str()
    );
    assert_eq!(r.result()["hasMore"], false);
    // PB sees the same, and marks read up to the second text.
    let mut pb = pb_login(&g, &bob, "phone");
    let page = pb_conversations(&mut pb, 0, 0);
    assert_eq!(page.code, 0);
    let unread: Vec<u64> = page.conversations.iter().map(|c| c.unread).collect();
    assert_eq!(unread, [1, 3]);
    assert_eq!(
        page.conversations[1]
            .last_message
            .as_ref()
            .map(|m| m.message_id),
        Some(tip)
    );
    let with_alice = proto::Conversation {
        r#type: 0,
        target: alice.clone(),
        line: 0,
    };
    let r = pb_mark_read(&mut pb, with_alice.clone(), texts_ids[1]);
    assert_eq!((r.code, r.read_upto, r.unread), (0, texts_ids[1], 1));
    // HTTP sees PB's read position; HTTP marks everything read.
    let r = http_bob.get("/v1/conversations");
    assert_eq!(r.result()["conversations"][1]["readUpto"], texts_ids[1]);
    assert_eq!(r.result()["conversations"][1]["unread"], 1);
    let r = http_bob.post(
        "/v1/conversations/read",
        &json!({"conv": {"type": 0, "target": alice, "line": 0}}),
    );
    assert_eq!(r.code(), 0, "{:?}", r.body);
    assert_eq!(
        (
            r.result()["unread"].as_u64(),
            r.result()["readUpto"].as_u64()
        ),
        (Some(0), Some(tip))
    );
    let page = pb_conversations(&mut pb, 0, 10);
    assert_eq!(page.conversations[1].unread, 0);
    // A string id works (JavaScript); the position never moves back.
    let r = http_bob.post(
        "/v1/conversations/read",
        &json!({"conv": {"type": 0, "target": carol, "line": 0}, "messageUid": from_carol.to_string()}),
    );
    assert_eq!(r.result()["unread"], 0);
    let r = pb_mark_read(&mut pb, with_alice, texts_ids[0]);
    assert_eq!((r.code, r.read_upto), (0, tip));
    // Unknown and malformed conversations.
    let r = http_bob.post(
        "/v1/conversations/read",
        &json!({"conv": {"type": 0, "target": "nobody-at-all", "line": 0}}),
    );
    assert_eq!((r.status, r.code()), (404, 253));
    let r = http_bob.post(
        "/v1/conversations/read",
        &json!({"conv": {"type": 9, "target": alice, "line": 0}}),
    );
    assert_eq!((r.status, r.code()), (400, 251));
    let r = pb_mark_read(
        &mut pb,
        proto::Conversation {
            r#type: 0,
            target: "nobody-at-all".into(),
            line: 0,
        },
        0,
    );
    assert_eq!(r.code, 253);
    let r = http_bob.get("/v1/conversations?before=x");
    assert_eq!((r.status, r.code()), (400, 251));
}
