//! A migration at scale against the real binary (issue 14): `imgate
//! import` of 100,000 generated lines (groups and a user first, then
//! private and group messages) while an HTTP sender keeps sending live
//! messages into the same conversation. Checks: every line imported,
//! history in time order before the live messages (HTTP history paged
//! through, PB sync paged through), the `--id-map` file (one line per
//! message, old id → the id the store gave it), an idempotent re-import
//! (nothing new, the same ids) and `--resume` after an interruption
//! (skips what the id map confirmed). `IMGATE_IMPORT_TEST_LINES` changes
//! the count (default 100,000).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use imgate_conformance::gateway::binary;
use imgate_conformance::{unique, Gateway, PbClient};
use serde_json::{json, Value};

const T0: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z
const GROUPS: usize = 10;

fn lines_wanted() -> usize {
    std::env::var("IMGATE_IMPORT_TEST_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn import(g: &Gateway, args: &[&str]) -> (Output, Value) {
    let out = Command::new(binary())
        .arg("import")
        .args(args)
        .env_remove("IMGATE_ADMIN_SECRET")
        .env("IMGATE_ADMIN_URL", g.admin_url())
        .env("IMGATE_DATA_DIR", g.data_dir())
        .output()
        .expect("running imgate import");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("summary {text:?} ({e}); stderr {}", stderr(&out)));
    (out, summary)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the generated file holds, to check the gateway against.
struct Generated {
    /// Texts of the alice–bob messages, in time order.
    private_texts: Vec<String>,
    /// Messages bob can sync (alice–bob and his group's).
    bob_messages: usize,
    messages: usize,
}

/// Line 1..=GROUPS: groups; then one user; then messages, 3 ms apart.
/// Every 4th message is alice → bob or back, every 5th (not 4th) goes to
/// a group, the rest between other pairs of users.
fn generate(path: &Path, n: usize, p: &str, alice: &str, bob: &str) -> Generated {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for gi in 0..GROUPS {
        let mut members = vec![format!("{p}-m{gi}a"), format!("{p}-m{gi}b")];
        if gi == 0 {
            members.push(bob.to_string());
        }
        let line = json!({"kind": "group", "group": {"targetId": format!("{p}-g{gi}"),
            "name": format!("group {gi}"), "owner": alice}, "members": members});
        writeln!(out, "{line}").expect("write");
    }
    let muted = json!({"kind": "user", "userId": format!("{p}-muted"), "status": 1});
    writeln!(out, "{muted}").expect("write");
    let mut g = Generated {
        private_texts: Vec::new(),
        bob_messages: 0,
        messages: n - GROUPS - 1,
    };
    for i in 0..g.messages {
        let text = format!("old {i}");
        let (sender, conv) = if i % 4 == 0 {
            let (from, to) = if i % 8 == 0 {
                (alice, bob)
            } else {
                (bob, alice)
            };
            g.private_texts.push(text.clone());
            g.bob_messages += 1;
            (
                from.to_string(),
                json!({"type": 0, "target": to, "line": 0}),
            )
        } else if i % 5 == 0 {
            let gi = (i / 5) % GROUPS;
            if gi == 0 {
                g.bob_messages += 1;
            }
            (
                alice.to_string(),
                json!({"type": 1, "target": format!("{p}-g{gi}")}),
            )
        } else {
            let pair = i % 50;
            (
                format!("{p}-u{pair}"),
                json!({"type": 0, "target": format!("{p}-v{pair}")}),
            )
        };
        let line = json!({"messageUid": format!("{p}-{i}"), "sender": sender, "conv": conv,
            "payload": {"type": 1, "searchableContent": text}, "timestamp": T0 + 3 * i as i64});
        writeln!(out, "{line}").expect("write");
    }
    out.flush().expect("flush");
    g
}

/// The id map: old id → (new id, line).
fn read_map(path: &Path) -> HashMap<String, (u64, u64)> {
    let text = std::fs::read_to_string(path).expect("id map");
    let mut map = HashMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("id map line is JSON");
        let id = v["messageUid"].as_u64().expect("messageUid");
        assert_eq!(v["messageUidStr"].as_str(), Some(id.to_string().as_str()));
        let old = v["oldId"].as_str().expect("oldId").to_string();
        let prev = map.insert(old, (id, v["line"].as_u64().expect("line")));
        assert!(prev.is_none(), "each old id once: {line}");
    }
    map
}

#[test]
fn hundred_thousand_lines_import_beside_live_traffic_in_order_idempotent_resumable() {
    let g = Gateway::start_with(&[("IMGATE_RATE_LIMIT_MESSAGES", "100000000")]);
    let n = lines_wanted();
    assert!(n > 1_000, "IMGATE_IMPORT_TEST_LINES too small");
    let p = unique("bulk");
    let (alice, bob) = (format!("{p}-alice"), format!("{p}-bob"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("old-server.jsonl");
    let gen = generate(&file, n, &p, &alice, &bob);
    let map_path = dir.path().join("ids.jsonl");
    let (file_arg, map_arg) = (file.to_str().unwrap(), map_path.to_str().unwrap());

    // Live traffic: alice keeps chatting with bob over HTTP meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let importing = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicU64::new(0));
    let live = {
        let (stop, importing, during) = (stop.clone(), importing.clone(), during.clone());
        let client = g.client(&alice, "live-web");
        let bob = bob.clone();
        std::thread::spawn(move || {
            let mut sent = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let k = sent.len();
                let r = client.send_text(&bob, &format!("live {k}"), &format!("live-{k}"));
                assert_eq!(r.code(), 0, "live send {k}: {:?}", r.body);
                sent.push(r.result()["messageUid"].as_u64().expect("live id"));
                if importing.load(Ordering::SeqCst) {
                    during.fetch_add(1, Ordering::SeqCst);
                }
            }
            sent
        })
    };
    importing.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let (first, summary) = import(&g, &[file_arg, "--id-map", map_arg]);
    let took = started.elapsed();
    importing.store(false, Ordering::SeqCst);
    // A few more live messages after the import, then stop.
    let after_import = during.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let live_ids = live.join().expect("live sender");
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(summary["imported"], gen.messages, "{summary}");
    assert_eq!(
        (
            &summary["duplicates"],
            &summary["failed"],
            &summary["groups"],
            &summary["users"]
        ),
        (&json!(0), &json!(0), &json!(GROUPS), &json!(1)),
        "{summary}"
    );
    assert!(
        after_import > 0,
        "live messages were sent during the import"
    );
    eprintln!(
        "imported {} lines in {:.1} s ({} msg/s by the CLI) beside {} live sends",
        n,
        took.as_secs_f64(),
        summary["perSecond"],
        after_import
    );

    // The id map: every message once, with its line, distinct new ids.
    let map = read_map(&map_path);
    assert_eq!(map.len(), gen.messages);
    let ids: HashSet<u64> = map.values().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), gen.messages, "new ids are distinct");
    for i in [0, 1, gen.messages / 2, gen.messages - 1] {
        let (_, line) = map[&format!("{p}-{i}")];
        assert_eq!(line as usize, GROUPS + 2 + i, "line of message {i}");
    }
    let newest_import = *ids.iter().max().unwrap();
    assert!(
        live_ids.iter().all(|l| *l > newest_import),
        "history before live"
    );
    // The user line: muted (cannot send).
    let status = g.admin().post(
        "/admin/user/status/get",
        &json!({"userId": format!("{p}-muted")}),
    );
    assert_eq!(status.result()["status"], 1);

    // HTTP history of alice–bob, paged newest first: the live messages,
    // then every imported one in time order, with its original time.
    let client = g.client(&bob, "web");
    let mut history: Vec<Value> = Vec::new();
    let mut before = String::new();
    loop {
        let r = client.get(&format!(
            "/v1/history?type=0&target={alice}&limit=500&before={before}"
        ));
        assert_eq!(r.code(), 0, "{:?}", r.body);
        let page = r.result()["messages"].as_array().expect("messages").clone();
        let Some(last) = page.last() else { break };
        before = last["messageUidStr"].as_str().expect("id").to_string();
        history.extend(page);
    }
    history.reverse();
    assert_eq!(history.len(), gen.private_texts.len() + live_ids.len());
    let (old, new) = history.split_at(gen.private_texts.len());
    let texts: Vec<&str> = old
        .iter()
        .map(|m| m["payload"]["searchableContent"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(texts, gen.private_texts, "imported history in time order");
    assert!(old
        .windows(2)
        .all(|w| w[0]["timestamp"].as_i64() < w[1]["timestamp"].as_i64()));
    assert_eq!(old[0]["timestamp"].as_i64(), Some(T0));
    let by_old: Vec<u64> = (0..gen.messages)
        .step_by(4)
        .map(|i| map[&format!("{p}-{i}")].0)
        .collect();
    let got: Vec<u64> = old
        .iter()
        .map(|m| m["messageUid"].as_u64().unwrap())
        .collect();
    assert_eq!(got, by_old, "history ids are the id map's");
    let live_seen: Vec<u64> = new
        .iter()
        .map(|m| m["messageUid"].as_u64().unwrap())
        .collect();
    assert_eq!(live_seen, live_ids, "then the live messages, in send order");

    // PB sync of bob from the start: his imported messages (alice–bob and
    // group 0), then the live ones, ascending, in pages.
    let token = g.admin().token(&bob, "pb-phone", 1);
    let mut pb = PbClient::login_ok(g.addr("pb"), &bob, &token, "pb-phone", 1);
    let (mut since, mut synced) = (0u64, Vec::new());
    loop {
        let page = pb.sync(since, 200);
        assert_eq!(page.code, 0);
        synced.extend(page.messages.iter().map(|m| (m.message_id, m.server_ts)));
        since = synced.last().map_or(since, |m| m.0);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(synced.len(), gen.bob_messages + live_ids.len());
    assert!(synced.windows(2).all(|w| w[0].0 < w[1].0), "ascending ids");
    assert!(synced.windows(2).all(|w| w[0].1 <= w[1].1), "and times");
    assert!(synced[..gen.bob_messages]
        .iter()
        .all(|(id, _)| ids.contains(id)));

    // Idempotent: the same file again stores nothing, with the same ids.
    let map2_path = dir.path().join("ids-again.jsonl");
    let (again, summary) = import(&g, &[file_arg, "--id-map", map2_path.to_str().unwrap()]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        (&summary["imported"], &summary["duplicates"]),
        (&json!(0), &json!(gen.messages)),
        "{summary}"
    );
    assert_eq!(read_map(&map2_path), map, "the same ids");

    // Interrupted half way (the map ends in a torn line): --resume skips
    // what the map confirmed and sends only the rest.
    let text = std::fs::read_to_string(&map_path).unwrap();
    let half: Vec<&str> = text.lines().take(gen.messages / 2).collect();
    std::fs::write(&map_path, format!("{}\n{{\"line\":9", half.join("\n"))).unwrap();
    let (resumed, summary) = import(&g, &[file_arg, "--id-map", map_arg, "--resume"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(
        (
            &summary["skipped"],
            &summary["duplicates"],
            &summary["imported"]
        ),
        (
            &json!(gen.messages / 2),
            &json!(gen.messages - gen.messages / 2),
            &json!(0)
        ),
        "{summary}"
    );
    assert_eq!(read_map(&map_path), map, "the map is whole again");
    // Plain progress lines on a pipe, and the summary.
    assert!(stderr(&first).contains(" imported, 0 duplicates, 0 refused, 0 skipped in "));
    assert_eq!(pb.sync(since, 10).messages.len(), 0, "nothing new stored");
}
