//! The README walk-through with the admin CLI: `imgate admin get-token`,
//! `imgate admin send`, then the recipient syncs over HTTP.

use std::process::Command;

use imgate_conformance::gateway::binary;
use imgate_conformance::{Client, Gateway};

#[test]
fn walkthrough_alice_to_bob_with_the_cli() {
    let g = Gateway::start();
    let token = g.admin_cli(&["get-token", "bob"]).trim().to_string();
    let sent: serde_json::Value =
        serde_json::from_str(&g.admin_cli(&["send", "--from", "alice", "--to", "bob", "hi"]))
            .unwrap();
    let bob = Client::new(&g.http_url(), &token);
    let msgs = bob.sync_all(0);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["payload"]["searchableContent"], "hi");
    assert_eq!(msgs[0]["sender"], "alice");
    assert_eq!(msgs[0]["messageUid"], sent["messageUid"]);

    g.admin_cli(&[
        "group-create",
        "cli-team",
        "--owner",
        "alice",
        "--members",
        "bob,carol",
    ]);
    g.admin_cli(&[
        "send",
        "--from",
        "carol",
        "--group",
        "cli-team",
        "hello team",
    ]);
    assert_eq!(bob.sync_all(0).len(), 2);
}

#[test]
fn cli_without_a_secret_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["admin", "get-token", "bob"])
        .env_remove("IMGATE_ADMIN_SECRET")
        .env("IMGATE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin secret"));
}

#[test]
fn policy_commands_take_effect_without_restart() {
    let g = Gateway::start();
    g.admin_cli(&["words-add", "darn", "坏词"]);
    let listed: serde_json::Value = serde_json::from_str(&g.admin_cli(&["words"])).unwrap();
    assert_eq!(listed["words"], serde_json::json!(["darn", "坏词"]));
    let alice = g.client("alice", "web");
    assert_eq!(alice.send_text("bob", "darn", "1").code(), 242);
    let hits: serde_json::Value =
        serde_json::from_str(&g.admin_cli(&["hits", "--user", "alice"])).unwrap();
    assert_eq!(hits["hits"][0]["words"], serde_json::json!(["darn"]));
    g.admin_cli(&["words-del", "darn"]);
    assert_eq!(alice.send_text("bob", "darn", "2").code(), 0);
    g.admin_cli(&["status", "alice", "muted"]);
    assert_eq!(alice.send_text("bob", "hi", "3").code(), 8);
    g.admin_cli(&["status", "alice", "normal"]);
    assert_eq!(alice.send_text("bob", "hi", "4").code(), 0);
    // Recall of one's own message over HTTP.
    let uid = alice.send_text("bob", "oops", "5").result()["messageUid"]
        .as_u64()
        .unwrap();
    let r = alice.post("/v1/recall", &serde_json::json!({"messageUid": uid}));
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let bob = g.client("bob", "x");
    assert!(bob
        .sync_all(0)
        .iter()
        .all(|m| m["messageUid"].as_u64() != Some(uid)));
    let other = g.client("bob", "x").post(
        "/v1/recall",
        &serde_json::json!({"messageUid": r.result()["noticeUid"]}),
    );
    assert_eq!(other.code(), 248, "only the sender may recall");
}
