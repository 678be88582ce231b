//! XEP-0198 stream management as the delivery ack, and resumption.
//!
//! Counting: `h_in` is the number of client stanzas *handled* — a message
//! counts only after the pipeline returned, i.e. after the store made it
//! durable — so an `<a h>` from the server is a durability ack for the
//! sender. `h_out` numbers the stanzas sent to the client; `unacked` maps
//! the numbers of delivered messages to their message ids, so the client's
//! `<a h>` acks them in the store (`Store::ack`), exactly like a PB
//! `DeliverAck`.
//!
//! Resumption needs no message copies here: whatever the client did not
//! ack is still pending in the store, and the `DeviceFeed` of the resumed
//! session yields it again first. What must survive the TCP connection is
//! only the counters and the number → id map: an [`SmState`] behind an
//! async mutex. The live session holds the lock for its whole life, so a
//! resuming session (after kicking the old one through the session
//! registry) simply waits for the lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// How long a detached session can be resumed.
pub const RESUME_TIMEOUT: Duration = Duration::from_secs(300);

/// The state of one stream-management session.
#[derive(Debug)]
pub struct SmState {
    pub id: String,
    pub user: String,
    pub device: String,
    /// Client stanzas handled.
    pub h_in: u32,
    /// Stanzas sent to the client.
    pub h_out: u32,
    /// Numbers of delivered messages not yet acked, with their ids.
    pub unacked: VecDeque<(u32, u64)>,
    /// Set when the connection went away; resumable until the timeout.
    pub detached_at: Option<Instant>,
    pub resumable: bool,
}

impl SmState {
    /// Count one outgoing stanza; remember its message id, if it is one.
    pub fn sent(&mut self, message_id: Option<u64>) {
        self.h_out = self.h_out.wrapping_add(1);
        if let Some(id) = message_id {
            self.unacked.push_back((self.h_out, id));
        }
    }

    /// The client acked everything up to `h`: the message ids this acks.
    /// `None` if `h` is more than was sent (a protocol error).
    pub fn acked(&mut self, h: u32) -> Option<Vec<u64>> {
        if h.wrapping_sub(self.h_out) as i32 > 0 {
            return None;
        }
        let mut ids = Vec::new();
        while let Some(&(n, id)) = self.unacked.front() {
            if (h.wrapping_sub(n) as i32) < 0 {
                break;
            }
            ids.push(id);
            self.unacked.pop_front();
        }
        Some(ids)
    }
}

pub type SmGuard = OwnedMutexGuard<SmState>;

/// Resumable sessions of this node, by stream-management id.
#[derive(Default)]
pub struct SmRegistry {
    sessions: Mutex<HashMap<String, Arc<AsyncMutex<SmState>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl SmRegistry {
    /// A new SM session, locked by its (live) owner.
    pub async fn enable(&self, user: &str, device: &str, resumable: bool) -> SmGuard {
        let id = super::random_id();
        let state = Arc::new(AsyncMutex::new(SmState {
            id: id.clone(),
            user: user.to_string(),
            device: device.to_string(),
            h_in: 0,
            h_out: 0,
            unacked: VecDeque::new(),
            detached_at: None,
            resumable,
        }));
        // A fresh mutex: this never waits.
        let guard = state.clone().lock_owned().await;
        if resumable {
            let mut sessions = lock(&self.sessions);
            prune(&mut sessions);
            sessions.insert(id, state);
        }
        guard
    }

    /// The session `id` of `user`/`device`, waiting (bounded) for its
    /// previous owner to let go. None if unknown, expired or someone else's.
    pub async fn resume(&self, id: &str, user: &str, device: &str) -> Option<SmGuard> {
        let state = {
            let mut sessions = lock(&self.sessions);
            prune(&mut sessions);
            sessions.get(id).cloned()?
        };
        let mut guard = tokio::time::timeout(Duration::from_secs(10), state.lock_owned())
            .await
            .ok()?;
        if guard.user != user || guard.device != device {
            return None;
        }
        if guard
            .detached_at
            .is_some_and(|t| t.elapsed() > RESUME_TIMEOUT)
        {
            lock(&self.sessions).remove(id);
            return None;
        }
        guard.detached_at = None;
        Some(guard)
    }

    /// The owner's connection ended: keep it resumable, or forget it.
    pub fn detach(&self, mut guard: SmGuard, keep: bool) {
        if keep && guard.resumable {
            guard.detached_at = Some(Instant::now());
        } else {
            lock(&self.sessions).remove(&guard.id);
        }
    }
}

/// Drop detached sessions past the resume timeout (those whose lock is
/// free; a locked one has a live owner).
fn prune(sessions: &mut HashMap<String, Arc<AsyncMutex<SmState>>>) {
    sessions.retain(|_, s| match s.try_lock() {
        Ok(st) => st.detached_at.is_none_or(|t| t.elapsed() <= RESUME_TIMEOUT),
        Err(_) => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acks_pop_exactly_the_acked_messages() {
        let r = SmRegistry::default();
        let mut s = r.enable("alice", "phone", false).await;
        s.sent(Some(10));
        s.sent(None);
        s.sent(Some(11));
        assert_eq!(s.acked(1), Some(vec![10]));
        assert_eq!(s.acked(2), Some(vec![]));
        assert_eq!(s.acked(4), None, "more than was sent");
        assert_eq!(s.acked(3), Some(vec![11]));
    }

    #[tokio::test]
    async fn resume_waits_for_the_old_owner_and_checks_the_device() {
        let r = Arc::new(SmRegistry::default());
        let mut old = r.enable("alice", "phone", true).await;
        old.h_in = 5;
        let id = old.id.clone();
        let r2 = r.clone();
        let id2 = id.clone();
        let waiter =
            tokio::spawn(async move { r2.resume(&id2, "alice", "phone").await.map(|g| g.h_in) });
        r.detach(old, true);
        assert_eq!(waiter.await.unwrap(), Some(5));
        assert!(r.resume(&id, "alice", "laptop").await.is_none());
        assert!(r.resume("nope", "alice", "phone").await.is_none());
    }
}
