//! The RabbitMQ store against a real broker: the shared `Store` contract
//! (`store_contract`, the same scenarios as the embedded store), plus
//! what only this store has: two nodes on one broker, a restarted node
//! catching up, device cursors shared by nodes, a broker whose object
//! count does not grow with devices, and connections closed under a send
//! loop.
//!
//! They need `IMGATE_TEST_AMQP` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! without it each test says so on stderr and passes. With it, a broker
//! that cannot be reached fails the test. Each test uses its own name
//! prefix and deletes its queues and exchange at the end.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[macro_use]
mod store_contract;

use imgate_adapters::rabbit::{delete_topology, RabbitConfig, RabbitStore};
use imgate_core::store::{DeviceFeed, NewMessage};
use imgate_core::Store;
use store_contract::{next, private, synced, Backend, WAIT};

fn amqp_url(test: &str) -> Option<String> {
    match std::env::var("IMGATE_TEST_AMQP") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("SKIPPED: IMGATE_TEST_AMQP not set ({test} needs a RabbitMQ broker)");
            None
        }
    }
}

/// One test's broker namespace: a unique prefix whose streams and
/// exchange are deleted at the end.
struct Ns {
    url: String,
    prefix: String,
}

impl Ns {
    fn new(url: String, test: &str) -> Ns {
        static N: AtomicU64 = AtomicU64::new(0);
        // Prefixes are at most 64 characters: a test name is cut short.
        let test: String = test.chars().take(32).collect();
        let prefix = format!(
            "t-{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Ns { url, prefix }
    }

    fn url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}prefix={}", self.url, self.prefix)
    }

    async fn open(&self, dir: &std::path::Path, node: u16) -> RabbitStore {
        let config = RabbitConfig::from_url(&self.url(), dir, node).expect("config");
        RabbitStore::open(config)
            .await
            .unwrap_or_else(|e| panic!("cannot open the RabbitMQ store at {}: {e}", self.url))
    }

    async fn attach(&self, store: &RabbitStore, user: &str, device: &str) -> DeviceFeed {
        store.attach_device(user, device).await.expect("attach")
    }

    async fn cleanup(self) {
        drop(self);
    }
}

/// Delete the test's broker objects even when the test failed.
impl Drop for Ns {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(delete_topology(&url, &prefix, &[]))
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("cleanup of {} failed", self.prefix);
        }
    }
}

/// One node of a test's namespace, for the shared contract.
struct Rabbit {
    ns: Ns,
    dir: tempfile::TempDir,
}

impl Rabbit {
    /// None (and a SKIPPED line) without a broker.
    fn new(test: &str) -> Option<Rabbit> {
        let url = amqp_url(test)?;
        Some(Rabbit {
            ns: Ns::new(url, test),
            dir: tempfile::tempdir().expect("temp dir"),
        })
    }
}

impl Backend for Rabbit {
    type S = RabbitStore;

    async fn open(&self) -> RabbitStore {
        self.ns.open(self.dir.path(), 1).await
    }

    async fn attach(&self, store: &RabbitStore, user: &str, device: &str) -> DeviceFeed {
        self.ns.attach(store, user, device).await
    }

    async fn close(&self, store: RabbitStore) {
        store.close().await;
    }
}

contract_tests!(Rabbit::new);

/// Poll a real condition until it holds or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_shared_by_nodes() {
    let Some(url) = amqp_url("groups_are_shared_by_nodes") else {
        return;
    };
    let ns = Ns::new(url, "groups");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ns.open(da.path(), 1).await;
    let b = ns.open(db.path(), 2).await;
    let g = store_contract::team();
    a.put_group(g.clone()).await.unwrap();
    assert_eq!(a.group("g1").await.unwrap(), Some(g.clone()));
    eventually("the group on node B", || async {
        b.group("g1").await.unwrap() == Some(g.clone())
    })
    .await;
    assert!(b.delete_group("g1").await.unwrap());
    assert!(!b.delete_group("g1").await.unwrap());
    assert_eq!(b.group("g1").await.unwrap(), None);
    eventually("the dismissal on node A", || async {
        a.group("g1").await.unwrap().is_none()
    })
    .await;
    a.close().await;
    b.close().await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_positions_and_unread_counts_are_the_same_on_every_node() {
    let Some(url) = amqp_url("read_positions_and_unread_counts_are_the_same_on_every_node") else {
        return;
    };
    let ns = Ns::new(url, "readpos");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ns.open(da.path(), 1).await;
    let b = ns.open(db.path(), 2).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let s = if i % 2 == 0 { &a } else { &b };
        ids.push(
            s.append(private("alice", "bob", &format!("u{i}"), "hi"))
                .await
                .unwrap()
                .message
                .message_id,
        );
    }
    let unread = |s: &RabbitStore| {
        let s = s.clone();
        async move {
            let page = s.conversations("bob", 0, 10).await.unwrap();
            page.conversations.first().map(|c| (c.read_upto, c.unread))
        }
    };
    eventually("three unread on both nodes", || async {
        unread(&a).await == Some((0, 3)) && unread(&b).await == Some((0, 3))
    })
    .await;
    // Read on node A up to the first: node B agrees.
    let r = a
        .mark_read(
            "bob",
            &imgate_core::model::Conversation::private("alice"),
            ids[0],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.read_upto, r.unread), (ids[0], 2));
    eventually("the read position on node B", || async {
        unread(&b).await == Some((ids[0], 2))
    })
    .await;
    a.close().await;
    b.close().await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_reach_every_node_and_later_nodes() {
    let Some(url) = amqp_url("settings_reach_every_node_and_later_nodes") else {
        return;
    };
    let ns = Ns::new(url, "settings");
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = ns.open(da.path(), 1).await;
    let b = ns.open(db.path(), 2).await;
    let mut watch_b = b.watch_settings();
    a.put_setting("policy".into(), "{\"v\":1}".into())
        .await
        .unwrap();
    assert_eq!(
        a.setting("policy").await.unwrap().as_deref(),
        Some("{\"v\":1}")
    );
    let (key, value) = tokio::time::timeout(WAIT, watch_b.recv())
        .await
        .expect("node B sees the change")
        .expect("watch open");
    assert_eq!((key.as_str(), value.as_str()), ("policy", "{\"v\":1}"));
    assert_eq!(
        b.setting("policy").await.unwrap().as_deref(),
        Some("{\"v\":1}")
    );
    b.put_setting("policy".into(), "{\"v\":2}".into())
        .await
        .unwrap();
    // Announcements: every node sees them in order, marked local only on
    // the node that made them.
    let mut ann_a = a.watch_announcements();
    let mut ann_b = b.watch_announcements();
    a.announce("login".into(), "first".into()).await.unwrap();
    b.announce("login".into(), "second".into()).await.unwrap();
    for (rx, local_first) in [(&mut ann_a, true), (&mut ann_b, false)] {
        let mut got = Vec::new();
        while got.len() < 2 {
            let a = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("announcement within the wait")
                .expect("watch open");
            got.push((a.payload.clone(), a.local));
        }
        assert_eq!(
            got,
            [
                ("first".to_string(), local_first),
                ("second".to_string(), !local_first)
            ]
        );
    }
    // A node started afterwards has the last value before it serves.
    let c = ns.open(dc.path(), 3).await;
    assert_eq!(
        c.setting("policy").await.unwrap().as_deref(),
        Some("{\"v\":2}")
    );
    a.close().await;
    b.close().await;
    c.close().await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_and_sync_across_and_dedupe_across() {
    let Some(url) = amqp_url("two_nodes_deliver_and_sync_across_and_dedupe_across") else {
        return;
    };
    let ns = Ns::new(url, "twonodes");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ns.open(da.path(), 1).await;
    let b = ns.open(db.path(), 2).await;
    let mut bob_on_b = ns.attach(&b, "bob", "phone").await;
    let mut bob_live_b = b.subscribe_user("bob");
    let m = a
        .append(private("alice", "bob", "x1", "from A"))
        .await
        .unwrap()
        .message;
    assert_eq!(next(&mut bob_on_b).await, m.message_id);
    let live = tokio::time::timeout(WAIT, bob_live_b.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.message_id, m.message_id);
    eventually("the message in B's sync", || async {
        synced(&b, "bob").await == vec![m.message_id]
    })
    .await;
    b.ack("bob", "phone", m.message_id).await.unwrap();
    // The same resend on both nodes at once: stored once, both answer
    // with the same message.
    let (ra, rb) = tokio::join!(
        a.append(private("alice", "bob", "dup", "one")),
        b.append(private("alice", "bob", "dup", "one"))
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.message.message_id, rb.message.message_id);
    assert!(
        ra.duplicate != rb.duplicate,
        "exactly one of them stored it"
    );
    let dup_id = ra.message.message_id;
    assert_eq!(next(&mut bob_on_b).await, dup_id);
    let expected = vec![m.message_id, dup_id];
    eventually("both nodes agree", || async {
        synced(&a, "bob").await == expected && synced(&b, "bob").await == expected
    })
    .await;
    // Interleaved appends on both nodes: every node sees the same ids in
    // the same order.
    let mut all = expected.clone();
    for i in 0..20 {
        let s = if i % 2 == 0 { &a } else { &b };
        all.push(
            s.append(private("alice", "bob", &format!("i{i}"), "x"))
                .await
                .unwrap()
                .message
                .message_id,
        );
    }
    eventually("identical syncs", || async {
        synced(&a, "bob").await == all && synced(&b, "bob").await == all
    })
    .await;
    drop(bob_on_b);
    a.close().await;
    b.close().await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_from_its_offset() {
    let Some(url) = amqp_url("restarted_node_catches_up_from_its_offset") else {
        return;
    };
    let ns = Ns::new(url, "catchup");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ns.open(da.path(), 1).await;
    let b = ns.open(db.path(), 2).await;
    for i in 0..10 {
        a.append(private("alice", "bob", &format!("a{i}"), "x"))
            .await
            .unwrap();
    }
    eventually("B indexed A's messages", || async {
        synced(&b, "bob").await.len() == 10
    })
    .await;
    let offset_before = b.index_offset();
    b.close().await;
    for i in 0..15 {
        a.append(private("alice", "bob", &format!("b{i}"), "x"))
            .await
            .unwrap();
    }
    let b = ns.open(db.path(), 2).await;
    // `open` returns once caught up: no polling needed.
    assert_eq!(synced(&b, "bob").await, synced(&a, "bob").await);
    assert_eq!(synced(&b, "bob").await.len(), 25);
    assert!(b.index_offset() > offset_before);
    // A fresh node (empty index) rebuilds everything from the stream.
    let dc = tempfile::tempdir().unwrap();
    let c = ns.open(dc.path(), 3).await;
    assert_eq!(synced(&c, "bob").await, synced(&a, "bob").await);
    a.close().await;
    b.close().await;
    c.close().await;
    ns.cleanup().await;
}

/// Close this test's connections from the broker side (as a broker
/// restart would), via `rabbitmqctl`.
fn close_connections_of(prefix: &str) -> usize {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl must be available to close connections");
    assert!(out.status.success(), "rabbitmqctl list_connections failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in text
        .lines()
        .filter(|l| l.contains(&format!("imgate {prefix} ")))
    {
        let Some(pid) = line.split_whitespace().next() else {
            continue;
        };
        let ok = std::process::Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "test: closing connections"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            closed += 1;
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_connections_mid_send_loses_no_acked_message_and_recovers() {
    let Some(url) = amqp_url("closing_connections_mid_send_loses_no_acked_message_and_recovers")
    else {
        return;
    };
    let ns = Ns::new(url, "recover");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ns.open(dir.path(), 1).await);
    let mut feed = ns.attach(&store, "bob", "phone").await;
    let sender = {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), 0);
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut i = 0;
            // Send until 150 acks after the outage, bounded in time.
            while acked.len() < 300 && Instant::now() < deadline {
                match store
                    .append(private("alice", "bob", &format!("r{i}"), "x"))
                    .await
                {
                    Ok(a) => acked.push(a.message.message_id),
                    Err(_) => failed += 1,
                }
                i += 1;
            }
            (acked, failed)
        })
    };
    // Close our connections while the loop runs.
    eventually("some sends acked", || async {
        store.last_message_id("bob").await.unwrap() > 0
    })
    .await;
    let closed = close_connections_of(&ns.prefix);
    assert!(closed >= 2, "closed {closed} connections");
    let (acked, failed) = sender.await.unwrap();
    assert_eq!(
        acked.len(),
        300,
        "the store recovered by itself ({failed} sends failed meanwhile)"
    );
    // Every acked message is in the index (and was in the log)...
    let stored: BTreeSet<u64> = synced(&*store, "bob").await.into_iter().collect();
    for id in &acked {
        assert!(stored.contains(id), "acked message {id} lost");
    }
    // ...and reached the device, whose consumer came back by itself.
    let mut seen = BTreeSet::new();
    while !acked.iter().all(|id| seen.contains(id)) {
        let id = next(&mut feed).await;
        store.ack("bob", "phone", id).await.unwrap();
        seen.insert(id);
    }
    // A fresh node rebuilt from the log agrees.
    let d2 = tempfile::tempdir().unwrap();
    let other = ns.open(d2.path(), 2).await;
    let rebuilt: BTreeSet<u64> = synced(&other, "bob").await.into_iter().collect();
    assert_eq!(rebuilt, stored);
    drop(feed);
    other.close().await;
    Arc::try_unwrap(store)
        .ok()
        .expect("sole owner")
        .close()
        .await;
    ns.cleanup().await;
}

/// This test's broker objects: queues whose names start with the prefix,
/// and the channels of its connections (summed).
fn broker_objects(prefix: &str) -> (Vec<String>, u64) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("rabbitmqctl")
            .args(args)
            .output()
            .expect("rabbitmqctl must be available");
        assert!(out.status.success(), "rabbitmqctl {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut queues: Vec<String> = run(&["-q", "list_queues", "name"])
        .lines()
        .map(str::trim)
        .filter(|q| q.starts_with(&format!("{prefix}.")))
        .map(str::to_string)
        .collect();
    queues.sort();
    let channels = run(&["-q", "list_connections", "client_properties", "channels"])
        .lines()
        .filter(|l| l.contains(&format!("imgate {prefix} ")))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum();
    (queues, channels)
}

/// DESIGN §7: the broker's queues and channels do not depend on how many
/// devices there are; every device still gets its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_objects_do_not_grow_with_devices() {
    let Some(url) = amqp_url("broker_objects_do_not_grow_with_devices") else {
        return;
    };
    let ns = Ns::new(url, "objects");
    let dir = tempfile::tempdir().unwrap();
    let store = ns.open(dir.path(), 1).await;
    let mut feeds = Vec::new();
    for i in 0..10 {
        feeds.push(ns.attach(&store, &format!("u{i}"), "phone").await);
    }
    let with_10 = broker_objects(&ns.prefix);
    assert_eq!(
        with_10.0,
        [
            format!("{}.control", ns.prefix),
            format!("{}.log", ns.prefix),
            format!("{}.state", ns.prefix)
        ]
    );
    for i in 10..500 {
        feeds.push(ns.attach(&store, &format!("u{i}"), "phone").await);
    }
    assert_eq!(store.attached_devices(), 500);
    assert_eq!(
        broker_objects(&ns.prefix),
        with_10,
        "same queues and channels"
    );
    // Every device gets its own message (a group of all 500 users).
    let everyone: Vec<String> = (0..500).map(|i| format!("u{i}")).collect();
    let m = store
        .append(NewMessage {
            recipients: everyone,
            ..private("sender", "u0", "all", "to everyone")
        })
        .await
        .unwrap()
        .message;
    for feed in &mut feeds {
        assert_eq!(next(feed).await, m.message_id);
    }
    drop(feeds);
    store.close().await;
    ns.cleanup().await;
}

/// A device acks on node A and reconnects to node B: it resumes where it
/// acked (the cursor went through the control stream), and a device first
/// seen on A is known on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_resumes_on_another_node_where_it_acked() {
    let Some(url) = amqp_url("a_device_resumes_on_another_node_where_it_acked") else {
        return;
    };
    let ns = Ns::new(url, "resume");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ns.open(da.path(), 1).await;
    let b = ns.open(db.path(), 2).await;
    let mut moves_on_b = b.watch_cursors();
    let mut phone = ns.attach(&a, "bob", "phone").await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            a.append(private("alice", "bob", &format!("m{i}"), "x"))
                .await
                .unwrap()
                .message
                .message_id,
        );
    }
    for &id in &ids {
        assert_eq!(next(&mut phone).await, id);
    }
    for &id in &ids[..6] {
        a.ack("bob", "phone", id).await.unwrap();
    }
    drop(phone);
    // B hears of the move (a real event, not a sleep).
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let moved = tokio::time::timeout(left, moves_on_b.recv())
            .await
            .expect("B never heard of the cursor move")
            .expect("cursor watch closed");
        assert!(!moved.local);
        if moved.user == "bob" && moved.device == "phone" && moved.cursor >= ids[5] {
            break;
        }
    }
    let mut on_b = ns.attach(&b, "bob", "phone").await;
    for &id in &ids[6..] {
        assert_eq!(next(&mut on_b).await, id, "resumed after the acked prefix");
    }
    // Messages sent while it was away, on either node, come next.
    let later = b
        .append(private("alice", "bob", "later", "x"))
        .await
        .unwrap()
        .message
        .message_id;
    assert_eq!(next(&mut on_b).await, later);
    drop(on_b);
    // A new device registered on A (once A indexed everything so far: a
    // new device starts after what its node has seen): B knows where it
    // starts.
    eventually("A indexed B's message", || async {
        synced(&a, "bob").await.contains(&later)
    })
    .await;
    let tablet = ns.attach(&a, "bob", "tablet").await;
    drop(tablet);
    let missed = a
        .append(private("alice", "bob", "while-away", "x"))
        .await
        .unwrap()
        .message
        .message_id;
    eventually("B indexed it", || async {
        synced(&b, "bob").await.contains(&missed)
    })
    .await;
    let mut tablet_b = ns.attach(&b, "bob", "tablet").await;
    assert_eq!(
        next(&mut tablet_b).await,
        missed,
        "not treated as a new device on B"
    );
    drop(tablet_b);
    a.close().await;
    b.close().await;
    ns.cleanup().await;
}

/// Devices that come and go with unacked deliveries (phones dropping off
/// the network) cost the broker nothing: the node's connections stay the
/// same, and every message reaches the device that stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_coming_and_going_leave_the_connections_alone() {
    let Some(url) = amqp_url("devices_coming_and_going_leave_the_connections_alone") else {
        return;
    };
    let ns = Ns::new(url, "detach");
    let dir = tempfile::tempdir().unwrap();
    let store = ns.open(dir.path(), 1).await;
    let mut watch = ns.attach(&store, "bob", "watch").await;
    let before = broker_objects(&ns.prefix);
    for i in 0..150 {
        let device = format!("phone{}", i % 3);
        let mut phone = ns.attach(&store, "bob", &device).await;
        let id = store
            .append(private("alice", "bob", &format!("d{i}"), "x"))
            .await
            .unwrap()
            .message
            .message_id;
        // The phone sees its pending messages and this one, acks some and
        // drops off with the rest unacked.
        loop {
            let got = next(&mut phone).await;
            if got % 2 == 0 {
                store.ack("bob", &device, got).await.unwrap();
            }
            if got == id {
                break;
            }
        }
        drop(phone);
        assert_eq!(next(&mut watch).await, id);
        store.ack("bob", "watch", id).await.unwrap();
    }
    assert_eq!(broker_objects(&ns.prefix), before);
    drop(watch);
    store.close().await;
    ns.cleanup().await;
}
