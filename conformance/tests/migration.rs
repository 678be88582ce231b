//! Migration (DESIGN §7–8) against the real binary: `imgate import
//! FILE.jsonl` stores another system's messages with their original
//! timestamps as history (in time order, visible over HTTP and XMPP MAM
//! paging alike because both read the store), maps old ids to new ones, is
//! idempotent, reports bad lines with their codes; `imgate export` writes
//! everything back out in the same shape, and that file imports into a
//! second gateway unchanged.

use std::path::Path;
use std::process::{Command, Output};

use imgate_conformance::gateway::binary;
use imgate_conformance::{unique, Gateway};
use serde_json::{json, Value};

fn cli(g: &Gateway, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("IMGATE_ADMIN_SECRET")
        .env("IMGATE_ADMIN_URL", g.admin_url())
        .env("IMGATE_DATA_DIR", g.data_dir())
        .output()
        .expect("running the imgate CLI")
}

fn summary(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("summary {text:?}: {e}"))
}

/// The message counts of a summary.
fn counts(out: &Output) -> Value {
    let s = summary(out);
    json!({"imported": s["imported"], "duplicates": s["duplicates"], "failed": s["failed"]})
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).expect("writing the JSONL file");
}

/// (text, timestamp) of a conversation's history, oldest first.
fn history(g: &Gateway, user: &str, kind: i32, target: &str) -> Vec<(String, i64)> {
    let client = g.client(user, "web");
    let r = client.get(&format!(
        "/v1/history?type={kind}&target={target}&limit=100"
    ));
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let mut out: Vec<(String, i64)> = r.result()["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["payload"]["searchableContent"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                m["timestamp"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    out.reverse();
    out
}

#[test]
fn import_keeps_time_order_and_is_idempotent_and_export_round_trips() {
    let g = Gateway::start();
    let (alice, bob, carol) = (unique("mig-alice"), unique("mig-bob"), unique("mig-carol"));
    let team = unique("mig-team");
    g.admin().create_group(&team, &alice, &[&bob, &carol]);
    // A live message first: imported history goes before it.
    let live = g.client(&alice, "web").send_text(&bob, "live today", "l1");
    assert_eq!(live.code(), 0);
    let t = 1_735_689_600_000_i64; // 2025-01-01T00:00:00Z
    let private = |id: Value, dt: i64, text: &str| {
        json!({"messageUid": id, "sender": alice, "conv": {"type": 0, "target": bob, "line": 0},
               "payload": {"type": 1, "searchableContent": text}, "timestamp": t + dt})
    };
    let lines = vec![
        private(json!(9_000_000_003_u64), 3_000, "third"),
        private(json!("vendor-1"), 1_000, "first"),
        json!({"messageUid": "vendor-g", "sender": carol, "conv": {"type": 1, "target": team},
               "payload": {"type": 1, "searchableContent": "group hello"}, "timestamp": t + 1_500}),
        private(json!("vendor-2"), 2_000, "second"),
        // Refused, each with its code: before 2024, no old id, no group.
        private(json!("vendor-old"), -200_000_000_000, "too old"),
        json!({"sender": alice, "conv": {"type": 0, "target": bob}, "timestamp": t}),
        json!({"messageUid": "vendor-x", "sender": alice, "conv": {"type": 1, "target": "no-such-group"},
               "timestamp": t}),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("vendor.jsonl");
    write_lines(&file, &lines);
    let file_arg = file.to_str().expect("utf-8 path");

    let first = cli(&g, &["import", file_arg, "--batch", "3"]);
    assert!(!first.status.success(), "bad lines make the import fail");
    assert_eq!(
        counts(&first),
        json!({"imported": 4, "duplicates": 0, "failed": 3})
    );
    assert_eq!(summary(&first)["refused"], json!({"251": 2, "253": 1}));
    let errors = String::from_utf8_lossy(&first.stderr);
    assert!(errors.contains("line 5: code 251"), "{errors}");
    assert!(errors.contains("line 6: code 251"), "{errors}");
    assert!(errors.contains("line 7: code 253"), "{errors}");

    // History in time order with the original timestamps, then live.
    let seen = history(&g, &bob, 0, &alice);
    let texts: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(texts, ["first", "second", "third", "live today"]);
    assert_eq!(seen[0].1, t + 1_000);
    assert_eq!(seen[2].1, t + 3_000);
    assert_eq!(
        history(&g, &carol, 1, &team),
        [("group hello".to_string(), t + 1_500)]
    );
    // Carol's sync from the start sees the group message; bob's both.
    assert_eq!(g.client(&carol, "web").sync_all(0).len(), 1);
    assert_eq!(g.client(&bob, "web").sync_all(0).len(), 5);

    // Idempotent: the same file again stores nothing new.
    let again = cli(&g, &["import", file_arg]);
    assert_eq!(
        counts(&again),
        json!({"imported": 0, "duplicates": 4, "failed": 3})
    );
    assert_eq!(g.client(&bob, "web").sync_all(0).len(), 5);
    // The admin API maps old ids to new ones, the same both times.
    let mapped = g.admin().post(
        "/admin/import/messages",
        &json!({"messages": [lines[1].clone()]}),
    );
    assert_eq!(mapped.code(), 0);
    let r = &mapped.result()["results"][0];
    assert_eq!(
        (r["oldId"].as_str(), r["duplicate"].as_bool()),
        (Some("vendor-1"), Some(true))
    );
    let first_id = r["messageUid"].as_u64().expect("new id");
    assert!(first_id < live.result()["messageUid"].as_u64().unwrap());

    // Export everything (the group first); import it into a fresh
    // gateway: the same group, the same history.
    let exported = dir.path().join("export.jsonl");
    let out = cli(&g, &["export", "--out", exported.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&exported).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(text.starts_with(r#"{"group":"#), "{text}");
    let g2 = Gateway::start();
    let copied = cli(&g2, &["import", exported.to_str().unwrap()]);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert_eq!(
        counts(&copied),
        json!({"imported": 5, "duplicates": 0, "failed": 0})
    );
    assert_eq!(summary(&copied)["groups"], 1);
    assert_eq!(history(&g2, &bob, 0, &alice), seen);
    assert_eq!(
        history(&g2, &carol, 1, &team),
        history(&g, &carol, 1, &team)
    );
}
