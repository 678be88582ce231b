//! A sender's own messages keep their send order (DESIGN §3.4) when one
//! session has several sends in flight ([`super::send_window`]).
//!
//! The pipeline's layers may suspend before the store (the daily quota
//! reads a count, the review hook asks a server, a group send reads the
//! group), so two sends started in order can reach `Store::append` in
//! the other order. [`OrderedAppends`] wraps the store the pipeline
//! writes to and makes a send that carries a [`SendTurn`] wait, at
//! `append`, until its predecessor in the same session has *issued* its
//! append (or finished without reaching the store); only then is its own
//! append issued. The turn travels with the send future as a task-local
//! ([`in_turn`]): the `Store` trait and the pipeline stay as they are,
//! and sends without a turn (HTTP, admin, imports) are not affected.
//!
//! "Issued" means the store fixed the append's place in its order
//! ([`Store::append_queued`]): the embedded store once the append is in
//! its single writer's FIFO queue, the RabbitMQ store once it is in its
//! publisher's queue (which leaves for the log in order). The next append
//! may go as soon as this one is queued, so appends of one session share
//! a group commit (a batch publish on RabbitMQ). A store without its own
//! `append_queued` resolves it only when the append is complete: its
//! sends are then issued one after the other. (Not "as soon as it was
//! polled once": a bounded queue's permit can be taken on a poll that
//! then yields for the task's cooperative budget, before the message is
//! pushed; the next send's append then overtook it, seen as ids out of
//! send order after a crash-flood test.)

use std::future::Future;
use std::sync::{Arc, Mutex};

use imgate_core::model::{Conversation, Message};
use imgate_core::store::{
    Announcement, Appended, BoxFuture, CursorMoved, DeviceFeed, Group, ImportMessage, Imported,
    NewMessage, Recalled, SettingChange, StoreResult, SyncPage, UserFeed,
};
use imgate_core::Store;
use tokio::sync::{broadcast, oneshot};

/// What a turn tells the next one.
#[derive(Debug)]
pub enum Passed {
    /// This send's append was issued (or it ended after its predecessors
    /// were done): the next may go.
    Issued,
    /// This send ended without reaching the store before its predecessor
    /// issued: the next waits on that predecessor instead.
    After(oneshot::Receiver<Passed>),
}

/// One send's place in its session's order: wait for the predecessor
/// (`after`), then tell the successor (`next`). A turn dropped without
/// issuing (the send was rejected before the store) still keeps the
/// order: its successor is handed the predecessor it was waiting for, so
/// the chain stays transitive.
#[derive(Debug)]
pub struct SendTurn {
    after: Option<oneshot::Receiver<Passed>>,
    next: Option<oneshot::Sender<Passed>>,
}

impl SendTurn {
    /// A turn after the one whose successor receiver is `previous` (None:
    /// no predecessor), and the receiver the next turn waits on.
    pub fn after(
        previous: Option<oneshot::Receiver<Passed>>,
    ) -> (SendTurn, oneshot::Receiver<Passed>) {
        let (next, next_waits) = oneshot::channel();
        (
            SendTurn {
                after: previous,
                next: Some(next),
            },
            next_waits,
        )
    }

    /// Until every earlier send of the session issued its append or ended.
    /// Cancel-safe: dropped half way, the turn still hands on what it
    /// waits for.
    async fn predecessors_done(&mut self) {
        while let Some(waiting) = self.after.as_mut() {
            match waiting.await {
                Ok(Passed::After(earlier)) => self.after = Some(earlier),
                Ok(Passed::Issued) | Err(_) => self.after = None,
            }
        }
    }

    /// This send's append is issued: the next may go.
    fn issued(mut self) {
        if let Some(next) = self.next.take() {
            let _ = next.send(Passed::Issued);
        }
    }
}

impl Drop for SendTurn {
    fn drop(&mut self) {
        let Some(next) = self.next.take() else {
            return;
        };
        let _ = match self.after.take() {
            Some(earlier) => next.send(Passed::After(earlier)),
            None => next.send(Passed::Issued),
        };
    }
}

tokio::task_local! {
    /// The turn of the send being polled (taken by its one append).
    static TURN: Mutex<Option<SendTurn>>;
}

/// Run `send` (a pipeline call) in `turn`: its append waits for the
/// predecessor's. Dropping the future releases the successor.
pub fn in_turn<F: Future>(turn: SendTurn, send: F) -> impl Future<Output = F::Output> {
    TURN.scope(Mutex::new(Some(turn)), send)
}

fn take_turn() -> Option<SendTurn> {
    TURN.try_with(|t| match t.lock() {
        Ok(mut g) => g.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    })
    .ok()
    .flatten()
}

/// The pipeline's store, with appends in session order (module doc).
/// With metrics, each append's time from issuing to durable (not the
/// wait for its turn) goes to `imgate_store_append_duration_seconds`.
pub struct OrderedAppends {
    inner: Arc<dyn Store>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl OrderedAppends {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        OrderedAppends {
            inner,
            metrics: None,
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn observe(&self, started: std::time::Instant) {
        if let Some(m) = &self.metrics {
            m.store_append(started.elapsed());
        }
    }
}

impl Store for OrderedAppends {
    fn append(&self, msg: NewMessage) -> BoxFuture<'_, StoreResult<Appended>> {
        let turn = take_turn();
        Box::pin(async move {
            let Some(mut turn) = turn else {
                let started = std::time::Instant::now();
                let result = self.inner.append(msg).await;
                self.observe(started);
                return result;
            };
            turn.predecessors_done().await;
            let started = std::time::Instant::now();
            let queued = self.inner.append_queued(msg).await;
            turn.issued();
            let result = match queued {
                Ok(durable) => durable.await,
                Err(e) => Err(e),
            };
            self.observe(started);
            result
        })
    }

    fn sync<'a>(
        &'a self,
        user: &'a str,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<SyncPage>> {
        self.inner.sync(user, since, limit)
    }

    fn history<'a>(
        &'a self,
        user: &'a str,
        conversation: &'a Conversation,
        before: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<SyncPage>> {
        self.inner.history(user, conversation, before, limit)
    }

    fn get(&self, message_id: u64) -> BoxFuture<'_, StoreResult<Option<Arc<Message>>>> {
        self.inner.get(message_id)
    }

    fn get_for<'a>(
        &'a self,
        message_id: u64,
        user: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<Arc<Message>>>> {
        self.inner.get_for(message_id, user)
    }

    fn recall(&self, message_id: u64) -> BoxFuture<'_, StoreResult<Recalled>> {
        self.inner.recall(message_id)
    }

    fn last_message_id<'a>(&'a self, user: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        self.inner.last_message_id(user)
    }

    fn attach_device<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
    ) -> BoxFuture<'a, StoreResult<DeviceFeed>> {
        self.inner.attach_device(user, device)
    }

    fn ack<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        message_id: u64,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.ack(user, device, message_id)
    }

    fn subscribe_user(&self, user: &str) -> UserFeed {
        self.inner.subscribe_user(user)
    }

    fn group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, StoreResult<Option<Group>>> {
        self.inner.group(group_id)
    }

    fn scan_groups<'a>(
        &'a self,
        after: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<(Vec<Group>, bool)>> {
        self.inner.scan_groups(after, limit)
    }

    fn put_group(&self, group: Group) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.put_group(group)
    }

    fn delete_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        self.inner.delete_group(group_id)
    }

    fn setting<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<String>>> {
        self.inner.setting(key)
    }

    fn put_setting(&self, key: String, value: String) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.put_setting(key, value)
    }

    fn watch_settings(&self) -> broadcast::Receiver<SettingChange> {
        self.inner.watch_settings()
    }

    fn announce(&self, topic: String, payload: String) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.announce(topic, payload)
    }

    fn watch_announcements(&self) -> broadcast::Receiver<Arc<Announcement>> {
        self.inner.watch_announcements()
    }

    fn watch_cursors(&self) -> broadcast::Receiver<Arc<CursorMoved>> {
        self.inner.watch_cursors()
    }

    fn import(&self, batch: Vec<ImportMessage>) -> BoxFuture<'_, StoreResult<Vec<Imported>>> {
        self.inner.import(batch)
    }

    fn scan(&self, after: u64, limit: usize) -> BoxFuture<'_, StoreResult<SyncPage>> {
        self.inner.scan(after, limit)
    }

    fn sent_on_day<'a>(&'a self, user: &'a str, day: i64) -> BoxFuture<'a, StoreResult<u64>> {
        self.inner.sent_on_day(user, day)
    }

    fn conversations<'a>(
        &'a self,
        user: &'a str,
        before: u64,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<imgate_core::store::ConversationPage>> {
        self.inner.conversations(user, before, limit)
    }

    fn mark_read<'a>(
        &'a self,
        user: &'a str,
        conversation: &'a imgate_core::Conversation,
        upto: u64,
    ) -> BoxFuture<'a, StoreResult<Option<imgate_core::store::ReadState>>> {
        self.inner.mark_read(user, conversation, upto)
    }

    fn prune(
        &self,
        now: i64,
        retention_ms: Option<i64>,
    ) -> BoxFuture<'_, StoreResult<imgate_core::store::Pruned>> {
        self.inner.prune(now, retention_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::SendWindow;
    use imgate_adapters::{EmbeddedConfig, EmbeddedStore};
    use imgate_core::model::MessagePayload;
    use std::time::Duration;

    fn message(n: usize) -> NewMessage {
        NewMessage {
            sender: "alice".into(),
            sender_device: Some("phone".into()),
            conversation: Conversation::private("bob"),
            payload: MessagePayload::text(format!("m{n}")),
            client_msg_id: format!("c{n}"),
            to_users: vec![],
            recipients: vec!["alice".into(), "bob".into()],
        }
    }

    /// Sends whose stages before the store take longer the earlier they
    /// came (the first one is the slowest to reach `append`) still get
    /// their ids in push order.
    async fn ids_in_push_order() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
        let store = Arc::new(OrderedAppends::new(inner));
        let n = 6;
        let mut window = SendWindow::new(n);
        for i in 0..n {
            let store = store.clone();
            window.push(async move {
                let before_store = Duration::from_millis(5 * (n - i) as u64);
                tokio::time::sleep(before_store).await;
                store.append(message(i)).await.map(|a| a.message.message_id)
            });
        }
        let mut ids = Vec::new();
        while !window.is_empty() {
            ids.push(window.next().await.unwrap());
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "ids follow the sends' order");
    }

    #[tokio::test]
    async fn issue_order_keeps_the_session_order_on_the_embedded_store() {
        ids_in_push_order().await;
    }

    #[test]
    fn a_turn_dropped_before_the_store_hands_on_its_predecessor() {
        use futures_util::FutureExt;
        let (first, r1) = SendTurn::after(None);
        let (second, r2) = SendTurn::after(Some(r1));
        let (mut third, _r3) = SendTurn::after(Some(r2));
        // The second send was rejected before the store; the first has
        // not issued yet: the third must still wait for the first.
        drop(second);
        assert!(third.predecessors_done().now_or_never().is_none());
        first.issued();
        assert!(third.predecessors_done().now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_send_rejected_before_the_store_releases_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
        let store = Arc::new(OrderedAppends::new(inner));
        let mut window = SendWindow::new(4);
        // Never reaches the store (a pipeline rejection).
        window.push(async { Ok::<u64, imgate_core::StoreError>(0) });
        let s = store.clone();
        window.push(async move { s.append(message(1)).await.map(|a| a.message.message_id) });
        assert_eq!(window.next().await.unwrap(), 0);
        assert!(window.next().await.unwrap() > 0);
        // Without a turn (HTTP, admin): a plain append.
        assert!(store.append(message(2)).await.is_ok());
    }
}
