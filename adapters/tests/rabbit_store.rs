//! The RabbitMQ store against a real broker: the shared `Store` contract
//! (`store_contract`, the same scenarios as the embedded store), plus
//! what only this store has: two nodes on one broker, a restarted node
//! catching up, full device queues, and connections closed under a send
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
use imgate_core::model::Conversation;
use imgate_core::store::DeviceFeed;
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

/// One test's broker namespace: a unique prefix, the stores opened in it
/// and the device queues to delete at the end.
struct Ns {
    url: String,
    prefix: String,
    queues: std::sync::Mutex<BTreeSet<String>>,
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
        Ns {
            url,
            prefix,
            queues: Default::default(),
        }
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
        self.queues
            .lock()
            .unwrap()
            .insert(store.device_queue_name(user, device));
        store.attach_device(user, device).await.expect("attach")
    }

    async fn cleanup(self) {
        drop(self);
    }
}

/// Delete the test's broker objects even when the test failed.
impl Drop for Ns {
    fn drop(&mut self) {
        let queues: Vec<String> = match self.queues.lock() {
            Ok(q) => q.iter().cloned().collect(),
            Err(p) => p.into_inner().iter().cloned().collect(),
        };
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(delete_topology(&url, &prefix, &queues))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_device_queue_rejects_the_publish_instead_of_dropping() {
    let Some(url) = amqp_url("full_device_queue_rejects_the_publish_instead_of_dropping") else {
        return;
    };
    let ns = Ns::new(url, "overflow");
    let dir = tempfile::tempdir().unwrap();
    let config =
        RabbitConfig::from_url(&format!("{}&device_max_length=3", ns.url()), dir.path(), 1)
            .expect("config");
    let store = RabbitStore::open(config).await.expect("open");
    drop(ns.attach(&store, "bob", "old-tablet").await);
    // Quorum queues apply the limit once they are over it, so a publish
    // or two past it may still be taken; then the broker nacks and the
    // append fails instead of anything being dropped.
    let mut accepted = 0;
    let err = loop {
        match store
            .append(private("alice", "bob", &format!("f{accepted}"), "x"))
            .await
        {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted <= 6, "device queue limit never enforced");
    };
    assert!(accepted >= 3, "accepted only {accepted}");
    assert!(
        matches!(&err, imgate_core::StoreError::Unavailable(m) if m.contains("not stored")),
        "{err}"
    );
    // The refused message was taken back: not in anyone's sync or history.
    let refused = format!("f{accepted}");
    let synced = |page: imgate_core::store::SyncPage| -> Vec<String> {
        page.messages
            .iter()
            .map(|m| m.client_msg_id.clone())
            .collect()
    };
    let alice_sync = synced(store.sync("alice", 0, 100).await.unwrap());
    assert_eq!(alice_sync.len(), accepted, "{alice_sync:?}");
    assert!(!alice_sync.contains(&refused));
    let history = synced(
        store
            .history("bob", &Conversation::private("alice"), 0, 100)
            .await
            .unwrap(),
    );
    assert!(!history.contains(&refused), "{history:?}");
    // Nothing pending was dropped: the device still gets the accepted
    // ones, and never the refused one.
    let mut feed = ns.attach(&store, "bob", "old-tablet").await;
    let mut delivered = Vec::new();
    for _ in 0..accepted {
        let id = next(&mut feed).await;
        delivered.push(id);
        store.ack("bob", "old-tablet", id).await.unwrap();
    }
    // With room again, the sender's resend with the same id is stored as
    // a new message (not answered as a duplicate of the withdrawn one).
    let again = store
        .append(private("alice", "bob", &refused, "x"))
        .await
        .expect("resend after the queue drained");
    assert!(!again.duplicate);
    assert_eq!(next(&mut feed).await, again.message.message_id);
    assert!(!delivered.contains(&again.message.message_id));
    drop(feed);
    store.close().await;
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

/// One `rabbitmqctl list_connections` column (`channels`, `pid`, ...) of
/// this test's device-consuming connections, a value per connection.
fn device_connections(prefix: &str, column: &str) -> Vec<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "client_properties", column])
        .output()
        .expect("rabbitmqctl must be available");
    assert!(out.status.success(), "rabbitmqctl list_connections failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("imgate {prefix} node 1 devices")))
        .filter_map(|l| Some(l.split_whitespace().last()?.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_consumers_spread_over_device_connections() {
    let Some(url) = amqp_url("device_consumers_spread_over_device_connections") else {
        return;
    };
    let ns = Ns::new(url, "spread");
    let dir = tempfile::tempdir().unwrap();
    let config =
        RabbitConfig::from_url(&format!("{}&device_connections=3", ns.url()), dir.path(), 1)
            .expect("config");
    let store = RabbitStore::open(config).await.expect("open");
    let mut feeds = Vec::new();
    for i in 0..30 {
        feeds.push(ns.attach(&store, "u", &format!("d{i}")).await);
    }
    // One channel per attached device, on all three connections.
    eventually("channels on every device connection", || {
        let per_conn: Vec<u64> = device_connections(&ns.prefix, "channels")
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        async move {
            per_conn.len() == 3
                && per_conn.iter().all(|&c| c > 0)
                && per_conn.iter().sum::<u64>() == 30
        }
    })
    .await;
    // And every device gets its messages.
    let m = store
        .append(private("v", "u", "s1", "to all devices"))
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

/// Devices that come and go with unacked deliveries (phones dropping off
/// the network) must never cost the connection their channels share: a
/// frame after a channel's close makes RabbitMQ close the whole
/// connection, and every other device on it would be cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detaching_devices_never_breaks_their_shared_connection() {
    let Some(url) = amqp_url("detaching_devices_never_breaks_their_shared_connection") else {
        return;
    };
    let ns = Ns::new(url, "detach");
    let dir = tempfile::tempdir().unwrap();
    let config =
        RabbitConfig::from_url(&format!("{}&device_connections=1", ns.url()), dir.path(), 1)
            .expect("config");
    let store = RabbitStore::open(config).await.expect("open");
    let mut watch = ns.attach(&store, "bob", "watch").await;
    let before = device_connections(&ns.prefix, "pid");
    assert_eq!(before.len(), 1, "one device connection: {before:?}");
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
    assert_eq!(
        device_connections(&ns.prefix, "pid"),
        before,
        "the device connection was closed by the broker and re-opened"
    );
    drop(watch);
    store.close().await;
    ns.cleanup().await;
}
