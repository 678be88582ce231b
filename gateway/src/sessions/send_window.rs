//! A session's sends in flight: a bounded window of pipeline calls whose
//! results come back in the order the client sent them (issue 10 item 3).
//!
//! A session pushes each send as it reads it and keeps reading while
//! earlier sends wait for durability; it renders results as
//! [`SendWindow::next`] yields them (arrival order, whatever order the
//! store finished them in). When the window is full ([`SendWindow::is_full`])
//! the session stops reading its socket until the oldest send completes:
//! backpressure reaches the client through TCP, nothing is buffered
//! without bound.
//!
//! Every send gets a [`SendTurn`] chained to the previous one, so the
//! sends of one session reach the store, and get their ids, in arrival
//! order (DESIGN §3.4; see [`super::append_order`]).
//!
//! Each protocol decides which requests must wait until the window is
//! drained (those that must observe the earlier sends, or whose answer
//! must follow theirs); see the session modules.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::append_order::{in_turn, Passed, SendTurn};

type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Sends in flight, oldest first, at most `capacity`.
pub struct SendWindow<T> {
    /// Only ever used through `get_mut` (no locking): the mutex makes the
    /// window `Sync`, which the boxed pipeline futures are not, so a
    /// session may hold `&self` across an await. None while no send was
    /// made yet (an idle session allocates no queue).
    pending: Mutex<Option<FuturesOrdered<Pending<T>>>>,
    /// `pending.len()`, readable through `&self`.
    in_flight: usize,
    capacity: usize,
    /// The last pushed send's turn signal: the next send waits on it.
    last_turn: Option<oneshot::Receiver<Passed>>,
}

impl<T: Send + 'static> SendWindow<T> {
    /// A window of `capacity` sends (at least 1).
    pub fn new(capacity: usize) -> Self {
        SendWindow {
            pending: Mutex::new(None),
            in_flight: 0,
            capacity: capacity.max(1),
            last_turn: None,
        }
    }

    /// Start `send` after every send pushed before it. The future must be
    /// a pipeline call (`SessionCtx::send_owned`).
    pub fn push(&mut self, send: impl Future<Output = T> + Send + 'static) {
        let (turn, next) = SendTurn::after(self.last_turn.take());
        self.last_turn = Some(next);
        self.pending_mut().push_back(Box::pin(in_turn(turn, send)));
        self.in_flight += 1;
    }

    fn pending_mut(&mut self) -> &mut FuturesOrdered<Pending<T>> {
        let pending = match self.pending.get_mut() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        pending.get_or_insert_with(FuturesOrdered::new)
    }

    /// No room for another send: stop reading until [`Self::next`] yields.
    pub fn is_full(&self) -> bool {
        self.in_flight >= self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight == 0
    }

    /// The oldest send's result once it is done; never resolves while the
    /// window is empty (so it can sit in a `select!`). Cancel-safe.
    pub async fn next(&mut self) -> T {
        if self.in_flight == 0 {
            return std::future::pending().await;
        }
        let pending = self.pending_mut();
        match pending.next().await {
            Some(result) => {
                self.in_flight -= 1;
                result
            }
            // Not reached: the window was not empty.
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn results_come_back_in_push_order_whatever_finishes_first() {
        let mut w = SendWindow::new(8);
        for (i, delay) in [30u64, 1, 10, 0].into_iter().enumerate() {
            w.push(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                i
            });
        }
        assert!(!w.is_full());
        let mut got = Vec::new();
        while !w.is_empty() {
            got.push(w.next().await);
        }
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn full_at_capacity_and_empty_never_resolves() {
        let mut w = SendWindow::new(2);
        assert!(!w.is_full());
        w.push(async { 1 });
        w.push(async { 2 });
        assert!(w.is_full());
        assert_eq!(w.next().await, 1);
        assert!(!w.is_full());
        assert_eq!(w.next().await, 2);
        let empty = tokio::time::timeout(Duration::from_millis(5), w.next()).await;
        assert!(empty.is_err(), "an empty window has nothing to yield");
    }
}
