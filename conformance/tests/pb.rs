//! The private binary protocol against the real binary over real TCP:
//! login rules, send/ack/deliver, idempotency, kick, offline delivery,
//! PB ↔ HTTP with every payload field, and bad input.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use imgate_codecs::pb::{commands, proto, PbFrame, PbRequest, PbServerMessage};
use imgate_conformance::{unique, Gateway, PbClient, WAIT};
use serde_json::json;

const ANDROID: i32 = 2;
const IOS: i32 = 1;
const WINDOWS: i32 = 3;

fn pb(g: &Gateway, user: &str, device: &str, platform: i32) -> PbClient {
    let token = g.admin().token(user, device, platform);
    PbClient::login_ok(g.addr("pb"), user, &token, device, platform)
}

#[test]
fn login_ok_bad_token_and_send_before_login() {
    let g = Gateway::start();
    let token = g.admin().token("alice", "phone", ANDROID);
    let mut ok = PbClient::connect(g.addr("pb"));
    let r = ok.login("alice", &token, "phone", ANDROID);
    assert_eq!(r.code, 0);
    assert!(r.server_time > 1_700_000_000_000);
    assert!(ok.heartbeat(), "heartbeat is echoed");

    let mut bad = PbClient::connect(g.addr("pb"));
    assert_eq!(bad.login("alice", "not-a-token", "phone", ANDROID).code, 6);
    assert!(bad.wait_closed(WAIT), "closed after a failed login");

    let mut wrong_user = PbClient::connect(g.addr("pb"));
    assert_eq!(
        wrong_user.login("mallory", &token, "phone", ANDROID).code,
        244
    );

    let mut early = PbClient::connect(g.addr("pb"));
    let seq = early.request(PbRequest::Heartbeat);
    match early.response(seq) {
        PbServerMessage::Error(e) => assert_eq!(e.code, 244),
        other => panic!("expected Error 244, got {other:?}"),
    }
    assert!(early.wait_closed(WAIT));
    // The logged-in session is unaffected.
    assert!(ok.heartbeat());
}

#[test]
fn send_ack_deliver_and_deliver_ack() {
    let g = Gateway::start();
    let mut alice = pb(&g, "alice", "phone", ANDROID);
    let mut bob = pb(&g, "bob", "phone", ANDROID);
    let r = alice.send_text("bob", "hello bob", "c1");
    assert_eq!(r.code, 0);
    assert!(r.message_id > 0);
    assert_eq!(r.client_msg_id, "c1");
    let m = bob.next_deliver(WAIT).expect("bob gets the message");
    assert_eq!(m.message_id, r.message_id);
    assert_eq!(m.sender, "alice");
    assert_eq!(m.payload.as_ref().unwrap().searchable_content, "hello bob");
    assert_eq!(m.server_ts, r.server_ts);
    bob.ack(m.message_id);
    // The sender's own device does not get its message back...
    assert!(alice.next_deliver(Duration::from_millis(300)).is_none());
    // ...but after an acked delivery, a reconnect of bob redelivers nothing,
    // while bob's reply is delivered to alice.
    let reply = bob.send_text("alice", "hi alice", "c2");
    assert_eq!(
        alice.next_deliver(WAIT).unwrap().message_id,
        reply.message_id
    );
    drop(bob);
    let mut bob2 = pb(&g, "bob", "phone", ANDROID);
    assert!(
        bob2.next_deliver(Duration::from_millis(500)).is_none(),
        "acked messages are not redelivered"
    );
    // Sync over PB returns both, in order.
    let s = bob2.sync(0, 10);
    assert_eq!(s.code, 0);
    let ids: Vec<u64> = s.messages.iter().map(|m| m.message_id).collect();
    assert_eq!(ids, vec![r.message_id, reply.message_id]);
    assert!(!s.has_more);
}

#[test]
fn resend_is_idempotent() {
    let g = Gateway::start();
    let mut alice = pb(&g, "alice", "phone", ANDROID);
    let a = alice.send_text("bob", "once", "dup-1");
    let b = alice.send_text("bob", "once", "dup-1");
    assert_eq!(a.code, 0);
    assert_eq!((a.message_id, a.server_ts), (b.message_id, b.server_ts));
    assert_eq!(g.client("bob", "web").sync_all(0).len(), 1);
}

#[test]
fn second_login_on_same_platform_class_kicks_the_first() {
    let g = Gateway::start();
    let mut phone1 = pb(&g, "alice", "phone1", ANDROID);
    let mut laptop = pb(&g, "alice", "laptop", WINDOWS);
    let _phone2 = pb(&g, "alice", "phone2", IOS);
    let kick = phone1.recv(WAIT).expect("a kick notice");
    match kick.msg {
        PbServerMessage::Kick(k) => {
            assert_eq!(k.code, 7);
            assert!(!k.reason.is_empty());
        }
        other => panic!("expected Kick, got {other:?}"),
    }
    assert!(phone1.wait_closed(WAIT), "kicked session is closed");
    assert!(laptop.heartbeat(), "another platform class stays online");
}

#[test]
fn multi_endpoint_keeps_both_sessions() {
    let g = Gateway::start_with(&[("IMGATE_MULTI_ENDPOINT", "true")]);
    let mut p1 = pb(&g, "alice", "p1", ANDROID);
    let mut p2 = pb(&g, "alice", "p2", ANDROID);
    let r = pb(&g, "bob", "x", WINDOWS).send_text("alice", "to both", "m");
    assert_eq!(p1.next_deliver(WAIT).unwrap().message_id, r.message_id);
    assert_eq!(p2.next_deliver(WAIT).unwrap().message_id, r.message_id);
}

#[test]
fn offline_device_gets_pending_on_reconnect_and_unacked_are_redelivered() {
    let g = Gateway::start();
    // bob's phone has logged in once, then went offline.
    drop(pb(&g, "bob", "phone", ANDROID));
    let mut alice = pb(&g, "alice", "phone", ANDROID);
    let ids: Vec<u64> = (0..3)
        .map(|i| {
            alice
                .send_text("bob", &format!("m{i}"), &format!("k{i}"))
                .message_id
        })
        .collect();
    let mut bob = pb(&g, "bob", "phone", ANDROID);
    let got: Vec<u64> = (0..3)
        .map(|_| bob.next_deliver(WAIT).expect("pending delivery").message_id)
        .collect();
    assert_eq!(got, ids, "pending deliveries arrive in order");
    bob.ack(ids[0]);
    // Heartbeat round trip: the ack was read before we disconnect.
    assert!(bob.heartbeat());
    drop(bob);
    let mut bob = pb(&g, "bob", "phone", ANDROID);
    let again: Vec<u64> = (0..2)
        .map(|_| bob.next_deliver(WAIT).expect("redelivery").message_id)
        .collect();
    assert_eq!(
        again,
        ids[1..].to_vec(),
        "unacked messages come again with the same ids"
    );
}

fn full_payload() -> proto::MessagePayload {
    proto::MessagePayload {
        r#type: 3,
        searchable_content: "picture".into(),
        push_content: "push".into(),
        content: "content".into(),
        data: vec![0, 1, 2, 250, 255],
        media_type: 2,
        remote_media_url: "https://example.invalid/x.png".into(),
        persist_flag: 3,
        expire_duration: 30,
        mentioned_type: 1,
        mentioned_target: vec!["bob".into(), "carol".into()],
        extra: "{\"a\":1}".into(),
        push_data: "pd".into(),
    }
}

#[test]
fn pb_and_http_both_ways_with_every_payload_field() {
    let g = Gateway::start();
    let mut alice = pb(&g, "alice", "phone", ANDROID);
    let bob = g.client("bob", "web");
    // PB → HTTP
    let sent = alice.send(proto::SendRequest {
        client_msg_id: "x1".into(),
        conversation: Some(proto::Conversation {
            r#type: 0,
            target: "bob".into(),
            line: 0,
        }),
        payload: Some(full_payload()),
        to_users: vec![],
    });
    assert_eq!(sent.code, 0);
    let msgs = bob.sync_all(0);
    assert_eq!(msgs.len(), 1);
    let p = &msgs[0]["payload"];
    assert_eq!(msgs[0]["messageUid"].as_u64(), Some(sent.message_id));
    assert_eq!(
        *p,
        json!({
            "type": 3, "searchableContent": "picture", "pushContent": "push", "content": "content",
            "base64edData": "AAEC+v8=", "mediaType": 2, "remoteMediaUrl": "https://example.invalid/x.png",
            "persistFlag": 3, "expireDuration": 30, "mentionedType": 1, "mentionedTarget": ["bob", "carol"],
            "extra": "{\"a\":1}", "pushData": "pd"
        })
    );
    // HTTP → PB
    let r = bob.post(
        "/v1/messages",
        &json!({"conv": {"type": 0, "target": "alice", "line": 0}, "payload": p, "clientMsgId": "h1"}),
    );
    assert_eq!(r.code(), 0);
    let m = alice
        .next_deliver(WAIT)
        .expect("alice gets bob's HTTP message over PB");
    assert_eq!(m.message_id, r.result()["messageUid"].as_u64().unwrap());
    assert_eq!(m.sender, "bob");
    assert_eq!(m.client_msg_id, "h1");
    assert_eq!(m.payload, Some(full_payload()), "every field arrives equal");
    assert_eq!(m.conversation.unwrap().target, "alice");
}

#[test]
fn group_over_pb_and_rejections_carry_codes() {
    let g = Gateway::start();
    let gid = unique("pbgroup");
    g.admin().create_group(&gid, "alice", &["bob"]);
    let mut alice = pb(&g, "alice", "phone", ANDROID);
    let mut bob = pb(&g, "bob", "phone", ANDROID);
    let mut mallory = pb(&g, "mallory", "phone", ANDROID);
    let group = |text: &str| imgate_conformance::pb::text_request(1, &gid, text, "");
    let ok = alice.send(group("hi group"));
    assert_eq!(ok.code, 0);
    assert_eq!(bob.next_deliver(WAIT).unwrap().message_id, ok.message_id);
    assert_eq!(mallory.send(group("let me in")).code, 9);
    let mut bad = group("x");
    bad.conversation.as_mut().unwrap().r#type = 77;
    assert_eq!(alice.send(bad).code, 251);
    // Recall by the sender: gone from sync, bob is told.
    assert_eq!(alice.recall(ok.message_id), 0);
    let notice = bob.next_deliver(WAIT).expect("recall notice");
    assert_eq!(notice.payload.unwrap().r#type, 80);
    assert_eq!(
        bob.recall(notice.message_id),
        248,
        "only the sender may recall"
    );
}

fn raw_conn(g: &Gateway) -> TcpStream {
    let s = TcpStream::connect(g.addr("pb")).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Read until EOF; true if the server closed within the wait.
fn closed_by_server(s: &mut TcpStream) -> (bool, Vec<u8>) {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(_) => return (false, all),
        }
    }
}

fn header(length: u32, version: u16, command: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&length.to_be_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&0u16.to_be_bytes());
    h.extend_from_slice(&(command >> 8).to_be_bytes());
    h.extend_from_slice(&command.to_be_bytes());
    h.extend_from_slice(&9u16.to_be_bytes());
    h.extend_from_slice(&0u16.to_be_bytes());
    h
}

#[test]
fn garbage_and_oversized_frames_close_only_that_connection() {
    let g = Gateway::start_with(&[("IMGATE_PB_MAX_FRAME", "65536")]);
    let mut alice = pb(&g, "alice", "phone", ANDROID);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("length 0", header(0, 1, commands::LOGIN_REQUEST)),
        ("length 2^31", header(1 << 31, 1, commands::LOGIN_REQUEST)),
        ("oversized", header(65537, 1, commands::LOGIN_REQUEST)),
        ("bad version", header(16, 9, commands::LOGIN_REQUEST)),
        ("unknown command", header(16, 1, 0x0999)),
        ("not protobuf", {
            let mut f = header(20, 1, commands::LOGIN_REQUEST);
            f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
            f
        }),
    ];
    for (name, bytes) in cases {
        let mut s = raw_conn(&g);
        s.write_all(&bytes).unwrap();
        let (closed, reply) = closed_by_server(&mut s);
        assert!(closed, "{name}: server must close the connection");
        if !reply.is_empty() {
            let mut framer = imgate_codecs::pb::PbFramer::new(1 << 20);
            let mut buf = bytes::BytesMut::from(&reply[..]);
            let frame = tokio_util::codec::Decoder::decode(&mut framer, &mut buf)
                .unwrap()
                .unwrap();
            match PbServerMessage::decode(&frame).unwrap() {
                PbServerMessage::Error(e) => assert!(e.code != 0, "{name}: error code"),
                other => panic!("{name}: expected Error, got {other:?}"),
            }
        }
    }
    // A truncated frame followed by silence: the session waits (no crash),
    // then the rest arrives and it is a valid login.
    let token = g.admin().token("carol", "d", ANDROID);
    let login = PbRequest::Login(proto::LoginRequest {
        user_id: "carol".into(),
        token,
        client_id: "d".into(),
        platform: ANDROID,
    })
    .to_frame(5);
    let mut wire = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut imgate_codecs::pb::PbFramer::new(1 << 20),
        login,
        &mut wire,
    )
    .unwrap();
    let mut s = raw_conn(&g);
    s.write_all(&wire[..10]).unwrap();
    s.flush().unwrap();
    s.write_all(&wire[10..]).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    assert!(n >= 16, "a login response arrives");
    assert_eq!(
        u16::from_be_bytes([buf[10], buf[11]]),
        commands::LOGIN_RESPONSE
    );
    assert_eq!(
        u16::from_be_bytes([buf[12], buf[13]]),
        5,
        "response echoes the request seq"
    );
    // An unknown command after login: Error, and the session goes on.
    let mut carol = pb(&g, "carol", "d2", WINDOWS);
    carol.write_frame(PbFrame::new(0x0355, 77, bytes::Bytes::new()));
    match carol.response(77) {
        PbServerMessage::Error(e) => assert_eq!(e.code, 254),
        other => panic!("expected Error, got {other:?}"),
    }
    assert!(carol.heartbeat());
    // Everyone else kept working.
    assert!(alice.heartbeat());
    assert_eq!(alice.send_text("bob", "still fine", "ok").code, 0);
}

#[test]
fn silent_connection_is_closed_after_three_heartbeat_intervals() {
    let g = Gateway::start_with(&[("IMGATE_HEARTBEAT_SECS", "1")]);
    let mut quiet = pb(&g, "alice", "phone", ANDROID);
    assert!(quiet.heartbeat());
    assert!(quiet.wait_closed(WAIT), "idle session closed");
    // The gateway itself is fine: a new session logs in and answers.
    let mut fresh = pb(&g, "bob", "phone", ANDROID);
    assert!(fresh.heartbeat());
}
