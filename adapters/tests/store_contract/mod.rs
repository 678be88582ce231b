//! The `Store` contract, written once: DESIGN §7 says both stores "pass
//! the same tests", so every scenario here runs against the embedded store
//! (`tests/embedded_store.rs`) and the RabbitMQ store
//! (`tests/rabbit_store.rs`) through a small [`Backend`] that opens,
//! reopens and closes the store under test. What only one store has
//! (several nodes, broker failures, queue limits) stays in its own file.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use imgate_core::model::Message;
use imgate_core::model::{Conversation, MessagePayload};
use imgate_core::store::{DeviceFeed, Group, ImportMessage, NewMessage};
use imgate_core::{now_ms, utc_day, Store};

mod semantics;
pub use semantics::*;

/// One `#[tokio::test]` per contract scenario. `$make` turns the test's
/// name into `Option<impl Backend>` (None: skipped, e.g. no broker).
macro_rules! contract_tests {
    ($make:expr) => {
        contract_tests!(@each $make;
            append_then_sync_in_order_with_pages,
            resend_is_idempotent_and_survives_reopen,
            devices_get_pending_then_live_and_acks_stop_redelivery,
            sender_device_is_skipped_but_its_other_devices_sync,
            recall_removes_from_history_and_pending,
            get_for_answers_recipients_only,
            groups_round_trip,
            concurrent_appends_get_unique_ordered_ids,
            settings_are_durable_and_watched_and_announcements_local,
            import_keeps_time_order_is_idempotent_and_is_history_only,
            import_batches_below_live_history_interleave_in_time_order,
            daily_count_is_stored_messages_and_survives_reopen,
            live_only_messages_are_delivered_never_stored,
            expired_messages_are_not_delivered_synced_or_listed,
            retention_prunes_old_history_and_conversations,
            conversations_count_unread_and_mark_read_is_durable,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            if let Some(backend) = $make(stringify!($name)) {
                store_contract::$name(&backend).await;
            }
        }
    )*};
}

/// Bounded wait for anything a store delivers.
pub const WAIT: Duration = Duration::from_secs(20);

/// How a test file opens the store it checks.
pub trait Backend {
    type S: Store + 'static;
    /// Open the store, or reopen it on the same data after [`Self::close`].
    fn open(&self) -> impl Future<Output = Self::S>;
    /// Attach a device (a backend may note it for cleanup).
    fn attach(&self, store: &Self::S, user: &str, device: &str)
        -> impl Future<Output = DeviceFeed>;
    /// Close the store and release its files.
    fn close(&self, store: Self::S) -> impl Future<Output = ()>;
}

pub fn private(from: &str, to: &str, cmid: &str, text: &str) -> NewMessage {
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

/// The next delivery's id, within [`WAIT`].
pub async fn next(feed: &mut DeviceFeed) -> u64 {
    tokio::time::timeout(WAIT, feed.next())
        .await
        .expect("a delivery in time")
        .expect("feed open")
        .message_id
}

/// Every id `user` can sync, following pages.
pub async fn synced(store: &impl Store, user: &str) -> Vec<u64> {
    let mut got = Vec::new();
    let mut since = 0;
    loop {
        let page = store.sync(user, since, 10).await.unwrap();
        got.extend(page.messages.iter().map(|m| m.message_id));
        since = page.messages.last().map(|m| m.message_id).unwrap_or(since);
        if !page.has_more {
            return got;
        }
    }
}

pub async fn append_then_sync_in_order_with_pages<B: Backend>(b: &B) {
    let store = b.open().await;
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
    assert_eq!(synced(&store, "bob").await, ids);
    assert_eq!(synced(&store, "alice").await.len(), 25);
    assert!(synced(&store, "carol").await.is_empty());
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
    let third = store.get(ids[3]).await.unwrap().expect("stored");
    assert_eq!(third.payload.searchable_content, "m3");
    b.close(store).await;
}

pub async fn resend_is_idempotent_and_survives_reopen<B: Backend>(b: &B) {
    let store = b.open().await;
    let a = store
        .append(private("alice", "bob", "same", "hi"))
        .await
        .unwrap();
    let again = store
        .append(private("alice", "bob", "same", "hi again"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(a.message.message_id, again.message.message_id);
    assert_eq!(again.message.payload.searchable_content, "hi");
    b.close(store).await;
    let store = b.open().await;
    let third = store
        .append(private("alice", "bob", "same", "third"))
        .await
        .unwrap();
    assert!(third.duplicate);
    assert_eq!(third.message.message_id, a.message.message_id);
    assert_eq!(synced(&store, "bob").await.len(), 1);
    // New ids after reopening are above the old ones.
    let fresh = store
        .append(private("alice", "bob", "new", "x"))
        .await
        .unwrap();
    assert!(fresh.message.message_id > a.message.message_id);
    b.close(store).await;
}

pub async fn devices_get_pending_then_live_and_acks_stop_redelivery<B: Backend>(b: &B) {
    let store = b.open().await;
    // bob's tablet registers, goes away.
    drop(b.attach(&store, "bob", "tablet").await);
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
    let mut feed = b.attach(&store, "bob", "tablet").await;
    assert_eq!(next(&mut feed).await, m1.message_id);
    assert_eq!(next(&mut feed).await, m2.message_id);
    store.ack("bob", "tablet", m1.message_id).await.unwrap();
    let m3 = store
        .append(private("alice", "bob", "3", "three"))
        .await
        .unwrap()
        .message;
    assert_eq!(next(&mut feed).await, m3.message_id);
    drop(feed);
    b.close(store).await;
    // Reopened: m2 and m3 are still unacked, m1 is not.
    let store = b.open().await;
    let mut feed = b.attach(&store, "bob", "tablet").await;
    assert_eq!(next(&mut feed).await, m2.message_id);
    assert_eq!(next(&mut feed).await, m3.message_id);
    drop(feed);
    b.close(store).await;
}

pub async fn sender_device_is_skipped_but_its_other_devices_sync<B: Backend>(b: &B) {
    let store = b.open().await;
    let mut phone = b.attach(&store, "alice", "alice-phone").await;
    let mut laptop = b.attach(&store, "alice", "alice-laptop").await;
    let mut bob = store.subscribe_user("bob");
    let m = store
        .append(private("alice", "bob", "1", "one"))
        .await
        .unwrap()
        .message;
    assert_eq!(next(&mut laptop).await, m.message_id);
    let live = tokio::time::timeout(WAIT, bob.next())
        .await
        .expect("a live message in time")
        .expect("feed open");
    assert_eq!(live.message_id, m.message_id);
    let m2 = store
        .append(private("bob", "alice", "2", "two"))
        .await
        .unwrap()
        .message;
    // The phone sent m, so the first thing it sees is bob's reply.
    assert_eq!(next(&mut phone).await, m2.message_id);
    drop((phone, laptop));
    b.close(store).await;
}

pub async fn recall_removes_from_history_and_pending<B: Backend>(b: &B) {
    let store = b.open().await;
    drop(b.attach(&store, "bob", "phone").await);
    let m = store
        .append(private("alice", "bob", "1", "oops"))
        .await
        .unwrap()
        .message;
    let (gone, recipients) = store.recall(m.message_id).await.unwrap().unwrap();
    assert_eq!(gone.message_id, m.message_id);
    assert_eq!(recipients, vec!["alice".to_string(), "bob".to_string()]);
    assert!(synced(&store, "bob").await.is_empty());
    assert!(store.get(m.message_id).await.unwrap().is_none());
    assert!(store.recall(m.message_id).await.unwrap().is_none());
    let after = store
        .append(private("alice", "bob", "2", "fine"))
        .await
        .unwrap()
        .message;
    let mut feed = b.attach(&store, "bob", "phone").await;
    assert_eq!(next(&mut feed).await, after.message_id);
    drop(feed);
    b.close(store).await;
}

pub async fn get_for_answers_recipients_only<B: Backend>(b: &B) {
    let store = b.open().await;
    let m = store
        .append(private("alice", "bob", "1", "for bob"))
        .await
        .unwrap()
        .message;
    let mut to_some = private("alice", "g1", "2", "for bob only");
    to_some.conversation = Conversation::group("g1");
    to_some.to_users = vec!["bob".into()];
    to_some.recipients = vec!["alice".into(), "bob".into()];
    let g = store.append(to_some).await.unwrap().message;
    for id in [m.message_id, g.message_id] {
        for user in ["alice", "bob"] {
            let found = store.get_for(id, user).await.unwrap();
            assert_eq!(found.map(|f| f.message_id), Some(id), "{user} has {id}");
        }
        assert!(store.get_for(id, "mallory").await.unwrap().is_none());
    }
    assert!(store
        .get_for(m.message_id + 1_000_000, "bob")
        .await
        .unwrap()
        .is_none());
    store.recall(m.message_id).await.unwrap();
    assert!(store.get_for(m.message_id, "bob").await.unwrap().is_none());
    b.close(store).await;
}

pub fn team() -> Group {
    Group {
        id: "g1".into(),
        name: "team".into(),
        owner: "alice".into(),
        members: ["alice", "bob"].iter().map(|s| s.to_string()).collect(),
    }
}

pub async fn groups_round_trip<B: Backend>(b: &B) {
    let store = b.open().await;
    let g = team();
    store.put_group(g.clone()).await.unwrap();
    assert_eq!(store.group("g1").await.unwrap(), Some(g.clone()));
    b.close(store).await;
    let store = b.open().await;
    assert_eq!(store.group("g1").await.unwrap(), Some(g.clone()), "durable");
    // Export pages through the groups by id.
    let g0 = Group {
        id: "g0".into(),
        ..g.clone()
    };
    store.put_group(g0.clone()).await.unwrap();
    let (page, more) = store.scan_groups("", 1).await.unwrap();
    assert_eq!((page, more), (vec![g0.clone()], true));
    let (page, more) = store.scan_groups("g0", 10).await.unwrap();
    assert_eq!((page, more), (vec![g.clone()], false));
    assert!(store.delete_group("g0").await.unwrap());
    assert!(store.delete_group("g1").await.unwrap());
    assert!(!store.delete_group("g1").await.unwrap());
    assert_eq!(store.group("g1").await.unwrap(), None);
    b.close(store).await;
}

pub async fn concurrent_appends_get_unique_ordered_ids<B: Backend>(b: &B) {
    let store = Arc::new(b.open().await);
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
    assert_eq!(synced(&*store, "bob").await, ids);
    let store = Arc::try_unwrap(store).ok().expect("sole owner");
    b.close(store).await;
}

pub async fn settings_are_durable_and_watched_and_announcements_local<B: Backend>(b: &B) {
    let store = b.open().await;
    let mut watch = store.watch_settings();
    assert_eq!(store.setting("policy").await.unwrap(), None);
    store
        .put_setting("policy".into(), "{\"v\":1}".into())
        .await
        .unwrap();
    let (key, value) = tokio::time::timeout(WAIT, watch.recv())
        .await
        .expect("the change in time")
        .expect("watch open");
    assert_eq!((key.as_str(), value.as_str()), ("policy", "{\"v\":1}"));
    // This node's announcements come back to its own watchers, as local.
    let mut ann = store.watch_announcements();
    store.announce("login".into(), "x".into()).await.unwrap();
    let a = tokio::time::timeout(WAIT, ann.recv())
        .await
        .expect("the announcement in time")
        .expect("watch open");
    assert_eq!(
        (a.topic.as_str(), a.payload.as_str(), a.local),
        ("login", "x", true)
    );
    b.close(store).await;
    let store = b.open().await;
    assert_eq!(
        store.setting("policy").await.unwrap().as_deref(),
        Some("{\"v\":1}")
    );
    b.close(store).await;
}

pub fn imported(old_id: &str, ts: i64, text: &str) -> ImportMessage {
    ImportMessage {
        old_id: old_id.into(),
        message: Message {
            message_id: 0,
            sender: "alice".into(),
            conversation: Conversation::private("bob"),
            payload: MessagePayload::text(text),
            server_ts: ts,
            client_msg_id: String::new(),
            to_users: vec![],
        },
        recipients: vec!["alice".into(), "bob".into()],
    }
}

pub async fn import_keeps_time_order_is_idempotent_and_is_history_only<B: Backend>(b: &B) {
    let store = b.open().await;
    drop(b.attach(&store, "bob", "phone").await);
    let live = store
        .append(private("alice", "bob", "live-1", "live"))
        .await
        .unwrap()
        .message;
    // 2025-01-01, out of order in the batch, two in the same millisecond.
    let t = 1_735_689_600_000;
    let batch = vec![
        imported("v-3", t + 2_000, "third"),
        imported("v-1", t, "first"),
        imported("v-2", t + 1_000, "second"),
        imported("v-2b", t + 1_000, "second too"),
        imported("v-old", 1_600_000_000_000, "2020"),
    ];
    let first = store.import(batch.clone()).await.unwrap();
    let ids: Vec<u64> = first
        .iter()
        .take(4)
        .map(|r| {
            let (id, dup) = r.result.clone().expect("imported");
            assert!(!dup, "{r:?}");
            id
        })
        .collect();
    assert!(first[4].result.is_err(), "before 2024 is refused");
    assert!(ids[1] < ids[2] && ids[2] < ids[3] && ids[3] < ids[0]);
    assert!(ids[0] < live.message_id, "older than the live message");
    // History and sync in time order, with the original timestamps.
    let hist = store
        .history("bob", &Conversation::private("alice"), 0, 10)
        .await
        .unwrap();
    let texts: Vec<(&str, i64)> = hist
        .messages
        .iter()
        .rev()
        .map(|m| (m.payload.searchable_content.as_str(), m.server_ts))
        .collect();
    assert_eq!(
        texts,
        [
            ("first", t),
            ("second", t + 1_000),
            ("second too", t + 1_000),
            ("third", t + 2_000),
            ("live", live.server_ts)
        ]
    );
    assert_eq!(synced(&store, "bob").await.len(), 5);
    // History only: bob's device has just the live message pending.
    let mut feed = b.attach(&store, "bob", "phone").await;
    assert_eq!(next(&mut feed).await, live.message_id);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), feed.next())
            .await
            .is_err(),
        "imported messages are not pushed"
    );
    drop(feed);
    // Export sees everything in id order.
    let all = store.scan(0, 100).await.unwrap();
    let scanned: Vec<u64> = all.messages.iter().map(|m| m.message_id).collect();
    let mut expected = ids.clone();
    expected.push(live.message_id);
    expected.sort();
    assert_eq!(scanned, expected);
    let page = store.scan(expected[1], 2).await.unwrap();
    let paged: Vec<u64> = page.messages.iter().map(|m| m.message_id).collect();
    assert_eq!(paged, expected[2..4]);
    assert!(page.has_more);
    b.close(store).await;
    // Idempotent, also after reopening: same ids, nothing new.
    let store = b.open().await;
    let again = store.import(batch).await.unwrap();
    for (r, id) in again.iter().zip(&ids) {
        assert_eq!(r.result, Ok((*id, true)));
    }
    assert_eq!(synced(&store, "bob").await.len(), 5);
    b.close(store).await;
}

/// Big import batches below live history: a second import into the
/// same milliseconds as a first one (rows merged into the chunks already
/// there), an old id twice in one batch (the second answers the first's
/// id), and sync, history and scan see every message once, by time.
pub async fn import_batches_below_live_history_interleave_in_time_order<B: Backend>(b: &B) {
    let store = b.open().await;
    let live = store
        .append(private("alice", "bob", "live-1", "live"))
        .await
        .unwrap()
        .message;
    let t = 1_735_689_600_000;
    let n = 1_200_i64;
    let first: Vec<ImportMessage> = (0..n)
        .map(|i| imported(&format!("a-{i}"), t + 2 * i, &format!("a{i}")))
        .collect();
    let mut second: Vec<ImportMessage> = (0..n)
        .rev()
        .map(|i| imported(&format!("b-{i}"), t + i, &format!("b{i}")))
        .collect();
    second.push(imported("b-7", t + 7, "b7 again"));
    let a = store.import(first).await.unwrap();
    let bb = store.import(second).await.unwrap();
    assert!(a
        .iter()
        .chain(&bb[..n as usize])
        .all(|r| matches!(r.result, Ok((_, false)))));
    let b7 = bb[(n - 1 - 7) as usize].result.clone().unwrap().0;
    assert_eq!(
        bb[n as usize].result,
        Ok((b7, true)),
        "same old id, same batch"
    );
    // Everyone once, by (timestamp, import order in that millisecond).
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store.scan(after, 500).await.unwrap();
        all.extend(page.messages.iter().cloned());
        after = page.messages.last().map_or(after, |m| m.message_id);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(all.len() as i64, 2 * n + 1);
    assert!(all.windows(2).all(|w| w[0].message_id < w[1].message_id));
    assert!(all.windows(2).all(|w| w[0].server_ts <= w[1].server_ts));
    assert_eq!(all.last().map(|m| m.message_id), Some(live.message_id));
    let key = |m: &Message| (m.server_ts, !m.payload.searchable_content.starts_with('a'));
    assert!(
        all.windows(2).all(|w| key(&w[0]) <= key(&w[1])),
        "a before b in a shared ms"
    );
    assert_eq!(
        synced(&store, "bob").await,
        all.iter().map(|m| m.message_id).collect::<Vec<_>>()
    );
    let hist = store
        .history("alice", &Conversation::private("bob"), 0, 5)
        .await
        .unwrap();
    assert_eq!(hist.messages[0].message_id, live.message_id);
    assert_eq!(
        hist.messages[1].payload.searchable_content,
        format!("a{}", n - 1)
    );
    b.close(store).await;
}

/// The daily quota's counter: one per stored message, on the UTC day of
/// its `server_ts`; resends and imports do not count; a reopen keeps it.
pub async fn daily_count_is_stored_messages_and_survives_reopen<B: Backend>(b: &B) {
    let store = b.open().await;
    let mut per_day = std::collections::BTreeMap::new();
    for cmid in ["q1", "q2", "q1", "q3"] {
        let a = store
            .append(private("quinn", "bob", cmid, "x"))
            .await
            .unwrap();
        if !a.duplicate {
            *per_day.entry(utc_day(a.message.server_ts)).or_insert(0) += 1;
        }
    }
    assert_eq!(
        per_day.values().sum::<u64>(),
        3,
        "the resend is no new message"
    );
    let mut old = imported("quinn-old", now_ms() - 1_000, "imported today");
    old.message.sender = "quinn".into();
    old.recipients = vec!["bob".into(), "quinn".into()];
    assert!(store.import(vec![old]).await.unwrap()[0].result.is_ok());
    for (day, n) in &per_day {
        assert_eq!(store.sent_on_day("quinn", *day).await.unwrap(), *n);
    }
    let today = *per_day.keys().last().unwrap();
    assert_eq!(store.sent_on_day("bob", today).await.unwrap(), 0);
    assert_eq!(store.sent_on_day("quinn", today + 1).await.unwrap(), 0);
    b.close(store).await;
    let store = b.open().await;
    for (day, n) in &per_day {
        assert_eq!(
            store.sent_on_day("quinn", *day).await.unwrap(),
            *n,
            "kept across a reopen"
        );
    }
    b.close(store).await;
}
