//! Live delivery handles returned by a store.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::{broadcast, mpsc, Notify};

use super::in_flight::InFlight;
use super::{BoxFuture, StoreResult};
use crate::model::Message;

/// Deliveries for one attached device, in id order: first what it has
/// not acked yet, then live messages. Two sources exist:
/// - a pending snapshot taken at attach plus the live channel (stores that
///   keep a queue per device); a message in both is yielded once;
/// - a delivery cursor ([`DeviceFeed::from_cursor`]): the feed reads the
///   user's timeline after the cursor page by page, then switches to the
///   live channel; if the store had to stop feeding the live channel (the
///   device was too slow: `lagged`), it goes back to reading the timeline
///   from where it is, so a slow device never loses a message and never
///   needs a reconnect.
pub struct DeviceFeed {
    source: Source,
    live: mpsc::Receiver<Arc<Message>>,
    /// Runs when the feed is dropped (the store detaches the device).
    _detach: Option<Box<dyn FnOnce() + Send + Sync>>,
}

enum Source {
    Snapshot {
        pending: VecDeque<Arc<Message>>,
        seen: HashSet<u64>,
    },
    Cursor(CursorFeed),
}

/// A page of one device's timeline (see [`CatchUp`]).
#[derive(Debug, Default)]
pub struct CatchUpPage {
    /// The device's messages in the page, ascending.
    pub messages: Vec<Arc<Message>>,
    /// The highest id the page looked at (messages the device sent itself
    /// are skipped, so this can be above the last message).
    pub scanned_to: u64,
    /// Nothing more after `scanned_to` (for now).
    pub done: bool,
}

/// Reads one device's timeline after a position (the store's side of a
/// cursor feed).
pub trait CatchUp: Send + Sync + 'static {
    fn after(&self, position: u64) -> BoxFuture<'static, StoreResult<CatchUpPage>>;
}

/// Raised by a store that skipped live messages for a device (its buffer
/// was full); the device's feed then reads its timeline again.
#[derive(Default)]
pub struct Lag {
    raised: AtomicBool,
    wake: Notify,
}

impl Lag {
    /// Mark the device lagged and wake its feed if it waits for live
    /// messages (a wake-up before it waits is kept).
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    fn take(&self) -> bool {
        self.raised.swap(false, Ordering::AcqRel)
    }
}

enum Woken {
    Message(Arc<Message>),
    Closed,
    Lagged,
}

struct CursorFeed {
    /// Highest id yielded (or skipped as not for this device).
    position: u64,
    buffer: VecDeque<Arc<Message>>,
    catching_up: bool,
    lagged: Arc<Lag>,
    catch_up: Box<dyn CatchUp>,
    in_flight: Arc<InFlight>,
}

impl DeviceFeed {
    pub fn new(
        pending: Vec<Arc<Message>>,
        live: mpsc::Receiver<Arc<Message>>,
        detach: Option<Box<dyn FnOnce() + Send + Sync>>,
    ) -> Self {
        let seen = pending.iter().map(|m| m.message_id).collect();
        DeviceFeed {
            source: Source::Snapshot {
                pending: pending.into(),
                seen,
            },
            live,
            _detach: detach,
        }
    }

    /// A feed that starts at `in_flight`'s cursor: the timeline after it
    /// (through `catch_up`), then `live`. The store sets `lagged` when it
    /// skipped live messages for this device; every yielded message is
    /// recorded in `in_flight`, which the store's acks then move.
    pub fn from_cursor(
        in_flight: Arc<InFlight>,
        catch_up: Box<dyn CatchUp>,
        live: mpsc::Receiver<Arc<Message>>,
        lagged: Arc<Lag>,
        detach: Option<Box<dyn FnOnce() + Send + Sync>>,
    ) -> Self {
        DeviceFeed {
            source: Source::Cursor(CursorFeed {
                position: in_flight.cursor(),
                buffer: VecDeque::new(),
                catching_up: true,
                lagged,
                catch_up,
                in_flight,
            }),
            live,
            _detach: detach,
        }
    }

    /// The next message to deliver; `None` when the store closed the feed
    /// (shutdown, a newer session of the device, a store failure, or, for
    /// snapshot feeds, a device too far behind: it must reconnect and will
    /// get its unacked messages again).
    pub async fn next(&mut self) -> Option<Arc<Message>> {
        match &mut self.source {
            Source::Snapshot { pending, seen } => {
                while let Some(m) = pending.pop_front() {
                    if !m.is_expired(crate::now_ms()) {
                        return Some(m);
                    }
                }
                loop {
                    let m = self.live.recv().await?;
                    if (seen.is_empty() || !seen.remove(&m.message_id))
                        && !m.is_expired(crate::now_ms())
                    {
                        return Some(m);
                    }
                }
            }
            Source::Cursor(c) => c.next(&mut self.live).await,
        }
    }
}

impl CursorFeed {
    async fn next(&mut self, live: &mut mpsc::Receiver<Arc<Message>>) -> Option<Arc<Message>> {
        loop {
            if let Some(m) = self.buffer.pop_front() {
                if let Some(m) = self.take(m) {
                    return Some(m);
                }
                continue;
            }
            if self.catching_up {
                let page = match self.catch_up.after(self.position).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "device feed: reading the timeline failed");
                        return None;
                    }
                };
                self.catching_up = !page.done;
                self.buffer.extend(page.messages);
                if self.buffer.is_empty() {
                    self.position = self.position.max(page.scanned_to);
                }
                continue;
            }
            let m = match live.try_recv() {
                Ok(m) => m,
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if self.lagged.take() {
                        // Live messages were skipped: they are all in the
                        // timeline, which is read again from here.
                        self.catching_up = true;
                        continue;
                    }
                    match self.wait_live(live).await {
                        Woken::Message(m) => m,
                        Woken::Closed => return None,
                        // Raised while we waited: look again.
                        Woken::Lagged => continue,
                    }
                }
            };
            if let Some(m) = self.take(m) {
                return Some(m);
            }
        }
    }

    /// The next live message, or the lag signal, whichever comes first.
    async fn wait_live(&self, live: &mut mpsc::Receiver<Arc<Message>>) -> Woken {
        let mut notified = std::pin::pin!(self.lagged.wake.notified());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(m) = live.poll_recv(cx) {
                return Poll::Ready(m.map_or(Woken::Closed, Woken::Message));
            }
            if notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woken::Lagged);
            }
            Poll::Pending
        })
        .await
    }

    /// Yield `m` unless it is at or below the position (seen in a page
    /// and live both) or expired (its `expireDuration` passed: skipped).
    fn take(&mut self, m: Arc<Message>) -> Option<Arc<Message>> {
        if m.message_id <= self.position {
            return None;
        }
        self.position = m.message_id;
        if m.is_expired(crate::now_ms()) {
            // Never handed out: the cursor passes it with the next ack.
            return None;
        }
        self.in_flight.delivered(m.message_id);
        Some(m)
    }
}

impl Drop for DeviceFeed {
    fn drop(&mut self) {
        if let Some(f) = self._detach.take() {
            f();
        }
    }
}

/// Live messages of one user. `Lagged` means the reader was too slow and
/// must resume from its own cursor (e.g. SSE `Last-Event-ID` via sync).
pub struct UserFeed {
    rx: broadcast::Receiver<Arc<Message>>,
}

/// Why a user feed ended.
#[derive(Debug, PartialEq, Eq)]
pub enum UserFeedEnd {
    Closed,
    Lagged,
}

impl UserFeed {
    pub fn new(rx: broadcast::Receiver<Arc<Message>>) -> Self {
        UserFeed { rx }
    }

    pub async fn next(&mut self) -> Result<Arc<Message>, UserFeedEnd> {
        match self.rx.recv().await {
            Ok(m) => Ok(m),
            Err(broadcast::error::RecvError::Closed) => Err(UserFeedEnd::Closed),
            Err(broadcast::error::RecvError::Lagged(_)) => Err(UserFeedEnd::Lagged),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::{Conversation, MessagePayload};

    fn msg(id: u64) -> Arc<Message> {
        Arc::new(Message {
            message_id: id,
            sender: "a".into(),
            conversation: Conversation::private("b"),
            payload: MessagePayload::text("x"),
            server_ts: 0,
            client_msg_id: String::new(),
            to_users: vec![],
        })
    }

    /// A timeline in memory, paged two at a time.
    struct Timeline(Arc<Mutex<Vec<u64>>>);

    impl CatchUp for Timeline {
        fn after(&self, position: u64) -> BoxFuture<'static, StoreResult<CatchUpPage>> {
            let ids: Vec<u64> = match self.0.lock() {
                Ok(t) => t.iter().copied().filter(|&id| id > position).collect(),
                Err(_) => vec![],
            };
            let done = ids.len() <= 2;
            let page: Vec<u64> = ids.into_iter().take(2).collect();
            Box::pin(std::future::ready(Ok(CatchUpPage {
                scanned_to: page.last().copied().unwrap_or(position),
                messages: page.into_iter().map(msg).collect(),
                done,
            })))
        }
    }

    #[tokio::test]
    async fn cursor_feed_reads_the_timeline_then_live_and_again_after_a_lag() {
        let timeline = Arc::new(Mutex::new(vec![1, 2, 3, 4, 5]));
        let in_flight = Arc::new(InFlight::new(1, 100));
        let (tx, rx) = mpsc::channel(2);
        let lag = Arc::new(Lag::default());
        let mut feed = DeviceFeed::from_cursor(
            in_flight.clone(),
            Box::new(Timeline(timeline.clone())),
            rx,
            lag.clone(),
            None,
        );
        // 5 was committed while the feed read its pages: live as well.
        tx.try_send(msg(5)).unwrap();
        let mut got = vec![];
        for _ in 0..4 {
            got.push(feed.next().await.unwrap().message_id);
        }
        assert_eq!(got, [2, 3, 4, 5], "after the cursor, each once");
        // Live, then the store skips 7 and 8 for a full buffer (lagged).
        timeline.lock().unwrap().extend([6, 7, 8]);
        tx.try_send(msg(6)).unwrap();
        lag.raise();
        assert_eq!(feed.next().await.unwrap().message_id, 6);
        assert_eq!(feed.next().await.unwrap().message_id, 7);
        assert_eq!(feed.next().await.unwrap().message_id, 8);
        // Every yield is in the in-flight window; acks move the cursor.
        for id in [2, 3, 4, 5, 6, 7] {
            in_flight.ack(id);
        }
        assert_eq!(in_flight.cursor(), 7);
        drop(tx);
        assert!(feed.next().await.is_none(), "closed live channel ends it");
    }

    #[tokio::test]
    async fn a_lag_raised_while_waiting_wakes_the_feed() {
        let timeline = Arc::new(Mutex::new(vec![]));
        let (_tx, rx) = mpsc::channel(1);
        let lag = Arc::new(Lag::default());
        let mut feed = DeviceFeed::from_cursor(
            Arc::new(InFlight::new(0, 10)),
            Box::new(Timeline(timeline.clone())),
            rx,
            lag.clone(),
            None,
        );
        let waiting = tokio::spawn(async move { feed.next().await.map(|m| m.message_id) });
        tokio::task::yield_now().await;
        timeline.lock().unwrap().push(9);
        lag.raise();
        assert_eq!(waiting.await.unwrap(), Some(9));
    }
}
