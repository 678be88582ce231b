//! The signed admin API: signature rules, secret handling, tokens, groups,
//! recall, metrics — against the real binary over real HTTP.

use imgate_conformance::http::{now_ms, sign};
use imgate_conformance::{unique, Gateway};
use serde_json::json;

#[test]
fn signature_rules_239_243_244() {
    let g = Gateway::start();
    let admin = g.admin();
    let body = json!({"userId": "alice", "clientId": "phone", "platform": 2});
    let path = "/admin/user/get_token";

    let unsigned = admin.post_with(path, &body, &[]);
    assert_eq!((unsigned.status, unsigned.code()), (401, 239));

    let ts = now_ms().to_string();
    let missing_sign = admin.post_with(
        path,
        &body,
        &[
            ("nonce", Some("n1".into())),
            ("timestamp", Some(ts.clone())),
        ],
    );
    assert_eq!(missing_sign.code(), 239);

    let old = (now_ms() - 2 * 3600 * 1000 - 60_000).to_string();
    let expired = admin.post_with(
        path,
        &body,
        &[
            ("nonce", Some("n1".into())),
            ("timestamp", Some(old.clone())),
            ("sign", Some(sign("n1", &g.secret, &old))),
        ],
    );
    assert_eq!((expired.status, expired.code()), (401, 243));

    // A captured signature works once: replayed (any body) it is refused.
    let ts = now_ms().to_string();
    let captured = [
        ("nonce", Some("once".to_string())),
        ("timestamp", Some(ts.clone())),
        ("sign", Some(sign("once", &g.secret, &ts))),
    ];
    let first = admin.post_with(path, &body, &captured);
    assert_eq!(first.code(), 0, "{:?}", first.body);
    let other_body = json!({"userId": "mallory", "clientId": "x", "platform": 2});
    let replay = admin.post_with(path, &other_body, &captured);
    assert_eq!(
        (replay.status, replay.code()),
        (401, 244),
        "{:?}",
        replay.body
    );
    // A stricter window refuses what the seeds' 2 hours would accept.
    let strict = Gateway::start_with(&[("IMGATE_ADMIN_SIGN_WINDOW_SECS", "60")]);
    let ten_min = (now_ms() - 600_000).to_string();
    let r = strict.admin().post_with(
        path,
        &body,
        &[
            ("nonce", Some("n2".into())),
            ("timestamp", Some(ten_min.clone())),
            ("sign", Some(sign("n2", &strict.secret, &ten_min))),
        ],
    );
    assert_eq!((r.status, r.code()), (401, 243), "{:?}", r.body);

    let wrong = admin.post_with(
        path,
        &body,
        &[
            ("nonce", Some("n1".into())),
            ("timestamp", Some(ts.clone())),
            ("sign", Some(sign("n1", "not-the-secret", &ts))),
        ],
    );
    assert_eq!((wrong.status, wrong.code()), (401, 244));

    let good = admin.post_with(
        path,
        &body,
        &[
            ("nonce", Some("n1".into())),
            ("timestamp", Some(ts.clone())),
            ("sign", Some(sign("n1", &g.secret, &ts))),
        ],
    );
    assert_eq!(good.code(), 0, "{:?}", good.body);
    assert_eq!(good.result()["userId"], "alice");
    assert!(good.result()["token"]
        .as_str()
        .is_some_and(|t| t.len() > 20));
}

#[test]
fn secret_is_generated_once_printed_and_kept_in_the_data_dir() {
    let mut g = Gateway::start();
    let printed = g
        .printed_secret
        .clone()
        .expect("first start prints admin-secret");
    assert!(printed.len() >= 32, "secret too short: {printed}");
    let stored = std::fs::read_to_string(g.data_dir().join("admin-secret")).unwrap();
    assert_eq!(stored.trim(), printed);
    g.restart();
    assert_eq!(
        g.printed_secret, None,
        "an existing secret is not printed again"
    );
    assert_eq!(g.secret, printed);
    assert_eq!(
        g.admin()
            .post("/admin/group/info", &json!({"groupId": "none"}))
            .code(),
        253
    );
    // Another gateway has another secret: no secret works everywhere.
    let other = Gateway::start();
    assert_ne!(other.secret, printed);
    let cross = imgate_conformance::Admin::new(&other.admin_url(), &printed).post(
        "/admin/user/get_token",
        &json!({"userId": "a", "clientId": "b"}),
    );
    assert_eq!(cross.code(), 244);
}

#[test]
fn configured_secret_is_used_and_not_printed() {
    let g = Gateway::start_with(&[("IMGATE_ADMIN_SECRET", "a-configured-secret-for-tests")]);
    assert_eq!(g.printed_secret, None);
    assert_eq!(g.secret, "a-configured-secret-for-tests");
    assert_eq!(
        g.admin()
            .post(
                "/admin/user/get_token",
                &json!({"userId": "a", "clientId": "b"})
            )
            .code(),
        0
    );
}

#[test]
fn get_token_requires_user_and_client() {
    let g = Gateway::start();
    let r = g.admin().post(
        "/admin/user/get_token",
        &json!({"userId": "", "clientId": "x"}),
    );
    assert_eq!((r.status, r.code()), (400, 251));
    let r = g.admin().post_raw("/admin/user/get_token", "{not json");
    assert_eq!((r.status, r.code()), (400, 2));
}

#[test]
fn group_lifecycle_and_member_rules() {
    let g = Gateway::start();
    let admin = g.admin();
    let gid = unique("team");
    admin.create_group(&gid, "alice", &["bob"]);
    let dup = admin.post(
        "/admin/group/create",
        &json!({"operator": "alice", "group": {"targetId": gid}, "members": []}),
    );
    assert_eq!(dup.code(), 251);
    let info = admin.post("/admin/group/info", &json!({"groupId": gid}));
    assert_eq!(info.result()["members"], json!(["alice", "bob"]));

    let add = admin.post(
        "/admin/group/member/add",
        &json!({"operator": "alice", "groupId": gid, "members": ["carol"]}),
    );
    assert_eq!(add.result()["memberCount"], 3);
    let del = admin.post(
        "/admin/group/member/del",
        &json!({"operator": "alice", "groupId": gid, "members": ["bob"]}),
    );
    assert_eq!(del.result()["memberCount"], 2);

    // The admin can send into a group on behalf of a member.
    let send = admin.post(
        "/admin/message/send",
        &json!({"sender": "alice", "conv": {"type": 1, "target": gid, "line": 0}, "payload": {"type": 1, "searchableContent": "welcome"}}),
    );
    assert_eq!(send.code(), 0, "{:?}", send.body);
    let carol = g.client("carol", "web");
    assert_eq!(carol.sync_all(0).len(), 1);
    let bob = g.client("bob", "web");
    assert!(
        bob.sync_all(0).is_empty(),
        "removed member must not receive"
    );

    assert_eq!(
        admin
            .post(
                "/admin/group/dismiss",
                &json!({"operator": "alice", "groupId": gid})
            )
            .code(),
        0
    );
    assert_eq!(
        admin
            .post(
                "/admin/group/dismiss",
                &json!({"operator": "alice", "groupId": gid})
            )
            .code(),
        253
    );
    let after = admin.post(
        "/admin/message/send",
        &json!({"sender": "alice", "conv": {"type": 1, "target": gid, "line": 0}, "payload": {"type": 1, "searchableContent": "x"}}),
    );
    assert_eq!((after.status, after.code()), (404, 253));
}

#[test]
fn recall_removes_from_history_and_notifies() {
    let g = Gateway::start();
    let admin = g.admin();
    let alice = g.client("alice", "phone");
    let bob = g.client("bob", "phone");
    let sent = alice.send_text("bob", "oops", "r1");
    let uid = sent.result()["messageUid"].as_u64().unwrap();
    assert_eq!(bob.sync_all(0).len(), 1);
    let r = admin.post(
        "/admin/message/recall",
        &json!({"operator": "admin", "messageUid": uid}),
    );
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let msgs = bob.sync_all(0);
    assert_eq!(msgs.len(), 1, "only the recall notice remains: {msgs:?}");
    assert_eq!(msgs[0]["payload"]["type"], 80);
    assert_eq!(msgs[0]["payload"]["content"], uid.to_string());
    let again = admin.post(
        "/admin/message/recall",
        &json!({"messageUid": uid.to_string()}),
    );
    assert_eq!(again.code(), 253);
}

#[test]
fn metrics_count_messages_and_rejections() {
    let g = Gateway::start();
    let alice = g.client("alice", "phone");
    assert_eq!(alice.send_text("bob", "hi", "m1").code(), 0);
    assert_eq!(alice.send_text("", "hi", "m2").code(), 251);
    let text = g.admin().get_text("/metrics");
    assert!(
        text.contains("imgate_messages_in_total{protocol=\"http\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("imgate_rejections_total{reason=\"invalid_parameter\",code=\"251\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("imgate_send_duration_seconds_count 1"),
        "{text}"
    );
}
