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
//!
//! Across nodes (see [`super::sm_cluster`]): a resumable session's
//! counters are announced to the other nodes as they change (batched,
//! about every 200 ms, and at detach), so a `<resume previd h>` reaching
//! another node still finds its id. That node checks the id's user and
//! device against the authenticated principal, as here, waits briefly for
//! the old node to report the session detached (its login announcement
//! has just told that node to end it), and resumes with `h_in` as last
//! announced and `h_out` as the client's `h`. The number → id map stays
//! behind: what the old node delivered and the client did not ack in the
//! store comes again from the device's cursor, with the same ids. A stale
//! `h_in` (the old node died before announcing its last stanzas) makes
//! the client resend those; the store deduplicates them by stanza id.
//! Each cross-node resumption starts a new epoch of the id: the old node
//! then drops its copy, so the id lives on one node at a time (two racing
//! resumptions aside, which the login rule settles: one is kicked).
//!
//! Bounded: a client may leave at most `xmpp_sm_max_unacked` deliveries
//! unacked. At the limit the session stops taking messages from its feed
//! (they stay pending in the store) until an `<a h>` makes room; a client
//! that does not ack in time is closed with `policy-violation` (see
//! [`SmState::full_since`] and `protocol`). The map never grows past
//! the limit, and nothing unacked is lost: the store redelivers it.
//!
//! SM ids are 96 bits of OS randomness ([`super::random_id`]; only if the
//! OS has none, a clock reading). Either way a resumption, of this node's
//! id or another's, is accepted only for the user and device that enabled
//! it, so knowing an id gives nobody else the session.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::sm_cluster::{Phase, SmCluster, SmNotice};

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
    /// Resumptions on another node so far (see [`super::sm_cluster`]).
    pub epoch: u32,
    /// Since when `unacked` has been at its limit (see [`SmState::full_since`]).
    full_at: Option<Instant>,
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

    /// Deliveries that fit before `max` are unacked (0 when full).
    pub fn room(&self, max: usize) -> usize {
        max.saturating_sub(self.unacked.len())
    }

    /// With `max` deliveries unacked: since when the window has been full
    /// (deliveries wait for an ack meanwhile); `None` while there is room.
    pub fn full_since(&mut self, max: usize) -> Option<Instant> {
        if self.room(max) > 0 {
            self.full_at = None;
            return None;
        }
        Some(*self.full_at.get_or_insert_with(Instant::now))
    }

    fn notice(&self, phase: Phase) -> SmNotice {
        SmNotice {
            id: self.id.clone(),
            user: self.user.clone(),
            device: self.device.clone(),
            h_in: self.h_in,
            epoch: self.epoch,
            phase,
        }
    }
}

pub type SmGuard = OwnedMutexGuard<SmState>;

/// Resumable sessions of this node, by stream-management id, and the
/// cluster's view of the other nodes' ones.
pub struct SmRegistry {
    sessions: Mutex<HashMap<String, Slot>>,
    cluster: Arc<SmCluster>,
}

struct Slot {
    epoch: u32,
    state: Arc<AsyncMutex<SmState>>,
}

/// How a resumption of this node's copy of an id went.
enum Local {
    Resumed(SmGuard),
    Refused,
    /// Another node took the session over meanwhile.
    Moved,
}

impl Default for SmRegistry {
    /// A registry for one node (no cluster).
    fn default() -> Self {
        SmRegistry::new(false)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl SmRegistry {
    /// `clustered`: the store is shared with other nodes, so resumable
    /// sessions are announced to them and theirs resumed here.
    pub fn new(clustered: bool) -> Self {
        SmRegistry {
            sessions: Mutex::default(),
            cluster: Arc::new(SmCluster::new(clustered)),
        }
    }

    /// What announces this node's sessions (its flusher must be started).
    pub fn cluster(&self) -> &Arc<SmCluster> {
        &self.cluster
    }

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
            epoch: 0,
            full_at: None,
        }));
        // A fresh mutex: this never waits.
        let guard = state.clone().lock_owned().await;
        if resumable {
            {
                let mut sessions = lock(&self.sessions);
                prune(&mut sessions);
                sessions.insert(id, Slot { epoch: 0, state });
            }
            self.cluster.publish(guard.notice(Phase::Live));
        }
        guard
    }

    /// The owner handled a client stanza (`sm.h_in` counts it).
    pub fn handled(&self, sm: &SmState) {
        if sm.resumable {
            self.cluster.handled(&sm.id, sm.h_in);
        }
    }

    /// The session `id` of `user`/`device`, whose client has `h` of its
    /// stanzas: this node's (waiting, bounded, for its previous owner to
    /// let go), else another node's (see [`super::sm_cluster`]). None if
    /// unknown, expired or someone else's.
    pub async fn resume(&self, id: &str, user: &str, device: &str, h: u32) -> Option<SmGuard> {
        let local = {
            let mut sessions = lock(&self.sessions);
            prune(&mut sessions);
            sessions.get(id).map(|s| s.state.clone())
        };
        match local {
            Some(state) => match self.resume_local(state, user, device).await {
                Local::Resumed(guard) => Some(guard),
                Local::Refused => None,
                Local::Moved => self.resume_remote(id, user, device, h).await,
            },
            None => self.resume_remote(id, user, device, h).await,
        }
    }

    async fn resume_local(
        &self,
        state: Arc<AsyncMutex<SmState>>,
        user: &str,
        device: &str,
    ) -> Local {
        let Ok(mut guard) = tokio::time::timeout(Duration::from_secs(10), state.lock_owned()).await
        else {
            return Local::Refused;
        };
        if guard.user != user || guard.device != device {
            return Local::Refused;
        }
        if guard
            .detached_at
            .is_some_and(|t| t.elapsed() > RESUME_TIMEOUT)
        {
            self.remove_if_ours(&guard);
            return Local::Refused;
        }
        if !self.holds(&guard) {
            // Resumed on another node while we waited.
            return Local::Moved;
        }
        guard.detached_at = None;
        self.cluster.publish(guard.notice(Phase::Live));
        Local::Resumed(guard)
    }

    /// Take over another node's session: `h_in` as it last told, `h_out`
    /// the client's `h` (what it delivered is pending in the store).
    async fn resume_remote(&self, id: &str, user: &str, device: &str, h: u32) -> Option<SmGuard> {
        let notice = self.cluster.take_remote(id, user, device).await?;
        let epoch = notice.epoch.wrapping_add(1);
        let state = Arc::new(AsyncMutex::new(SmState {
            id: notice.id,
            user: notice.user,
            device: notice.device,
            h_in: notice.h_in,
            h_out: h,
            unacked: VecDeque::new(),
            detached_at: None,
            resumable: true,
            epoch,
            full_at: None,
        }));
        // A fresh mutex: this never waits.
        let guard = state.clone().lock_owned().await;
        {
            let mut sessions = lock(&self.sessions);
            if sessions.contains_key(id) {
                // A concurrent resumption got here first.
                return None;
            }
            sessions.insert(id.to_string(), Slot { epoch, state });
        }
        self.cluster.publish(guard.notice(Phase::Live));
        Some(guard)
    }

    /// The owner's connection ended: keep it resumable, or forget it.
    /// A session resumed on another node meanwhile is just dropped.
    pub fn detach(&self, mut guard: SmGuard, keep: bool) {
        if !self.holds(&guard) {
            return;
        }
        if keep && guard.resumable {
            guard.detached_at = Some(Instant::now());
            self.cluster.publish(guard.notice(Phase::Detached));
        } else {
            self.remove_if_ours(&guard);
            if guard.resumable {
                self.cluster.publish(guard.notice(Phase::Ended));
            }
        }
    }

    /// Another node's notice: remember it for resumption there, and drop
    /// this node's copy of the id if the session moved on (a later epoch).
    pub fn remote_notice(&self, notice: SmNotice) {
        {
            let mut sessions = lock(&self.sessions);
            if let Some(slot) = sessions.get(&notice.id) {
                if slot.epoch >= notice.epoch {
                    // Ours is as new: a late word of an older epoch.
                    return;
                }
                sessions.remove(&notice.id);
                self.cluster.forget(&notice.id);
            }
        }
        self.cluster.remote_seen(notice);
    }

    /// Whether `guard`'s state is the one registered under its id.
    fn holds(&self, guard: &SmGuard) -> bool {
        let sessions = lock(&self.sessions);
        sessions
            .get(&guard.id)
            .is_some_and(|s| Arc::ptr_eq(&s.state, OwnedMutexGuard::mutex(guard)))
    }

    fn remove_if_ours(&self, guard: &SmGuard) {
        let mut sessions = lock(&self.sessions);
        if sessions
            .get(&guard.id)
            .is_some_and(|s| Arc::ptr_eq(&s.state, OwnedMutexGuard::mutex(guard)))
        {
            sessions.remove(&guard.id);
        }
    }
}

/// Drop detached sessions past the resume timeout (those whose lock is
/// free; a locked one has a live owner).
fn prune(sessions: &mut HashMap<String, Slot>) {
    sessions.retain(|_, s| match s.state.try_lock() {
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
    async fn the_unacked_window_fills_and_an_ack_makes_room() {
        let r = SmRegistry::default();
        let mut s = r.enable("alice", "phone", false).await;
        s.sent(Some(1));
        s.sent(None);
        assert_eq!((s.room(2), s.full_since(2)), (1, None));
        s.sent(Some(2));
        assert_eq!(s.room(2), 0);
        let since = s.full_since(2).expect("full");
        assert_eq!(s.full_since(2), Some(since), "the first moment it was full");
        assert_eq!(s.acked(1), Some(vec![1]));
        assert_eq!(s.full_since(2), None);
        s.sent(Some(3));
        assert!(s.full_since(2).is_some_and(|t| t >= since));
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
            tokio::spawn(async move { r2.resume(&id2, "alice", "phone", 0).await.map(|g| g.h_in) });
        r.detach(old, true);
        assert_eq!(waiter.await.unwrap(), Some(5));
        assert!(r.resume(&id, "alice", "laptop", 0).await.is_none());
        assert!(r.resume("nope", "alice", "phone", 0).await.is_none());
    }

    fn remote(id: &str, h_in: u32, epoch: u32, phase: Phase) -> SmNotice {
        SmNotice {
            id: id.into(),
            user: "alice".into(),
            device: "phone".into(),
            h_in,
            epoch,
            phase,
        }
    }

    #[tokio::test]
    async fn another_nodes_session_resumes_here_in_the_next_epoch() {
        let r = SmRegistry::new(true);
        r.remote_notice(remote("far", 7, 0, Phase::Detached));
        assert!(r.resume("far", "alice", "laptop", 2).await.is_none());
        let mut g = r.resume("far", "alice", "phone", 2).await.expect("resumed");
        assert_eq!((g.h_in, g.h_out, g.epoch), (7, 2, 1));
        assert_eq!(g.acked(2), Some(vec![]), "the client's h is in range");
        // A late notice of the old epoch changes nothing here.
        r.remote_notice(remote("far", 9, 0, Phase::Detached));
        r.detach(g, true);
        let g = r
            .resume("far", "alice", "phone", 2)
            .await
            .expect("now local");
        assert_eq!((g.h_in, g.epoch), (7, 1));
    }

    #[tokio::test]
    async fn a_session_resumed_elsewhere_is_dropped_here() {
        let r = SmRegistry::new(true);
        let mut old = r.enable("alice", "phone", true).await;
        old.h_in = 3;
        let id = old.id.clone();
        // Another node resumed it (epoch 1) and is live with it.
        r.remote_notice(remote(&id, 3, 1, Phase::Live));
        r.handled(&old);
        r.detach(old, true);
        assert!(lock(&r.sessions).is_empty(), "the old copy is gone");
        // Resuming here again takes the other node's state once detached.
        r.remote_notice(remote(&id, 4, 1, Phase::Detached));
        let g = r.resume(&id, "alice", "phone", 0).await.expect("resumed");
        assert_eq!((g.h_in, g.epoch), (4, 2));
        // Not clustered: other nodes' notices are ignored.
        let single = SmRegistry::default();
        single.remote_notice(remote("x", 0, 0, Phase::Detached));
        assert!(single.resume("x", "alice", "phone", 0).await.is_none());
    }
}
