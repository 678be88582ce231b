//! Live delivery handles returned by a store.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use crate::model::Message;

/// Deliveries for one attached device: first what was pending (unacked)
/// when it attached, in id order, then live messages. A message that shows
/// up both in the pending snapshot and live is yielded once.
pub struct DeviceFeed {
    pending: VecDeque<Arc<Message>>,
    seen: HashSet<u64>,
    live: mpsc::Receiver<Arc<Message>>,
    /// Runs when the feed is dropped (the store detaches the device).
    _detach: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl DeviceFeed {
    pub fn new(
        pending: Vec<Arc<Message>>,
        live: mpsc::Receiver<Arc<Message>>,
        detach: Option<Box<dyn FnOnce() + Send + Sync>>,
    ) -> Self {
        let seen = pending.iter().map(|m| m.message_id).collect();
        DeviceFeed {
            pending: pending.into(),
            seen,
            live,
            _detach: detach,
        }
    }

    /// The next message to deliver; `None` when the store closed the feed
    /// (shutdown, or the device fell too far behind: it must reconnect and
    /// will get its pending messages again).
    pub async fn next(&mut self) -> Option<Arc<Message>> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        loop {
            let m = self.live.recv().await?;
            if self.seen.is_empty() || !self.seen.remove(&m.message_id) {
                return Some(m);
            }
        }
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
