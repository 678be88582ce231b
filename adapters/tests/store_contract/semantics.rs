//! Contract scenarios of the message semantics (`docs/messages.md`):
//! persist flags, expiry, retention, and each user's conversations with
//! their read positions and unread counts.

use std::time::{Duration, Instant};

use imgate_core::model::{persist_flag, Conversation, MessagePayload};
use imgate_core::store::{NewMessage, IMPORT_LIVE_ONLY};
use imgate_core::{now_ms, Store};

use super::{imported, next, private, synced, team, Backend, WAIT};

fn flagged(from: &str, to: &str, cmid: &str, flag: i32) -> NewMessage {
    let mut m = private(from, to, cmid, cmid);
    m.payload.persist_flag = flag;
    m
}

fn to_group(from: &str, cmid: &str) -> NewMessage {
    let g = team();
    NewMessage {
        sender: from.into(),
        sender_device: None,
        conversation: Conversation::group(g.id.clone()),
        payload: MessagePayload::text(cmid),
        client_msg_id: cmid.into(),
        to_users: vec![],
        recipients: g.members.into_iter().collect(),
    }
}

pub async fn live_only_messages_are_delivered_never_stored<B: Backend>(b: &B) {
    let store = b.open().await;
    drop(b.attach(&store, "bob", "tablet").await);
    let mut phone = b.attach(&store, "bob", "phone").await;
    let kept = store
        .append(flagged("alice", "bob", "kept", persist_flag::PERSIST))
        .await
        .unwrap()
        .message;
    let not_persisted = store
        .append(flagged("alice", "bob", "np", persist_flag::NOT_PERSISTED))
        .await
        .unwrap()
        .message;
    let transparent = store
        .append(flagged("alice", "bob", "tr", persist_flag::TRANSPARENT))
        .await
        .unwrap()
        .message;
    assert!(kept.message_id < not_persisted.message_id);
    assert!(not_persisted.message_id < transparent.message_id);
    // Online: all three, in order.
    assert_eq!(next(&mut phone).await, kept.message_id);
    assert_eq!(next(&mut phone).await, not_persisted.message_id);
    assert_eq!(next(&mut phone).await, transparent.message_id);
    // A resend of a live-only message is answered with its id.
    let again = store
        .append(flagged("alice", "bob", "np", persist_flag::NOT_PERSISTED))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message.message_id, not_persisted.message_id);
    // Never stored: not in sync, history, get, or an offline device's feed.
    assert_eq!(synced(&store, "bob").await, [kept.message_id]);
    assert_eq!(synced(&store, "alice").await, [kept.message_id]);
    let hist = store
        .history("bob", &Conversation::private("alice"), 0, 10)
        .await
        .unwrap();
    let ids: Vec<u64> = hist.messages.iter().map(|m| m.message_id).collect();
    assert_eq!(ids, [kept.message_id]);
    assert!(store.get(transparent.message_id).await.unwrap().is_none());
    let mut tablet = b.attach(&store, "bob", "tablet").await;
    assert_eq!(next(&mut tablet).await, kept.message_id);
    let later = store
        .append(flagged("alice", "bob", "later", persist_flag::PERSIST))
        .await
        .unwrap()
        .message;
    assert_eq!(next(&mut tablet).await, later.message_id, "nothing between");
    // Conversations: the last message is the stored one; nothing counted.
    let convs = store.conversations("bob", 0, 10).await.unwrap();
    assert_eq!(convs.conversations.len(), 1);
    let c = &convs.conversations[0];
    assert_eq!(c.last_message_id, later.message_id);
    assert_eq!(c.unread, 0, "flags 0, 1 and 4 are not counted");
    // Nor imported as history.
    let mut typing = imported("old-typing", now_ms() - 60_000, "typing");
    typing.message.payload.persist_flag = persist_flag::TRANSPARENT;
    let got = store.import(vec![typing]).await.unwrap();
    assert_eq!(got[0].result, Err(IMPORT_LIVE_ONLY.to_string()));
    drop((phone, tablet));
    b.close(store).await;
}

pub async fn expired_messages_are_not_delivered_synced_or_listed<B: Backend>(b: &B) {
    let store = b.open().await;
    drop(b.attach(&store, "bob", "tablet").await);
    let mut short = private("alice", "bob", "short", "gone soon");
    short.payload.expire_duration = 1;
    let short = store.append(short).await.unwrap().message;
    let mut long = private("alice", "bob", "long", "a day");
    long.payload.expire_duration = 86_400;
    let long = store.append(long).await.unwrap().message;
    assert_eq!(
        synced(&store, "bob").await,
        [short.message_id, long.message_id]
    );
    // Bounded wait for the expiry second to pass (server time).
    let deadline = Instant::now() + WAIT;
    while now_ms() < short.expires_at().unwrap() {
        assert!(Instant::now() < deadline, "clock stuck");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(synced(&store, "bob").await, [long.message_id]);
    let hist = store
        .history("alice", &Conversation::private("bob"), 0, 10)
        .await
        .unwrap();
    assert_eq!(hist.messages.len(), 1);
    let mut tablet = b.attach(&store, "bob", "tablet").await;
    assert_eq!(next(&mut tablet).await, long.message_id, "expired skipped");
    let convs = store.conversations("bob", 0, 10).await.unwrap();
    assert_eq!(convs.conversations[0].unread, 2, "until pruned");
    // Pruning removes the row and gives its unread back.
    let pruned = store.prune(now_ms(), None).await.unwrap();
    assert_eq!((pruned.expired, pruned.aged_out), (1, 0));
    assert!(store.get(short.message_id).await.unwrap().is_none());
    let convs = store.conversations("bob", 0, 10).await.unwrap();
    assert_eq!(convs.conversations[0].unread, 1);
    // The long one goes when its day has passed.
    let pruned = store.prune(now_ms() + 86_401_000, None).await.unwrap();
    assert_eq!(pruned.expired, 1);
    assert!(synced(&store, "bob").await.is_empty());
    let convs = store.conversations("bob", 0, 10).await.unwrap();
    assert!(convs.conversations.is_empty(), "nothing left: off the list");
    drop(tablet);
    b.close(store).await;
}

pub async fn retention_prunes_old_history_and_conversations<B: Backend>(b: &B) {
    let store = b.open().await;
    for i in 0..5 {
        store
            .append(private("alice", "bob", &format!("r{i}"), "old"))
            .await
            .unwrap();
    }
    assert_eq!(synced(&store, "bob").await.len(), 5);
    // Kept while younger than the retention.
    let day = 86_400_000;
    let pruned = store.prune(now_ms(), Some(day)).await.unwrap();
    assert_eq!(pruned.aged_out, 0);
    assert_eq!(synced(&store, "bob").await.len(), 5);
    // Two days later, a one-day retention removes them all.
    let pruned = store.prune(now_ms() + 2 * day, Some(day)).await.unwrap();
    assert_eq!((pruned.aged_out, pruned.more), (5, false));
    assert!(synced(&store, "bob").await.is_empty());
    assert!(store
        .history("bob", &Conversation::private("alice"), 0, 10)
        .await
        .unwrap()
        .messages
        .is_empty());
    assert!(store
        .conversations("bob", 0, 10)
        .await
        .unwrap()
        .conversations
        .is_empty());
    b.close(store).await;
}

pub async fn conversations_count_unread_and_mark_read_is_durable<B: Backend>(b: &B) {
    let store = b.open().await;
    store.put_group(team()).await.unwrap();
    let mut texts = Vec::new();
    for i in 0..3 {
        texts.push(
            store
                .append(private("alice", "bob", &format!("t{i}"), "hi"))
                .await
                .unwrap()
                .message,
        );
    }
    let tip = store
        .append(flagged("alice", "bob", "tip", persist_flag::PERSIST))
        .await
        .unwrap()
        .message;
    let in_group = store.append(to_group("alice", "g1")).await.unwrap().message;
    let page = store.conversations("bob", 0, 10).await.unwrap();
    assert!(!page.has_more);
    let got: Vec<(i32, String, u64, u64)> = page
        .conversations
        .iter()
        .map(|c| {
            (
                c.conversation.kind,
                c.conversation.target.clone(),
                c.last_message_id,
                c.unread,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, team().id, in_group.message_id, 1),
            (0, "alice".to_string(), tip.message_id, 3),
        ]
    );
    let last = page.conversations[1].last_message.as_ref().unwrap();
    assert_eq!(last.message_id, tip.message_id);
    // The sender's own messages are not unread for her.
    let alice = store.conversations("alice", 0, 10).await.unwrap();
    assert!(alice.conversations.iter().all(|c| c.unread == 0));
    assert_eq!(alice.conversations[1].conversation.target, "bob");
    // Paging by the last message id.
    let first = store.conversations("bob", 0, 1).await.unwrap();
    assert!(first.has_more);
    let second = store
        .conversations("bob", first.conversations[0].last_message_id, 1)
        .await
        .unwrap();
    assert_eq!(second.conversations[0].conversation.target, "alice");
    assert!(!second.has_more);
    // Read up to the second text: one text after it is unread.
    let alice_chat = Conversation::private("alice");
    let r = store
        .mark_read("bob", &alice_chat, texts[1].message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.read_upto, r.unread), (texts[1].message_id, 1));
    // Never backwards.
    let r = store
        .mark_read("bob", &alice_chat, texts[0].message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.read_upto, r.unread), (texts[1].message_id, 1));
    // A recalled unread message is no longer counted.
    store.recall(texts[2].message_id).await.unwrap();
    let page = store.conversations("bob", 0, 10).await.unwrap();
    assert_eq!(page.conversations[1].unread, 0);
    store
        .append(private("alice", "bob", "t9", "again"))
        .await
        .unwrap();
    // 0 = everything; unknown conversations are None.
    let r = store
        .mark_read("bob", &alice_chat, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.unread, 0);
    assert!(store
        .mark_read("bob", &Conversation::private("nobody"), 0)
        .await
        .unwrap()
        .is_none());
    b.close(store).await;
    // Durable: the same after reopening.
    let store = b.open().await;
    let page = store.conversations("bob", 0, 10).await.unwrap();
    let unread: Vec<u64> = page.conversations.iter().map(|c| c.unread).collect();
    assert_eq!(unread, [0, 1], "the private one read, the group one not");
    assert_eq!(page.conversations[0].read_upto, r.read_upto);
    b.close(store).await;
}
