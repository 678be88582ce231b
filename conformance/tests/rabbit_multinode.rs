//! Two real gateway processes on one RabbitMQ (DESIGN §7): a user on node
//! A messages a user on node B; kill -9 node A with messages acked, node
//! B has them all.
//!
//! Needs `IMGATE_TEST_AMQP` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! without it each test says so on stderr and passes. The nodes share an
//! admin secret (so a token works on either) and a name prefix unique to
//! the test, whose queues are deleted at the end.

use std::time::{Duration, Instant};

use imgate_conformance::gateway::{amqp_with_prefix, delete_rabbit_queues};
use imgate_conformance::{unique, Client, Gateway, SseReader, WAIT};

fn amqp_url(test: &str) -> Option<String> {
    match std::env::var("IMGATE_TEST_AMQP") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("SKIPPED: IMGATE_TEST_AMQP not set ({test} needs a RabbitMQ broker)");
            None
        }
    }
}

/// Two nodes on one broker and prefix; queues deleted on drop.
struct Cluster {
    a: Gateway,
    b: Gateway,
    prefix: String,
}

impl Cluster {
    fn start(url: &str) -> Cluster {
        let prefix = unique("multi");
        let store = amqp_with_prefix(url, &prefix);
        let secret = unique("secret");
        let a = Gateway::start_with(&[
            ("IMGATE_STORE", &store),
            ("IMGATE_NODE_ID", "1"),
            ("IMGATE_ADMIN_SECRET", &secret),
        ]);
        let b = Gateway::start_with(&[
            ("IMGATE_STORE", &store),
            ("IMGATE_NODE_ID", "2"),
            ("IMGATE_ADMIN_SECRET", &secret),
        ]);
        Cluster { a, b, prefix }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.a.kill9();
        self.b.kill9();
        delete_rabbit_queues(&self.prefix);
    }
}

fn uids(messages: &[serde_json::Value]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| m["messageUid"].as_u64())
        .collect()
}

/// Poll a real condition until it holds, within [`WAIT`].
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn user_on_node_a_messages_user_on_node_b() {
    let Some(url) = amqp_url("user_on_node_a_messages_user_on_node_b") else {
        return;
    };
    let c = Cluster::start(&url);
    let alice = c.a.client("mn-alice", "laptop");
    let bob = c.b.client("mn-bob", "web");
    let mut events = SseReader::open(
        &c.b.http_url(),
        &bob.token,
        None,
        Duration::from_millis(200),
    );
    let r = alice.send_text("mn-bob", "hello from node A", "mn-1");
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let uid = r.result()["messageUid"].as_u64().expect("messageUid");
    // SSE on node B receives it...
    let ev = loop {
        let ev = events.next_event(WAIT).expect("an SSE event on node B");
        if ev.id.is_some() {
            break ev;
        }
    };
    assert_eq!(ev.id.as_deref(), Some(uid.to_string().as_str()));
    let msg: serde_json::Value = serde_json::from_str(&ev.data).expect("event JSON");
    assert_eq!(msg["sender"], "mn-alice");
    assert_eq!(msg["payload"]["searchableContent"], "hello from node A");
    // ...and sync on node B shows it (and on A, for alice).
    eventually("sync on node B", || uids(&bob.sync_all(0)) == vec![uid]);
    assert_eq!(uids(&alice.sync_all(0)), vec![uid]);
    // Bob answers from node B; alice sees it on node A.
    let r = bob.send_text("mn-alice", "hi A, this is B", "mn-2");
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let back = r.result()["messageUid"].as_u64().expect("messageUid");
    assert!(back > uid);
    eventually("sync on node A", || {
        uids(&alice.sync_all(0)) == vec![uid, back]
    });
    // A resend of the first message through the other node is a duplicate.
    let again =
        Client::new(&c.b.http_url(), &alice.token).send_text("mn-bob", "hello from node A", "mn-1");
    assert_eq!(again.code(), 0, "{:?}", again.body);
    assert_eq!(again.result()["messageUid"].as_u64(), Some(uid));
    assert_eq!(uids(&bob.sync_all(0)), vec![uid, back]);
}

#[test]
fn kill_9_node_a_after_acks_node_b_has_everything() {
    let Some(url) = amqp_url("kill_9_node_a_after_acks_node_b_has_everything") else {
        return;
    };
    let mut c = Cluster::start(&url);
    let senders: Vec<Client> = (0..4)
        .map(|i| c.a.client(&format!("mn-sender{i}"), "dev"))
        .collect();
    let acked = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (t, sender) in senders.iter().enumerate() {
            let acked = &acked;
            s.spawn(move || {
                for i in 0..25 {
                    let r = sender.send_text(
                        "mn-durable",
                        &format!("t{t}-m{i}"),
                        &format!("t{t}-m{i}"),
                    );
                    assert_eq!(r.code(), 0, "{:?}", r.body);
                    acked
                        .lock()
                        .unwrap()
                        .push(r.result()["messageUid"].as_u64().expect("messageUid"));
                }
            });
        }
    });
    c.a.kill9();
    let mut acked = acked.into_inner().unwrap();
    acked.sort();
    assert_eq!(acked.len(), 100);
    let reader = c.b.client("mn-durable", "phone");
    eventually("every acked message on node B", || {
        uids(&reader.sync_all(0)) == acked
    });
    // Node A comes back and catches up too.
    c.a.restart();
    let on_a = c.a.client("mn-durable", "phone");
    assert_eq!(uids(&on_a.sync_all(0)), acked);
}
