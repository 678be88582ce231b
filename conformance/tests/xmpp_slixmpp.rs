//! XMPP-lite with a real third-party client library (slixmpp, driven by
//! the scripts in `conformance/python/xmpp_*.py`): token login, chat with
//! receipts, offline delivery, stream-management resumption, MAM paging.

use imgate_conformance::xmpp::run_script as run;
use imgate_conformance::{unique, Gateway};
use serde_json::Value;

const DOMAIN: &str = "localhost";

fn bodies(records: &Value) -> Vec<String> {
    records
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn slixmpp_logs_in_with_a_token_and_is_refused_with_a_bad_one() {
    let g = Gateway::start();
    let user = unique("sx-alice");
    let token = g.admin().token(&user, "laptop", 3);
    let ok = run(&g, "xmpp_login.py", &[&user, &token]);
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(
        ok["jid"],
        format!("{user}@{DOMAIN}/laptop"),
        "bound to the token's device"
    );
    let bad = run(&g, "xmpp_login.py", &[&user, "bogus-token"]);
    assert_eq!(bad["ok"], false, "{bad}");
    assert_eq!(bad["reason"], "failed_auth");
}

#[test]
fn slixmpp_chat_with_receipts() {
    let g = Gateway::start();
    let (a, b) = (unique("sx-a"), unique("sx-b"));
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let out = run(&g, "xmpp_chat.py", &[&a, &at, &b, &bt, "3"]);
    assert_eq!(bodies(&out["received"]), ["hello 0", "hello 1", "hello 2"]);
    let sent: Vec<&str> = out["sent_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut receipts: Vec<&str> = out["receipt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    receipts.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(receipts, expected, "each sender id comes back as a receipt");
    // The receipts were delivery acks: nothing is pending for bob.
    let again = run(&g, "xmpp_recv.py", &[&b, &bt, "0"]);
    assert_eq!(again["received"], serde_json::json!([]));
}

#[test]
fn slixmpp_offline_messages_arrive_at_next_login() {
    let g = Gateway::start();
    let (a, b) = (unique("sx-a"), unique("sx-b"));
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    // Bob's device is known to the store (it logged in once), then offline.
    let first = run(&g, "xmpp_recv.py", &[&b, &bt, "0"]);
    assert_eq!(first["received"], serde_json::json!([]));
    let sent = run(
        &g,
        "xmpp_send.py",
        &[&a, &at, &format!("{b}@{DOMAIN}"), "one", "two"],
    );
    assert_eq!(sent["errors"], serde_json::json!([]));
    let got = run(&g, "xmpp_recv.py", &[&b, &bt, "2"]);
    let recs = got["received"].as_array().unwrap();
    assert_eq!(bodies(&got["received"]), ["one", "two"]);
    assert!(
        recs.iter().all(|r| r["delayed"] == true),
        "offline messages carry <delay>: {got}"
    );
    assert!(
        recs.iter().all(|r| r["id"] == r["stanza_id"]),
        "id = messageUid = stanza-id"
    );
}

#[test]
fn slixmpp_stream_management_resumption_loses_nothing() {
    let g = Gateway::start();
    let (a, b) = (unique("sx-a"), unique("sx-b"));
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let out = run(&g, "xmpp_sm_resume.py", &[&a, &at, &b, &bt]);
    assert_eq!(out["resumed"], true, "{out}");
    let mut got = bodies(&out["received"]);
    got.sort();
    got.dedup();
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5", "m6"], "{out}");
}

#[test]
fn slixmpp_mam_pages_through_history() {
    let g = Gateway::start();
    let (a, b) = (unique("sx-a"), unique("sx-b"));
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "newphone", 2);
    let msgs: Vec<String> = (0..7).map(|i| format!("h{i}")).collect();
    let mut args = vec![a.clone(), at.clone(), format!("{b}@{DOMAIN}")];
    args.extend(msgs.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&g, "xmpp_send.py", &args);
    let out = run(&g, "xmpp_mam.py", &[&b, &bt, &format!("{a}@{DOMAIN}"), "3"]);
    let pages = out["pages"].as_array().expect("pages");
    assert_eq!(pages.len(), 3, "7 messages in pages of 3: {out}");
    let sizes: Vec<usize> = pages
        .iter()
        .map(|p| p.as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [3, 3, 1]);
    let all: Vec<String> = pages
        .iter()
        .rev()
        .flat_map(|p| p.as_array().cloned().unwrap_or_default())
        .map(|m| m.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(all, msgs, "newest page first, each page in order");
    assert_eq!(out["complete"], true);
}

#[test]
fn slixmpp_mam_filters_by_start_and_end() {
    use imgate_codecs::xmpp::timestamp::xep0082;
    let g = Gateway::start();
    let (a, b) = (unique("sx-a"), unique("sx-b"));
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "newphone", 2);
    let mut args = vec![a.clone(), at.clone(), format!("{b}@{DOMAIN}")];
    args.extend((0..7).map(|i| format!("t{i}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&g, "xmpp_send.py", &args);
    // The stored times, as the archive will compare them.
    let stored: Vec<(i64, String)> = g
        .client(&b, "web")
        .sync_all(0)
        .iter()
        .map(|m| {
            let ts = m["timestamp"].as_i64().expect("timestamp");
            let body = m["payload"]["searchableContent"]
                .as_str()
                .unwrap_or_default();
            (ts, body.to_string())
        })
        .collect();
    assert_eq!(stored.len(), 7);
    let (start, end) = (stored[2].0, stored[5].0);
    let expect = |lo: i64, hi: i64| -> Vec<String> {
        stored
            .iter()
            .filter(|(ts, _)| (lo..=hi).contains(ts))
            .map(|(_, b)| b.clone())
            .collect()
    };
    let query = |from: &str, to: &str| -> Vec<String> {
        let out = run(
            &g,
            "xmpp_mam.py",
            &[&b, &bt, &format!("{a}@{DOMAIN}"), "2", from, to],
        );
        assert_eq!(out["complete"], true, "{out}");
        out["pages"]
            .as_array()
            .expect("pages")
            .iter()
            .rev()
            .flat_map(|p| p.as_array().cloned().unwrap_or_default())
            .map(|m| m.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let both = query(&xep0082(start), &xep0082(end));
    assert_eq!(both, expect(start, end));
    assert!(both.contains(&"t2".to_string()) && both.contains(&"t5".to_string()));
    assert_eq!(query(&xep0082(start), ""), expect(start, i64::MAX));
    assert_eq!(query("", &xep0082(end)), expect(i64::MIN, end));
    // Before any message: nothing, and complete.
    assert!(query("", "2020-01-01T00:00:00Z").is_empty());
}
