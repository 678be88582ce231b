//! Nothing acked is lost: kill -9 right after the acks, restart on the same
//! data dir, every acked message is there (DESIGN §3.1).

use std::sync::Arc;

use imgate_conformance::Gateway;

#[test]
fn two_hundred_acked_messages_survive_kill_9() {
    let mut g = Gateway::start();
    let tokens: Vec<String> = (0..4)
        .map(|i| g.admin().token(&format!("sender{i}"), "dev", 3))
        .collect();
    let base = g.http_url();
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for (t, token) in tokens.into_iter().enumerate() {
        let (base, acked) = (base.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            let c = imgate_conformance::Client::new(&base, &token);
            for i in 0..50 {
                let r = c.send_text("durable-bob", &format!("t{t}-m{i}"), &format!("t{t}-m{i}"));
                assert_eq!(r.code(), 0, "{:?}", r.body);
                acked
                    .lock()
                    .unwrap()
                    .push(r.result()["messageUid"].as_u64().unwrap());
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    g.kill9();
    g.restart();
    let bob = g.client("durable-bob", "phone");
    let synced: Vec<u64> = bob
        .sync_all(0)
        .iter()
        .map(|m| m["messageUid"].as_u64().unwrap())
        .collect();
    let mut acked = acked.lock().unwrap().clone();
    acked.sort();
    assert_eq!(acked.len(), 200);
    assert_eq!(synced, acked, "every acked message is stored, in id order");
    // New ids after the restart keep increasing.
    let r = g
        .client("sender0", "dev")
        .send_text("durable-bob", "after restart", "after");
    assert!(r.result()["messageUid"].as_u64().unwrap() > *acked.last().unwrap());
    // And a resend of a message acked before the crash is still idempotent.
    let again = g
        .client("sender0", "dev")
        .send_text("durable-bob", "t0-m0", "t0-m0");
    assert_eq!(again.result()["duplicate"], true);
}

#[test]
fn graceful_shutdown_exits_cleanly_with_open_streams() {
    let mut g = Gateway::start();
    let bob = g.client("bob", "web");
    let _stream = imgate_conformance::SseReader::open(
        &g.http_url(),
        &bob.token,
        None,
        std::time::Duration::from_millis(200),
    );
    let status = g.terminate().expect("exit status");
    assert!(
        status.success(),
        "imgate exited with {status:?}\n{}",
        g.log()
    );
    assert!(g.log().contains("stopped"));
}
