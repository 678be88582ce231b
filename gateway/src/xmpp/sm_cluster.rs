//! XEP-0198 resumption on any node: what a node tells the others about its
//! resumable sessions, and what it knows of theirs.
//!
//! A resumable session's counters are announced through the store
//! (`Store::announce`, topic [`SM_TOPIC`]) as an [`SmNotice`]: its id,
//! user, device, `h_in`, epoch and phase (live, detached, ended). Each node
//! has one flusher: the first change after a quiet spell goes out at once,
//! later ones at most every [`FLUSH_EVERY`], the latest state per session,
//! many sessions per announcement. Changes are: enabling, every change of
//! `h_in` (so a client resuming after this node died resends at most the
//! last ~200 ms of stanzas, which the store deduplicates by stanza id),
//! detaching and ending; a live session is announced again every
//! [`REFRESH_AFTER`] so that the other nodes keep it.
//!
//! Every node keeps the other nodes' notices ([`Remote`]): the latest per
//! id (a higher epoch wins), forgotten [`RESUME_TIMEOUT`] after the last
//! one, at most [`MAX_REMOTE`] (oldest dropped); an ended session is
//! forgotten at once. A resumption of an id that is not this node's takes
//! it from there ([`SmCluster::take_remote`]), for the same user and
//! device only. If the session was still live, its node has just been told
//! to end it (the resuming login is announced like any other, see
//! `sessions::cluster`) and the taker waits up to [`DETACH_WAIT`] for its
//! final count; a dead node's last count is used after that. The resumed
//! session has the next epoch: every node then drops an older local copy
//! of the id and ignores late notices of the older epoch.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use imgate_core::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::stream_management::RESUME_TIMEOUT;
use super::XmppContext;
use crate::sessions::cluster::follow_topic;

/// The announcement topic of stream-management states.
pub const SM_TOPIC: &str = "xmpp-sm";
/// Least time between two announcements of this node's SM states.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Most sessions in one announcement (about 120 bytes each as JSON).
const PER_RECORD: usize = 256;
/// A live session is announced again after this long without a change.
const REFRESH_AFTER: Duration = Duration::from_secs(RESUME_TIMEOUT.as_secs() / 3);
/// How often the flusher looks for sessions to announce again.
const REFRESH_CHECK: Duration = Duration::from_secs(10);
/// Most remote SM states kept.
pub const MAX_REMOTE: usize = 100_000;
/// How long a resumption waits for a live session's node to report it
/// detached.
pub const DETACH_WAIT: Duration = Duration::from_secs(2);

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Connected to its node.
    #[default]
    Live,
    /// Its connection was lost: resumable until the timeout.
    Detached,
    /// Closed or failed: not resumable.
    Ended,
}

/// One resumable session's state, as announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmNotice {
    pub id: String,
    pub user: String,
    pub device: String,
    /// Client stanzas handled.
    pub h_in: u32,
    /// Resumptions on another node so far.
    #[serde(default)]
    pub epoch: u32,
    #[serde(default)]
    pub phase: Phase,
}

/// One announcement: the sessions that changed.
#[derive(Debug, Serialize, Deserialize)]
struct Batch {
    sessions: Vec<SmNotice>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// This node's side of the cluster's SM states (see the module doc).
/// Disabled (every call a no-op) when the store is not shared.
pub struct SmCluster {
    enabled: bool,
    outbox: Mutex<Outbox>,
    wake: Notify,
    remote: Mutex<Remote>,
    /// Fires when a remote state arrives (for [`SmCluster::take_remote`]).
    changed: Notify,
}

impl SmCluster {
    pub fn new(enabled: bool) -> Self {
        SmCluster {
            enabled,
            outbox: Mutex::default(),
            wake: Notify::new(),
            remote: Mutex::default(),
            changed: Notify::new(),
        }
    }

    /// Announce `notice` (this node's session) with the next flush.
    pub fn publish(&self, notice: SmNotice) {
        if self.enabled {
            lock(&self.outbox).put(notice);
            self.wake.notify_one();
        }
    }

    /// This node's session `id` has handled `h_in` stanzas.
    pub fn handled(&self, id: &str, h_in: u32) {
        if self.enabled && lock(&self.outbox).handled(id, h_in) {
            self.wake.notify_one();
        }
    }

    /// Stop announcing session `id` (it was resumed on another node).
    pub fn forget(&self, id: &str) {
        if self.enabled {
            lock(&self.outbox).own.remove(id);
        }
    }

    /// Another node's notice.
    pub fn remote_seen(&self, notice: SmNotice) {
        if !self.enabled {
            return;
        }
        if lock(&self.remote).insert(notice, Instant::now()) {
            self.changed.notify_waiters();
        }
    }

    /// Take over another node's session `id` of `user`/`device`: its last
    /// announced state, once detached or after [`DETACH_WAIT`]. None if
    /// unknown, expired, ended, someone else's, or resumed elsewhere
    /// meanwhile.
    pub async fn take_remote(&self, id: &str, user: &str, device: &str) -> Option<SmNotice> {
        if !self.enabled {
            return None;
        }
        let deadline = tokio::time::Instant::now() + DETACH_WAIT;
        let mut epoch = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut remote = lock(&self.remote);
                let known = remote.get(id, Instant::now())?;
                if known.user != user || known.device != device {
                    return None;
                }
                if *epoch.get_or_insert(known.epoch) != known.epoch {
                    return None;
                }
                if known.phase != Phase::Live || tokio::time::Instant::now() >= deadline {
                    return remote.by_id.remove(id).map(|k| k.notice);
                }
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// Announce this node's changed SM states until the process ends.
    pub async fn flush(self: Arc<Self>, store: Arc<dyn Store>) {
        let mut last_refresh = Instant::now();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(REFRESH_CHECK) => {}
            }
            let now = Instant::now();
            let refresh = now.duration_since(last_refresh) >= REFRESH_CHECK;
            if refresh {
                last_refresh = now;
            }
            let notices = lock(&self.outbox).take(now, refresh);
            for chunk in notices.chunks(PER_RECORD) {
                let batch = Batch {
                    sessions: chunk.to_vec(),
                };
                let Ok(payload) = serde_json::to_string(&batch) else {
                    continue;
                };
                if let Err(e) = store.announce(SM_TOPIC.to_string(), payload).await {
                    tracing::debug!(error = %e, "SM states not announced to the other nodes");
                }
            }
            tokio::time::sleep(FLUSH_EVERY).await;
        }
    }
}

/// Apply the other nodes' SM notices here until the store closes.
pub async fn follow(store: Arc<dyn Store>, ctx: Arc<XmppContext>) {
    follow_topic(store, SM_TOPIC, |batch: Batch, local| {
        if !local {
            for notice in batch.sessions {
                ctx.sm.remote_notice(notice);
            }
        }
    })
    .await;
}

/// This node's resumable sessions as last told, and which changed.
#[derive(Default)]
struct Outbox {
    own: HashMap<String, Own>,
    /// Ids with a change not announced yet (each once: see `Own::dirty`).
    dirty: Vec<String>,
}

struct Own {
    notice: SmNotice,
    dirty: bool,
    announced: Option<Instant>,
}

impl Outbox {
    fn put(&mut self, notice: SmNotice) {
        let id = notice.id.clone();
        let own = self.own.entry(id.clone()).or_insert_with(|| Own {
            notice: notice.clone(),
            dirty: false,
            announced: None,
        });
        own.notice = notice;
        if !own.dirty {
            own.dirty = true;
            self.dirty.push(id);
        }
    }

    /// True if this changed what is announced.
    fn handled(&mut self, id: &str, h_in: u32) -> bool {
        let Some(own) = self.own.get_mut(id) else {
            return false;
        };
        if own.notice.h_in == h_in || own.notice.phase != Phase::Live {
            return false;
        }
        own.notice.h_in = h_in;
        if !own.dirty {
            own.dirty = true;
            self.dirty.push(id.to_string());
        }
        true
    }

    /// What to announce now: the changes, and (`refresh`) the live
    /// sessions not announced for [`REFRESH_AFTER`]. A detached or ended
    /// session is announced once and then forgotten here.
    fn take(&mut self, now: Instant, refresh: bool) -> Vec<SmNotice> {
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.dirty) {
            let Some(own) = self.own.get_mut(&id) else {
                continue;
            };
            if !own.dirty {
                continue;
            }
            own.dirty = false;
            own.announced = Some(now);
            out.push(own.notice.clone());
            if own.notice.phase != Phase::Live {
                self.own.remove(&id);
            }
        }
        if refresh {
            for own in self.own.values_mut() {
                let stale = own
                    .announced
                    .is_some_and(|t| now.duration_since(t) >= REFRESH_AFTER);
                if stale && !own.dirty {
                    own.announced = Some(now);
                    out.push(own.notice.clone());
                }
            }
        }
        out
    }
}

/// The other nodes' SM states (see the module doc).
#[derive(Default)]
struct Remote {
    by_id: HashMap<String, Known>,
    /// (sequence, arrival, id), oldest first; an entry whose id was
    /// updated later (another sequence) is skipped.
    order: VecDeque<(u64, Instant, String)>,
    next_seq: u64,
}

struct Known {
    notice: SmNotice,
    at: Instant,
    seq: u64,
}

impl Remote {
    /// Keep `n` unless an entry of a later epoch is known; false if
    /// nothing changed.
    fn insert(&mut self, n: SmNotice, now: Instant) -> bool {
        if self
            .by_id
            .get(&n.id)
            .is_some_and(|k| k.notice.epoch > n.epoch)
        {
            return false;
        }
        if n.phase == Phase::Ended {
            return self.by_id.remove(&n.id).is_some();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((seq, now, n.id.clone()));
        self.by_id.insert(
            n.id.clone(),
            Known {
                notice: n,
                at: now,
                seq,
            },
        );
        self.prune(now);
        true
    }

    /// Drop what expired and, beyond [`MAX_REMOTE`], the oldest.
    fn prune(&mut self, now: Instant) {
        while let Some((seq, at, id)) = self.order.front() {
            let expired = now.duration_since(*at) > RESUME_TIMEOUT;
            if !expired && self.by_id.len() <= MAX_REMOTE {
                break;
            }
            if self.by_id.get(id).is_some_and(|k| k.seq == *seq) {
                self.by_id.remove(id);
            }
            self.order.pop_front();
        }
        // Updates leave stale entries behind: compact now and then
        // (amortized O(1) per insert).
        if self.order.len() > 2 * self.by_id.len() + 1024 {
            let by_id = &self.by_id;
            self.order
                .retain(|(seq, _, id)| by_id.get(id).is_some_and(|k| k.seq == *seq));
        }
    }

    /// The state of `id`, unless expired.
    fn get(&self, id: &str, now: Instant) -> Option<&SmNotice> {
        self.by_id
            .get(id)
            .filter(|k| now.duration_since(k.at) <= RESUME_TIMEOUT)
            .map(|k| &k.notice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(id: &str, h_in: u32, epoch: u32, phase: Phase) -> SmNotice {
        SmNotice {
            id: id.into(),
            user: "alice".into(),
            device: "phone".into(),
            h_in,
            epoch,
            phase,
        }
    }

    #[test]
    fn the_outbox_sends_the_latest_state_once_and_forgets_detached_ones() {
        let mut o = Outbox::default();
        let t0 = Instant::now();
        o.put(notice("s1", 0, 0, Phase::Live));
        assert!(o.handled("s1", 1));
        assert!(o.handled("s1", 2));
        assert!(!o.handled("s1", 2), "no change");
        assert!(!o.handled("nope", 2));
        assert_eq!(o.take(t0, false), vec![notice("s1", 2, 0, Phase::Live)]);
        assert_eq!(o.take(t0, false), vec![]);
        assert_eq!(o.take(t0 + REFRESH_AFTER / 2, true), vec![]);
        assert_eq!(
            o.take(t0 + REFRESH_AFTER, true),
            vec![notice("s1", 2, 0, Phase::Live)],
            "refreshed"
        );
        o.put(notice("s1", 3, 0, Phase::Detached));
        assert!(!o.handled("s1", 4), "detached: no more counting");
        assert_eq!(o.take(t0, false), vec![notice("s1", 3, 0, Phase::Detached)]);
        assert!(o.own.is_empty());
    }

    #[test]
    fn batches_decode_and_default_the_optional_fields() {
        let b: Batch =
            serde_json::from_str(r#"{"sessions":[{"id":"x","user":"u","device":"d","h_in":7}]}"#)
                .expect("decodes");
        assert_eq!(b.sessions[0].epoch, 0);
        assert_eq!(b.sessions[0].phase, Phase::Live);
        let json = serde_json::to_string(&Batch {
            sessions: vec![notice("x", 1, 2, Phase::Detached)],
        })
        .expect("encodes");
        assert!(json.contains(r#""phase":"detached""#), "{json}");
        assert!(serde_json::from_str::<Batch>(r#"{"sessions":[{"id":1}]}"#).is_err());
    }

    #[test]
    fn remote_states_later_epoch_wins_ended_forgotten_expired_and_capped() {
        let mut r = Remote::default();
        let t0 = Instant::now();
        assert!(r.insert(notice("s1", 5, 1, Phase::Live), t0));
        assert!(
            !r.insert(notice("s1", 9, 0, Phase::Detached), t0),
            "older epoch"
        );
        assert_eq!(r.get("s1", t0).map(|n| n.h_in), Some(5));
        assert!(r.insert(notice("s1", 6, 1, Phase::Detached), t0));
        assert_eq!(r.get("s1", t0).map(|n| n.phase), Some(Phase::Detached));
        assert!(r
            .get("s1", t0 + RESUME_TIMEOUT + Duration::from_secs(1))
            .is_none());
        assert!(r.insert(notice("s1", 6, 1, Phase::Ended), t0));
        assert!(r.get("s1", t0).is_none());
        // Expired entries go with the next insert.
        r.insert(notice("s2", 0, 0, Phase::Live), t0);
        r.insert(
            notice("s3", 0, 0, Phase::Live),
            t0 + RESUME_TIMEOUT + Duration::from_secs(1),
        );
        assert!(!r.by_id.contains_key("s2"));
        // The count is capped, the oldest dropped; updates do not pile up.
        for i in 0..(MAX_REMOTE + 5) {
            r.insert(
                notice(&format!("c{i}"), 0, 0, Phase::Live),
                t0 + RESUME_TIMEOUT,
            );
        }
        assert_eq!(r.by_id.len(), MAX_REMOTE);
        assert!(!r.by_id.contains_key("c0"));
        assert!(r.by_id.contains_key(&format!("c{}", MAX_REMOTE + 4)));
        for h in 0..10_000 {
            r.insert(notice("c99999", h, 0, Phase::Live), t0 + RESUME_TIMEOUT);
        }
        assert!(r.order.len() <= 2 * r.by_id.len() + 1024);
    }

    #[tokio::test]
    async fn taking_a_remote_state_checks_the_owner_and_waits_for_the_detach() {
        let c = Arc::new(SmCluster::new(true));
        c.remote_seen(notice("s1", 4, 0, Phase::Detached));
        assert!(c.take_remote("s1", "alice", "laptop").await.is_none());
        assert!(c.take_remote("s1", "bob", "phone").await.is_none());
        assert!(c.take_remote("nope", "alice", "phone").await.is_none());
        let got = c.take_remote("s1", "alice", "phone").await;
        assert_eq!(got, Some(notice("s1", 4, 0, Phase::Detached)));
        assert!(
            c.take_remote("s1", "alice", "phone").await.is_none(),
            "taken"
        );

        // Live: the taker waits for the final count.
        c.remote_seen(notice("s2", 1, 0, Phase::Live));
        let c2 = c.clone();
        let taker = tokio::spawn(async move { c2.take_remote("s2", "alice", "phone").await });
        tokio::task::yield_now().await;
        c.remote_seen(notice("s2", 3, 0, Phase::Detached));
        let got = taker.await.expect("taker");
        assert_eq!(got.map(|n| (n.h_in, n.phase)), Some((3, Phase::Detached)));

        // A dead node's live state is taken after the wait.
        c.remote_seen(notice("s3", 2, 0, Phase::Live));
        let started = tokio::time::Instant::now();
        let got = c.take_remote("s3", "alice", "phone").await;
        assert_eq!(got.map(|n| n.h_in), Some(2));
        assert!(started.elapsed() >= DETACH_WAIT);

        // Disabled (embedded store): nothing is kept.
        let off = SmCluster::new(false);
        off.remote_seen(notice("s4", 0, 0, Phase::Detached));
        assert!(off.take_remote("s4", "alice", "phone").await.is_none());
    }
}
