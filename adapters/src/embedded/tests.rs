//! Behavioral tests of the embedded store (real redb files in a temp dir).

use std::sync::Arc;

use imgate_core::model::{Conversation, MessagePayload};
use imgate_core::store::{Group, NewMessage};
use imgate_core::Store;

use super::{EmbeddedConfig, EmbeddedStore};

fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open store")
}

fn private(from: &str, to: &str, cmid: &str, text: &str) -> NewMessage {
    let mut recipients = vec![from.to_string(), to.to_string()];
    recipients.sort();
    recipients.dedup();
    NewMessage {
        sender: from.into(),
        sender_device: Some(format!("{from}-phone")),
        conversation: Conversation::private(to),
        payload: MessagePayload::text(text),
        client_msg_id: cmid.into(),
        to_users: vec![],
        recipients,
    }
}

#[tokio::test]
async fn append_then_sync_in_order_with_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut ids = Vec::new();
    for i in 0..25 {
        let a = store
            .append(private("alice", "bob", &format!("c{i}"), &format!("m{i}")))
            .await
            .unwrap();
        assert!(!a.duplicate);
        ids.push(a.message.message_id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let mut got = Vec::new();
    let mut since = 0;
    loop {
        let page = store.sync("bob", since, 10).await.unwrap();
        got.extend(page.messages.iter().map(|m| m.message_id));
        since = page.messages.last().map(|m| m.message_id).unwrap_or(since);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(got, ids);
    assert_eq!(
        store.sync("alice", 0, 100).await.unwrap().messages.len(),
        25
    );
    assert!(store
        .sync("carol", 0, 100)
        .await
        .unwrap()
        .messages
        .is_empty());
    assert_eq!(
        store.last_message_id("bob").await.unwrap(),
        *ids.last().unwrap()
    );
    let hist = store
        .history("bob", &Conversation::private("alice"), 0, 5)
        .await
        .unwrap();
    assert_eq!(hist.messages.len(), 5);
    assert!(hist.has_more);
    assert_eq!(hist.messages[0].message_id, *ids.last().unwrap());
}

#[tokio::test]
async fn resend_is_idempotent_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let a = store
        .append(private("alice", "bob", "same", "hi"))
        .await
        .unwrap();
    let b = store
        .append(private("alice", "bob", "same", "hi again"))
        .await
        .unwrap();
    assert!(b.duplicate);
    assert_eq!(a.message.message_id, b.message.message_id);
    assert_eq!(b.message.payload.searchable_content, "hi");
    store.close().await;
    let store = open(&dir);
    let c = store
        .append(private("alice", "bob", "same", "third"))
        .await
        .unwrap();
    assert!(c.duplicate);
    assert_eq!(c.message.message_id, a.message.message_id);
    assert_eq!(store.sync("bob", 0, 100).await.unwrap().messages.len(), 1);
    // New ids after reopen are above the old ones.
    let d = store
        .append(private("alice", "bob", "new", "x"))
        .await
        .unwrap();
    assert!(d.message.message_id > a.message.message_id);
}

#[tokio::test]
async fn devices_get_pending_then_live_and_acks_stop_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // bob's tablet registers, goes away.
    drop(store.attach_device("bob", "tablet").await.unwrap());
    let m1 = store
        .append(private("alice", "bob", "1", "one"))
        .await
        .unwrap()
        .message;
    let m2 = store
        .append(private("alice", "bob", "2", "two"))
        .await
        .unwrap()
        .message;
    let mut feed = store.attach_device("bob", "tablet").await.unwrap();
    assert_eq!(feed.next().await.unwrap().message_id, m1.message_id);
    assert_eq!(feed.next().await.unwrap().message_id, m2.message_id);
    store.ack("bob", "tablet", m1.message_id).await.unwrap();
    let m3 = store
        .append(private("alice", "bob", "3", "three"))
        .await
        .unwrap()
        .message;
    assert_eq!(feed.next().await.unwrap().message_id, m3.message_id);
    drop(feed);
    store.close().await;
    // Reopen: m2 and m3 are still unacked, m1 is not.
    let store = open(&dir);
    let mut feed = store.attach_device("bob", "tablet").await.unwrap();
    assert_eq!(feed.next().await.unwrap().message_id, m2.message_id);
    assert_eq!(feed.next().await.unwrap().message_id, m3.message_id);
}

#[tokio::test]
async fn sender_device_is_skipped_but_its_other_devices_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut phone = store.attach_device("alice", "alice-phone").await.unwrap();
    let mut laptop = store.attach_device("alice", "alice-laptop").await.unwrap();
    let mut bob = store.subscribe_user("bob");
    let m = store
        .append(private("alice", "bob", "1", "one"))
        .await
        .unwrap()
        .message;
    assert_eq!(laptop.next().await.unwrap().message_id, m.message_id);
    assert_eq!(bob.next().await.unwrap().message_id, m.message_id);
    let m2 = store
        .append(private("bob", "alice", "2", "two"))
        .await
        .unwrap()
        .message;
    // The phone sent m, so the first thing it sees is bob's reply.
    assert_eq!(phone.next().await.unwrap().message_id, m2.message_id);
}

#[tokio::test]
async fn recall_removes_from_history_and_pending() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    drop(store.attach_device("bob", "phone").await.unwrap());
    let m = store
        .append(private("alice", "bob", "1", "oops"))
        .await
        .unwrap()
        .message;
    let (gone, recipients) = store.recall(m.message_id).await.unwrap().unwrap();
    assert_eq!(gone.message_id, m.message_id);
    assert_eq!(recipients, vec!["alice".to_string(), "bob".to_string()]);
    assert!(store.sync("bob", 0, 10).await.unwrap().messages.is_empty());
    assert!(store.get(m.message_id).await.unwrap().is_none());
    assert!(store.recall(m.message_id).await.unwrap().is_none());
    let after = store
        .append(private("alice", "bob", "2", "fine"))
        .await
        .unwrap()
        .message;
    let mut feed = store.attach_device("bob", "phone").await.unwrap();
    assert_eq!(feed.next().await.unwrap().message_id, after.message_id);
}

#[tokio::test]
async fn groups_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let g = Group {
        id: "g1".into(),
        name: "team".into(),
        owner: "alice".into(),
        members: ["alice", "bob"].iter().map(|s| s.to_string()).collect(),
    };
    store.put_group(g.clone()).await.unwrap();
    assert_eq!(store.group("g1").await.unwrap(), Some(g));
    assert!(store.delete_group("g1").await.unwrap());
    assert!(!store.delete_group("g1").await.unwrap());
    assert_eq!(store.group("g1").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_group_committed_with_unique_ordered_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    let mut tasks = Vec::new();
    for i in 0..300 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.append(private("alice", "bob", &format!("k{i}"), "x"))
                .await
                .unwrap()
                .message
                .message_id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300);
    let synced: Vec<u64> = store
        .sync("bob", 0, 1000)
        .await
        .unwrap()
        .messages
        .iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(synced, ids);
}

#[tokio::test]
async fn settings_are_durable_and_watched() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut watch = store.watch_settings();
    assert_eq!(store.setting("policy").await.unwrap(), None);
    store
        .put_setting("policy".into(), "{\"v\":1}".into())
        .await
        .unwrap();
    let (key, value) = watch.recv().await.unwrap();
    assert_eq!((key.as_str(), value.as_str()), ("policy", "{\"v\":1}"));
    // One node: announcements reach this process's watchers, as local.
    let mut ann = store.watch_announcements();
    store.announce("login".into(), "x".into()).await.unwrap();
    let a = ann.recv().await.unwrap();
    assert_eq!(
        (a.topic.as_str(), a.payload.as_str(), a.local),
        ("login", "x", true)
    );
    store.close().await;
    let store = open(&dir);
    assert_eq!(
        store.setting("policy").await.unwrap().as_deref(),
        Some("{\"v\":1}")
    );
}
