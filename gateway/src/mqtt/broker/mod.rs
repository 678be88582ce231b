//! The generic MQTT broker behind topics outside `im/`: sessions, the
//! subscription trie, retained messages, offline queues, outbound
//! in-flight state, delayed wills and session expiry. No sockets: a
//! connection task drives it (`super::session`).
//!
//! Memory policy (bounded per session): each session queues at most
//! `mqtt_max_queued` messages. When full, a QoS 0 message for it is
//! dropped (logged, counted); a QoS ≥ 1 message is never dropped silently:
//! the session is discarded as a whole (logged, counted), its connection
//! is closed with reason 0x97, and the client learns it from
//! `session present = 0` on its next CONNECT. Retained messages (per
//! user and in total) and subscriptions per session are bounded too: see
//! [`retained_quota`] and [`admission`].
//!
//! Durability: retained messages and persistent sessions are written to
//! `<data_dir>/mqtt.redb` (see [`persist`]) when they change, piece by
//! piece: a QoS ≥ 1 delivery queued for a persistent session is appended
//! as one record and saved (fsync) before the publisher gets its PUBACK,
//! whether the subscriber is online or not; if that write fails the
//! publisher is refused (MQTT 5: 0x80; 3.1.1: the connection closes, the
//! client resends). Sends and acks mark and delete records without an
//! fsync of their own (a crash may redeliver an acked message, never lose
//! an unacked one).
//!
//! Shared subscriptions (`$share/{name}/{filter}`, MQTT 5 §4.8.2, also
//! accepted from 3.1.1 clients): each matching message goes to one member
//! of the group, round robin over the connected members (offline
//! persistent members queue it when none is connected); no retained
//! messages on subscribe.
//!
//! With several nodes (a [`ClusterBus`]) a group gets one copy per message
//! across the cluster: every node announces its groups and their member
//! counts through the store, and keeps the other nodes' (see
//! [`share_registry`]: on a change, at most once a second, and every 30 s;
//! a node silent for 90 s is forgotten). The publishing node picks the
//! node that delivers, round robin over the members of all nodes
//! (connected ones first), for each group it knows that matches (its own
//! and the other nodes'), and puts its choices in the forwarded message;
//! the other nodes deliver a group's copy only when it is theirs. A group
//! the publisher did not know (its announcement not yet seen there) is
//! delivered by every node that has it: a duplicate rather than a loss.
//! Windows, stated plainly: a copy assigned to a node whose members just
//! left (or whose last connected member just went offline without a
//! persistent session) is dropped there, until the publisher applies that
//! node's next announcement (normally within a second); a copy assigned to
//! a node that crashed is lost until the others forget it (90 s, or
//! sooner when it restarts: its new instance replaces it); and a
//! node over its announcement limit (10,000 groups) delivers the groups
//! beyond it as a single node does (one copy per node). Without a bus
//! none of this runs.
//!
//! Several nodes: with a [`ClusterBus`] (RabbitMQ store), every generic
//! publish is also forwarded to the other nodes, which deliver it to their
//! own subscribers, and retained updates are applied in the bus's order on
//! every node (see [`cluster`]).

mod admission;
pub mod cluster;
#[cfg(test)]
mod durability_tests;
mod message;
mod persist;
mod retained_quota;
mod session_state;
mod share_registry;
mod trie;

pub use admission::OverQuota;
pub use cluster::ClusterBus;
pub use message::{AppMessage, Delivery};
pub use session_state::Inflight;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use imgate_codecs::mqtt::{LastWill, Properties, Property, Publish, QoS, SubOptions};
use imgate_core::now_ms;
use imgate_core::pipeline::{RateLimitConfig, RateLimiter};
use tokio::sync::Notify;

use message::StoredDelivery;
pub use persist::PersistError;
use persist::{BrokerDb, PersistOp};
use retained_quota::{Exceeded, RetainedQuota};
use session_state::{ConnLink, Queued, SessionState, Subscription};
use share_registry::{Assignments, ClusterShares, Counts};
use trie::SubscriptionTrie;

use super::acl::{self, TopicAcl};

/// Session key: user and device (the MQTT client id) together.
pub fn session_key(user: &str, device: &str) -> String {
    format!("{user}\u{1}{device}")
}

struct PendingWill {
    at: Instant,
    key: String,
    will: AppMessage,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, SessionState>,
    trie: SubscriptionTrie,
    /// Round-robin position per shared subscription filter.
    share_next: HashMap<String, usize>,
    retained: BTreeMap<String, Arc<AppMessage>>,
    /// What `retained` counts for, per owner and in total.
    quota: RetainedQuota,
    next_generation: u64,
    wills: Vec<PendingWill>,
    /// Shared groups across nodes: only with a cluster bus.
    cluster: Option<ClusterShares>,
}

/// Where a message being routed was published.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// Here: the retained table is updated and, with a cluster, each
    /// shared group is assigned to the node that delivers it.
    Local,
    /// On another node, which assigned the shared groups it knew.
    Remote(&'a Assignments),
}

pub struct Broker {
    inner: Mutex<Inner>,
    /// The `mqtt.redb` writer; changes are submitted under the state lock,
    /// so snapshots reach the disk in the order they were taken.
    db: persist::Writer,
    max_queued: usize,
    /// The other nodes, when the store is shared (set once at start).
    bus: OnceLock<Arc<dyn ClusterBus>>,
    /// The topic ACL deliveries are checked against (unset: open).
    acl: OnceLock<Arc<TopicAcl>>,
    /// Per-user rate limit of generic publishes (the pipeline's settings).
    pub limiter: RateLimiter,
    pub rate_limited: AtomicU64,
    pub dropped_qos0: AtomicU64,
    pub discarded_sessions: AtomicU64,
    /// Subscriptions (generic and shared) one session may hold; 0 = any.
    max_subscriptions: AtomicUsize,
    pub retained_refused: AtomicU64,
    pub subscriptions_refused: AtomicU64,
}

/// Marks a shared subscription's member in the trie:
/// `SHARE_MARK name SHARE_MARK session-key`, under the inner filter.
const SHARE_MARK: char = '\u{2}';

/// Where a subscription of `key` to `filter` lives in the trie: the filter
/// to match and the member to find.
fn trie_entry(filter: &str, key: &str) -> (String, String) {
    match imgate_codecs::mqtt::topic::shared(filter) {
        Some((name, inner)) => (
            inner.to_owned(),
            format!("{SHARE_MARK}{name}{SHARE_MARK}{key}"),
        ),
        None => (filter.to_owned(), key.to_owned()),
    }
}

fn trie_insert(trie: &mut SubscriptionTrie, filter: &str, key: &str) {
    let (f, member) = trie_entry(filter, key);
    trie.insert(&f, &member);
}

fn trie_remove(trie: &mut SubscriptionTrie, filter: &str, key: &str) {
    let (f, member) = trie_entry(filter, key);
    trie.remove(&f, &member);
}

/// What a local publish did: the local sessions it matched, and the
/// forwarding to the other nodes (see [`Broker::publish_forwarded`]).
pub type Published = (
    usize,
    Option<futures_util::future::BoxFuture<'static, Result<(), String>>>,
);

/// Why [`Broker::publish_forwarded`] did not accept a message.
#[derive(Debug, thiserror::Error)]
pub enum PublishRefused {
    #[error("over the limit of {}", .0.as_str())]
    Quota(Exceeded),
    #[error("{0}")]
    NotSaved(PersistError),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// What `connect` returns.
pub struct Attached {
    pub generation: u64,
    pub session_present: bool,
    pub notify: Arc<Notify>,
}

impl Broker {
    /// Open (or create) `mqtt.redb` under `data_dir` and load its state.
    pub fn open(
        data_dir: &Path,
        max_queued: usize,
        rate: RateLimitConfig,
    ) -> anyhow::Result<Arc<Broker>> {
        let db = BrokerDb::open(data_dir)?;
        let (retained, sessions) = db.load()?;
        let mut inner = Inner::default();
        for d in retained {
            inner.quota.add(&d.msg);
            if let Some(old) = inner.retained.insert(d.msg.topic.clone(), d.msg) {
                inner.quota.remove(&old);
            }
        }
        for (key, s) in sessions {
            let state = SessionState::from_stored(s);
            for f in state.subs.keys() {
                trie_insert(&mut inner.trie, f, &key);
            }
            inner.sessions.insert(key, state);
        }
        tracing::info!(
            retained = inner.retained.len(),
            sessions = inner.sessions.len(),
            "mqtt: broker state loaded from mqtt.redb"
        );
        Ok(Arc::new(Broker {
            inner: Mutex::new(inner),
            db: persist::Writer::start(db)?,
            max_queued: max_queued.max(1),
            bus: OnceLock::new(),
            acl: OnceLock::new(),
            limiter: RateLimiter::new(rate),
            rate_limited: AtomicU64::new(0),
            dropped_qos0: AtomicU64::new(0),
            discarded_sessions: AtomicU64::new(0),
            max_subscriptions: AtomicUsize::new(
                crate::config::Config::default().mqtt_max_subscriptions_per_session,
            ),
            retained_refused: AtomicU64::new(0),
            subscriptions_refused: AtomicU64::new(0),
        }))
    }

    /// Write `ops` in snapshot order and wait until they are on disk: call
    /// with the state lock held; it is released before the wait, so
    /// concurrent changes share one commit (see [`persist::Writer`]).
    fn persist(&self, guard: MutexGuard<'_, Inner>, ops: Vec<PersistOp>) {
        let pending = self.submit(ops);
        drop(guard);
        if let Err(e) = Self::wait(pending) {
            tracing::warn!(error = %e, "mqtt: persisting broker state failed");
        }
    }

    /// The first half of [`Self::persist`]: submit under the lock.
    fn submit(&self, ops: Vec<PersistOp>) -> Option<persist::Pending> {
        (!ops.is_empty()).then(|| self.db.submit(ops))
    }

    /// The second half of [`Self::persist`]: wait, without the lock.
    fn wait(pending: Option<persist::Pending>) -> Result<(), PersistError> {
        let Some(pending) = pending else {
            return Ok(());
        };
        tokio::task::block_in_place(|| pending.wait())
    }

    /// Submit changes whose loss at a crash means a redelivery only (acks,
    /// in-flight marks): not waited for.
    fn submit_quiet(&self, ops: Vec<PersistOp>) {
        if !ops.is_empty() {
            drop(self.db.submit(ops));
        }
    }

    /// Count the shared subscriptions of session `key` in the cluster's
    /// view of this node's groups in (`add`) or out, as the session is now
    /// (connected or not). Call with `false` before a change and `true`
    /// after it. Nothing without a cluster.
    fn share_track(g: &mut Inner, key: &str, add: bool) {
        let Inner {
            sessions,
            cluster: Some(c),
            ..
        } = g
        else {
            return;
        };
        let Some(s) = sessions.get(key) else { return };
        let online = s.conn.is_some();
        for f in s.subs.keys() {
            if imgate_codecs::mqtt::topic::shared(f).is_some() {
                c.local.adjust(f, online, add);
            }
        }
    }

    /// Take over or create the session of `key` for a new connection.
    pub fn connect(
        &self,
        user: &str,
        device: &str,
        clean_start: bool,
        expiry_secs: u32,
    ) -> Attached {
        let key = session_key(user, device);
        let mut g = lock(&self.inner);
        g.next_generation += 1;
        let generation = g.next_generation;
        g.wills.retain(|w| w.key != key);
        let mut ops = Vec::new();
        let existing = g.sessions.contains_key(&key);
        if clean_start && existing {
            Self::remove_session(&mut g, &key);
            ops.push(PersistOp::DeleteSession(key.clone()));
        }
        let was_stored = g.sessions.get(&key).is_some_and(|s| s.stored);
        Self::share_track(&mut g, &key, false);
        let session_present = existing && !clean_start;
        let notify = Arc::new(Notify::new());
        let s = g
            .sessions
            .entry(key.clone())
            .or_insert_with(|| SessionState::new(user, device));
        s.expiry_secs = expiry_secs;
        s.offline_since = None;
        s.overflowed = false;
        s.conn = Some(ConnLink {
            generation,
            notify: notify.clone(),
        });
        // IM deliveries in flight belonged to the old connection; the
        // store redelivers what was not acked.
        s.inflight.retain(|_, f| !matches!(f, Inflight::Im { .. }));
        if expiry_secs == 0 {
            if was_stored {
                ops.push(PersistOp::DeleteSession(key.clone()));
            }
            s.forget_stored();
        } else {
            ops.extend(s.save(&key));
        }
        Self::share_track(&mut g, &key, true);
        self.persist(g, ops);
        Attached {
            generation,
            session_present,
            notify,
        }
    }

    /// A new session expiry from the client's DISCONNECT (MQTT 5).
    pub fn connect_expiry(&self, key: &str, generation: u64, expiry_secs: u32) {
        let mut g = lock(&self.inner);
        if let Some(s) = g.sessions.get_mut(key) {
            if s.conn.as_ref().map(|c| c.generation) == Some(generation) {
                s.expiry_secs = expiry_secs;
            }
        }
    }

    fn remove_session(g: &mut Inner, key: &str) {
        Self::share_track(g, key, false);
        if let Some(s) = g.sessions.remove(key) {
            for f in s.subs.keys() {
                trie_remove(&mut g.trie, f, key);
            }
        }
    }

    /// The connection `generation` of `key` ended. With `will`, schedule
    /// it (after `will_delay`, capped by the session expiry).
    pub fn disconnect(&self, key: &str, generation: u64, will: Option<(AppMessage, u32)>) {
        let mut g = lock(&self.inner);
        let Some(s) = g.sessions.get(key) else {
            return;
        };
        if s.conn.as_ref().map(|c| c.generation) != Some(generation) {
            return; // taken over: the newer connection owns the session
        }
        Self::share_track(&mut g, key, false);
        let Some(s) = g.sessions.get_mut(key) else {
            return;
        };
        s.conn = None;
        s.offline_since = Some(Instant::now());
        s.inflight.retain(|_, f| !matches!(f, Inflight::Im { .. }));
        let expiry = s.expiry_secs;
        let was_stored = s.stored;
        let mut ops = s.save(key);
        Self::share_track(&mut g, key, true);
        if expiry == 0 {
            Self::remove_session(&mut g, key);
            if was_stored {
                // Persistent until its DISCONNECT set the expiry to 0.
                ops.push(PersistOp::DeleteSession(key.to_owned()));
            }
        }
        if let Some((will, delay)) = will {
            let delay = delay.min(expiry);
            if delay == 0 {
                drop(g);
                self.publish_will(will);
                g = lock(&self.inner);
            } else {
                g.wills.push(PendingWill {
                    at: Instant::now() + Duration::from_secs(u64::from(delay)),
                    key: key.to_owned(),
                    will,
                });
            }
        }
        self.persist(g, ops);
    }

    /// Periodic work: fire due wills, end expired offline sessions.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut g = lock(&self.inner);
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut g.wills)
            .into_iter()
            .partition(|w| w.at <= now);
        g.wills = keep;
        let expired: Vec<String> = g
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.conn.is_none()
                    && s.expiry_secs != u32::MAX
                    && s.offline_since.is_some_and(|t| {
                        now.duration_since(t) >= Duration::from_secs(u64::from(s.expiry_secs))
                    })
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut ops = Vec::new();
        for k in expired {
            Self::remove_session(&mut g, &k);
            ops.push(PersistOp::DeleteSession(k));
        }
        self.persist(g, ops);
        for w in due {
            self.publish_will(w.will);
        }
    }

    /// Connect this broker to the other nodes (once; later calls are
    /// ignored).
    pub fn set_bus(&self, bus: Arc<dyn ClusterBus>) {
        self.set_bus_as(bus, share_registry::new_instance_id());
    }

    /// [`Self::set_bus`] with a given instance id (tests).
    fn set_bus_as(&self, bus: Arc<dyn ClusterBus>, me: u64) {
        if self.bus.set(bus).is_err() {
            tracing::warn!("mqtt: cluster bus already set");
            return;
        }
        let mut g = lock(&self.inner);
        g.cluster = Some(ClusterShares::new(me));
        let keys: Vec<String> = g.sessions.keys().cloned().collect();
        for k in keys {
            Self::share_track(&mut g, &k, true);
        }
    }

    /// Check deliveries against `acl` from now on (once; later calls are
    /// ignored).
    pub fn set_acl(&self, acl: Arc<TopicAcl>) {
        if self.acl.set(acl).is_err() {
            tracing::warn!("mqtt: topic ACL already set");
        }
    }

    /// The topic ACL (None: open), e.g. for wills: see
    /// [`TopicAcl::may_publish`].
    pub fn acl(&self) -> Option<&Arc<TopicAcl>> {
        self.acl.get()
    }

    /// Route a generic message here (retained store, then every matching
    /// session's queue) and forward it to the other nodes without waiting.
    /// `from` is the publisher's session key (no local). Over a retained
    /// limit it is delivered, not retained.
    pub fn publish(&self, from: Option<&str>, msg: AppMessage) -> usize {
        let (matched, forwarded) = match self.publish_forwarded(from, msg, OverQuota::Unretain) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "mqtt: a will could not be published");
                return 0;
            }
        };
        if let Some(f) = forwarded {
            tokio::spawn(async move {
                if let Err(e) = f.await {
                    tracing::warn!(error = %e, "mqtt: forwarding a publish to the other nodes failed");
                }
            });
        }
        matched
    }

    /// Like [`Self::publish`], but hands back the forwarding to the other
    /// nodes (None without a bus): it resolves once the bus holds the
    /// message durably. Already queued in publish order when this returns.
    /// A retained message over a limit is handled per `over_quota`. An
    /// error: refused over a retained limit, or not saved for a persistent
    /// session (either way the publisher must not be told it was
    /// accepted).
    pub fn publish_forwarded(
        &self,
        from: Option<&str>,
        mut msg: AppMessage,
        over_quota: OverQuota,
    ) -> Result<Published, PublishRefused> {
        let mut assigned = Assignments::new();
        let mut g = lock(&self.inner);
        if msg.retain && !msg.payload.is_empty() {
            let old = g.retained.get(&msg.topic).map(|m| &**m);
            if let Err(e) = g.quota.check(old, &msg) {
                self.retained_over(&mut msg, e, over_quota)
                    .map_err(PublishRefused::Quota)?;
            }
        }
        let msg = Arc::new(msg);
        let (matched, ops) = self.route(&mut g, from, &msg, Origin::Local, &mut assigned);
        let pending = self.submit(ops);
        drop(g);
        // Forwarded before the wait for the disk: both proceed at once.
        let forwarded = self.bus.get().map(|bus| bus.forward(&msg, &assigned));
        Self::wait(pending).map_err(PublishRefused::NotSaved)?;
        Ok((matched, forwarded))
    }

    /// A publish made on another node: to local subscribers only (the
    /// retained table is updated through [`Self::apply_retained`]), its
    /// shared groups as the publishing node `assigned` them.
    pub fn inject_remote(&self, msg: AppMessage, assigned: &Assignments) -> usize {
        let msg = Arc::new(msg);
        let mut g = lock(&self.inner);
        let origin = Origin::Remote(assigned);
        let (matched, ops) = self.route(&mut g, None, &msg, origin, &mut Assignments::new());
        self.persist(g, ops);
        matched
    }

    /// A retained update in the cluster's order (from any node, this one
    /// included): set or clear the topic's retained message, deliver
    /// nothing.
    pub fn apply_retained(&self, msg: AppMessage) {
        if !msg.retain {
            return;
        }
        let msg = Arc::new(msg);
        let mut g = lock(&self.inner);
        let ops = Self::update_retained(&mut g, &msg);
        self.persist(g, ops);
    }

    fn update_retained(g: &mut Inner, msg: &Arc<AppMessage>) -> Vec<PersistOp> {
        if msg.payload.is_empty() {
            if let Some(old) = g.retained.remove(&msg.topic) {
                g.quota.remove(&old);
            }
            return vec![PersistOp::DeleteRetained(msg.topic.clone())];
        }
        if g.retained.get(&msg.topic).is_some_and(|m| m == msg) {
            return vec![]; // our own update coming back through the bus
        }
        g.quota.add(msg);
        if let Some(old) = g.retained.insert(msg.topic.clone(), msg.clone()) {
            g.quota.remove(&old);
        }
        let d = Delivery {
            msg: msg.clone(),
            qos: msg.qos,
            retain: true,
            subscription_ids: vec![],
        };
        vec![PersistOp::PutRetained(
            msg.topic.clone(),
            StoredDelivery::from_delivery(&d),
        )]
    }

    /// Queue `msg` for every matching local session; the matched count
    /// and what to persist. From a local publish with a cluster, the
    /// shared groups' nodes go into `assigned`.
    fn route(
        &self,
        g: &mut Inner,
        from: Option<&str>,
        msg: &Arc<AppMessage>,
        origin: Origin<'_>,
        assigned: &mut Assignments,
    ) -> (usize, Vec<PersistOp>) {
        let mut ops = Vec::new();
        if msg.retain && matches!(origin, Origin::Local) {
            ops = Self::update_retained(g, msg);
        }
        // Overlapping subscriptions of one session: one delivery with the
        // highest QoS and every subscription identifier (MQTT 5 §3.3.4).
        let mut per_session: HashMap<String, Delivery> = HashMap::new();
        // Shared subscriptions: (full filter) → members, one gets it.
        let mut shares: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut targets: Vec<(String, String)> = Vec::new();
        for (member, filter) in g.trie.matches(&msg.topic) {
            match member
                .strip_prefix(SHARE_MARK)
                .and_then(|rest| rest.split_once(SHARE_MARK))
            {
                Some((name, key)) => shares
                    .entry(format!("$share/{name}/{filter}"))
                    .or_default()
                    .push(key.to_owned()),
                None => targets.push((member, filter)),
            }
        }
        if let (Origin::Local, Some(c)) = (origin, &g.cluster) {
            // Groups with members on other nodes only.
            for full in c.remote.matching(&msg.topic) {
                shares.entry(full).or_default();
            }
        }
        // Only to sessions whose user may read the topic (a wildcard
        // subscription gets nothing else); a group picks among those.
        let rules = self.acl.get().map(|a| a.current());
        let readable = |g: &Inner, key: &str| {
            g.sessions
                .get(key)
                .is_some_and(|s| acl::may_read(rules.as_deref(), &s.user, &s.device, &msg.topic))
        };
        for (full, mut members) in shares {
            members.retain(|k| readable(g, k));
            if !Self::share_here(g, &full, &members, origin, assigned) {
                continue;
            }
            if let Some(key) = Self::pick_member(g, &full, members) {
                targets.push((key, full));
            }
        }
        for (key, filter) in targets {
            if !readable(g, &key) {
                continue;
            }
            let Some(sub) = g.sessions.get(&key).and_then(|s| s.subs.get(&filter)) else {
                continue;
            };
            if sub.options.no_local && from == Some(key.as_str()) {
                continue;
            }
            let qos = sub.options.qos.min(msg.qos);
            let retain = msg.retain && sub.options.retain_as_published;
            let d = per_session.entry(key).or_insert_with(|| Delivery {
                msg: msg.clone(),
                qos,
                retain,
                subscription_ids: vec![],
            });
            d.qos = d.qos.max(qos);
            d.retain |= retain;
            if let Some(id) = sub.subscription_id {
                d.subscription_ids.push(id);
            }
        }
        let matched = per_session.len();
        for (key, d) in per_session {
            if let Some(op) = self.enqueue(g, &key, d) {
                ops.push(op);
            }
        }
        (matched, ops)
    }

    /// Whether this node delivers the message to shared group `full` (its
    /// local `members`, maybe none): always without a cluster, and for a
    /// group over the announced limit. A local publish assigns the group
    /// to one node (recorded in `assigned`); a remote one is delivered as
    /// its publisher assigned it, or here when the publisher did not know
    /// the group (a duplicate rather than a loss).
    fn share_here(
        g: &mut Inner,
        full: &str,
        members: &[String],
        origin: Origin<'_>,
        assigned: &mut Assignments,
    ) -> bool {
        let Inner {
            sessions,
            cluster: Some(c),
            ..
        } = g
        else {
            return true;
        };
        if !members.is_empty() && !c.local.managed(full) {
            return true;
        }
        match origin {
            Origin::Remote(by) => by.get(full).is_none_or(|node| *node == c.me),
            Origin::Local => {
                let mut local = Counts::default();
                for s in members.iter().filter_map(|k| sessions.get(k)) {
                    if s.conn.is_some() {
                        local.online += 1;
                    } else {
                        local.offline += 1;
                    }
                }
                let Some(node) = c.remote.choose(full, c.me, local) else {
                    return false;
                };
                assigned.insert(full.to_owned(), node);
                node == c.me
            }
        }
    }

    /// The member of shared subscription `full` that gets the next
    /// message: round robin over the connected members (over all of them
    /// when none is connected, so persistent sessions queue it).
    fn pick_member(g: &mut Inner, full: &str, mut members: Vec<String>) -> Option<String> {
        members.sort();
        let online: Vec<String> = members
            .iter()
            .filter(|k| g.sessions.get(*k).is_some_and(|s| s.conn.is_some()))
            .cloned()
            .collect();
        let pool = if online.is_empty() { members } else { online };
        if pool.is_empty() {
            return None;
        }
        let n = g.share_next.entry(full.to_owned()).or_insert(0);
        let pick = pool[*n % pool.len()].clone();
        *n = n.wrapping_add(1);
        Some(pick)
    }

    /// Queue one delivery, applying the overflow policy.
    fn enqueue(&self, g: &mut Inner, key: &str, d: Delivery) -> Option<PersistOp> {
        let s = g.sessions.get_mut(key)?;
        if s.queue.len() >= self.max_queued {
            if d.qos == QoS::AtMostOnce {
                self.dropped_qos0.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(session = %key.replace('\u{1}', "/"), "mqtt: queue full, QoS 0 message dropped");
                return None;
            }
            self.discarded_sessions.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                session = %key.replace('\u{1}', "/"),
                max = self.max_queued,
                "mqtt: session queue overflowed with QoS>=1; discarding the session (client sees session present=0)"
            );
            if let Some(c) = &s.conn {
                s.overflowed = true;
                s.queue.clear();
                c.notify.notify_one();
                return None;
            }
            Self::remove_session(g, key);
            return Some(PersistOp::DeleteSession(key.to_owned()));
        }
        // QoS >= 1 is saved before the publisher's PUBACK, online or not:
        // an unacked delivery must survive a crash (DESIGN §3.1). One
        // record appended, not the session rewritten.
        let (seq, op) = match s.store_new(key, &d) {
            Some((seq, op)) => (seq, Some(op)),
            None => (0, None),
        };
        s.queue.push_back(Queued { delivery: d, seq });
        if let Some(c) = &s.conn {
            c.notify.notify_one();
        }
        op
    }

    /// Add or replace a subscription, queueing the retained messages to
    /// send (per retain handling). False when a new one would exceed the
    /// subscriptions per session (nothing changed, logged, counted).
    pub fn subscribe(
        &self,
        key: &str,
        filter: &str,
        options: SubOptions,
        subscription_id: Option<u32>,
    ) -> bool {
        let mut g = lock(&self.inner);
        let Some(s) = g.sessions.get_mut(key) else {
            return true;
        };
        let max = self.max_subscriptions.load(Ordering::Relaxed);
        if max != 0 && s.subs.len() >= max && !s.subs.contains_key(filter) {
            self.subscriptions_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(session = %key.replace('\u{1}', "/"), max, "mqtt: subscription over the per-session limit refused");
            return false;
        }
        let is_new = s
            .subs
            .insert(
                filter.to_owned(),
                Subscription {
                    options,
                    subscription_id,
                },
            )
            .is_none();
        let online = s.conn.is_some();
        let (user, device) = (s.user.clone(), s.device.clone());
        let mut ops = s.save(key);
        trie_insert(&mut g.trie, filter, key);
        if let Some(c) = g.cluster.as_mut().filter(|_| is_new) {
            if imgate_codecs::mqtt::topic::shared(filter).is_some() {
                c.local.adjust(filter, online, true);
            }
        }
        // Shared subscriptions get no retained messages (MQTT 5 §4.8.2).
        let send_retained = imgate_codecs::mqtt::topic::shared(filter).is_none()
            && match options.retain_handling {
                0 => true,
                1 => is_new,
                _ => false,
            };
        if send_retained {
            let now = now_ms();
            let rules = self.acl.get().map(|a| a.current());
            let matching: Vec<Arc<AppMessage>> = g
                .retained
                .iter()
                .filter(|(t, m)| imgate_codecs::mqtt::topic::matches(filter, t) && !m.expired(now))
                .filter(|(t, _)| acl::may_read(rules.as_deref(), &user, &device, t))
                .map(|(_, m)| m.clone())
                .collect();
            for m in matching {
                let d = Delivery {
                    qos: options.qos.min(m.qos),
                    msg: m,
                    retain: true,
                    subscription_ids: subscription_id.into_iter().collect(),
                };
                if let Some(op) = self.enqueue(&mut g, key, d) {
                    ops.push(op);
                }
            }
        }
        self.persist(g, ops);
        true
    }

    /// Remove a subscription; whether it existed.
    pub fn unsubscribe(&self, key: &str, filter: &str) -> bool {
        let mut g = lock(&self.inner);
        let Some(s) = g.sessions.get_mut(key) else {
            return false;
        };
        let existed = s.subs.remove(filter).is_some();
        let online = s.conn.is_some();
        let ops = s.save(key);
        trie_remove(&mut g.trie, filter, key);
        if let Some(c) = g.cluster.as_mut().filter(|_| existed) {
            if imgate_codecs::mqtt::topic::shared(filter).is_some() {
                c.local.adjust(filter, online, false);
            }
        }
        self.persist(g, ops);
        existed
    }

    /// Record the IM subscriptions of a session (kept with it).
    pub fn set_im(
        &self,
        key: &str,
        inbox: Option<Option<(QoS, Option<u32>)>>,
        ack: Option<Option<QoS>>,
    ) {
        let mut g = lock(&self.inner);
        let Some(s) = g.sessions.get_mut(key) else {
            return;
        };
        if let Some(i) = inbox {
            s.im_inbox = i;
        }
        if let Some(a) = ack {
            s.im_ack = a;
        }
        let ops = s.save(key);
        self.persist(g, ops);
    }

    pub fn im_subscriptions(&self, key: &str) -> (Option<(QoS, Option<u32>)>, Option<QoS>) {
        let g = lock(&self.inner);
        g.sessions
            .get(key)
            .map(|s| (s.im_inbox, s.im_ack))
            .unwrap_or((None, None))
    }

    /// True when the session overflowed and its connection must close.
    pub fn overflowed(&self, key: &str, generation: u64) -> bool {
        let g = lock(&self.inner);
        match g.sessions.get(key) {
            Some(s) => s.overflowed && s.conn.as_ref().map(|c| c.generation) == Some(generation),
            None => false,
        }
    }

    /// Discard a session after an overflow (the connection is closing).
    pub fn discard(&self, key: &str) {
        let mut g = lock(&self.inner);
        Self::remove_session(&mut g, key);
        self.persist(g, vec![PersistOp::DeleteSession(key.to_owned())]);
    }

    /// Packets to resend on reconnect: in-flight PUBLISHes with DUP and
    /// PUBRELs (MQTT 5 §4.4).
    pub fn resend_inflight(&self, key: &str, v5: bool) -> Vec<imgate_codecs::mqtt::Packet> {
        use imgate_codecs::mqtt::{Packet, PubResp, PubRespKind};
        let g = lock(&self.inner);
        let Some(s) = g.sessions.get(key) else {
            return vec![];
        };
        let now = now_ms();
        s.inflight
            .iter()
            .filter_map(|(id, f)| match f {
                Inflight::Generic { released: true, .. } => {
                    Some(Packet::PubResp(PubResp::new(PubRespKind::PubRel, *id)))
                }
                Inflight::Generic { delivery, .. } => {
                    let mut p = to_publish(delivery, *id, now, v5);
                    p.dup = true;
                    Some(Packet::Publish(p))
                }
                Inflight::Im { .. } => None,
            })
            .collect()
    }

    /// Up to `budget` queued deliveries as PUBLISH packets, QoS ≥ 1 ones
    /// moved to in-flight with a packet id. Expired messages are skipped.
    pub fn take_outgoing(
        &self,
        key: &str,
        generation: u64,
        receive_max: usize,
        v5: bool,
    ) -> Vec<Publish> {
        let mut g = lock(&self.inner);
        let Some(s) = g.sessions.get_mut(key) else {
            return vec![];
        };
        if s.conn.as_ref().map(|c| c.generation) != Some(generation) {
            return vec![];
        }
        let now = now_ms();
        let mut out = Vec::new();
        let mut ops = Vec::new();
        while s.inflight.len() < receive_max {
            let Some(Queued { delivery: d, seq }) = s.queue.pop_front() else {
                break;
            };
            if d.msg.expired(now) {
                if seq != 0 {
                    ops.push(PersistOp::DeleteQueued(key.to_owned(), seq));
                }
                continue;
            }
            if d.qos == QoS::AtMostOnce {
                out.push(to_publish(&d, 0, now, v5));
                continue;
            }
            let Some(id) = s.allocate_pkid() else {
                s.queue.push_front(Queued { delivery: d, seq });
                break;
            };
            out.push(to_publish(&d, id, now, v5));
            if seq != 0 {
                ops.push(PersistOp::PutInflight(key.to_owned(), seq, id, false));
            }
            s.inflight.insert(
                id,
                Inflight::Generic {
                    delivery: d,
                    released: false,
                    seq,
                },
            );
        }
        self.submit_quiet(ops);
        out
    }

    /// Reserve a packet id for an IM delivery (None: flow control full).
    pub fn track_im(&self, key: &str, message_id: u64, receive_max: usize) -> Option<u16> {
        let mut g = lock(&self.inner);
        let s = g.sessions.get_mut(key)?;
        if s.inflight.len() >= receive_max {
            return None;
        }
        let id = s.allocate_pkid()?;
        s.inflight.insert(id, Inflight::Im { message_id });
        Some(id)
    }

    pub fn inflight_len(&self, key: &str) -> usize {
        lock(&self.inner)
            .sessions
            .get(key)
            .map_or(0, |s| s.inflight.len())
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) from the client: the in-flight
    /// entry, if any.
    pub fn complete(&self, key: &str, pkid: u16) -> Option<Inflight> {
        let mut g = lock(&self.inner);
        let s = g.sessions.get_mut(key)?;
        let f = s.inflight.remove(&pkid);
        if let Some(c) = &s.conn {
            c.notify.notify_one();
        }
        if let Some(Inflight::Generic { seq, .. }) = &f {
            if *seq != 0 {
                self.submit_quiet(vec![PersistOp::DeleteQueued(key.to_owned(), *seq)]);
            }
        }
        f
    }

    /// PUBREC from the client: true if the packet id was in flight.
    pub fn released(&self, key: &str, pkid: u16) -> bool {
        let mut g = lock(&self.inner);
        let Some(s) = g.sessions.get_mut(key) else {
            return false;
        };
        match s.inflight.get_mut(&pkid) {
            Some(Inflight::Generic { released, seq, .. }) => {
                *released = true;
                if *seq != 0 {
                    // Saved (fsync) so a restart resends PUBREL, not the
                    // message; not waited for (a crash first: a DUP resend).
                    drop(self.db.submit(vec![PersistOp::PutInflight(
                        key.to_owned(),
                        *seq,
                        pkid,
                        true,
                    )]));
                }
                true
            }
            _ => false,
        }
    }

    /// Counters for the log at shutdown and tests.
    #[cfg(test)]
    pub fn queued(&self, key: &str) -> usize {
        lock(&self.inner)
            .sessions
            .get(key)
            .map_or(0, |s| s.queue.len())
    }
}

/// A will of `owner` as an application message.
pub fn will_message(w: &LastWill, owner: &str) -> AppMessage {
    let expiry = w.properties.message_expiry_interval();
    AppMessage {
        topic: w.topic.clone(),
        payload: w.payload.clone(),
        qos: w.qos,
        retain: w.retain,
        properties: w.properties.forwardable(),
        expires_at_ms: expiry.map(|s| now_ms() + i64::from(s) * 1000),
        owner: Some(owner.to_owned()),
    }
}

fn to_publish(d: &Delivery, pkid: u16, now: i64, v5: bool) -> Publish {
    let mut properties = Properties::default();
    if v5 {
        properties = d.msg.properties.clone();
        if let Some(left) = d.msg.remaining_expiry_secs(now) {
            properties.push(Property::MessageExpiryInterval(left));
        }
        for id in &d.subscription_ids {
            properties.push(Property::SubscriptionIdentifier(*id));
        }
    }
    Publish {
        dup: false,
        qos: d.qos,
        retain: d.retain,
        topic: d.msg.topic.clone(),
        pkid,
        properties,
        payload: d.msg.payload.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn opts(qos: QoS) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }

    fn msg(topic: &str, qos: QoS, retain: bool) -> AppMessage {
        AppMessage {
            topic: topic.into(),
            payload: Bytes::from_static(b"x"),
            qos,
            retain,
            properties: Properties::default(),
            expires_at_ms: None,
            owner: Some("u".into()),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn offline_queue_survives_reopen_and_overflow_discards() {
        let dir = tempfile::tempdir().unwrap();
        let b = Broker::open(dir.path(), 2, RateLimitConfig::default()).unwrap();
        let a = b.connect("u", "d", true, 3600);
        let key = session_key("u", "d");
        b.subscribe(&key, "t/#", opts(QoS::AtLeastOnce), None);
        b.disconnect(&key, a.generation, None);
        b.publish(None, msg("t/1", QoS::AtLeastOnce, false));
        b.publish(None, msg("t/r", QoS::AtMostOnce, true));
        assert_eq!(b.queued(&key), 2);
        drop(b);
        let b = Broker::open(dir.path(), 2, RateLimitConfig::default()).unwrap();
        // QoS 0 is not persisted; the retained one is.
        assert_eq!(b.queued(&key), 1);
        let a = b.connect("u", "d", false, 3600);
        assert!(a.session_present);
        let out = b.take_outgoing(&key, a.generation, 10, true);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].qos, QoS::AtLeastOnce);
        b.disconnect(&key, a.generation, None);
        for _ in 0..3 {
            b.publish(None, msg("t/2", QoS::AtLeastOnce, false));
        }
        assert_eq!(b.discarded_sessions.load(Ordering::Relaxed), 1);
        let a = b.connect("u", "d", false, 3600);
        assert!(!a.session_present);
    }

    /// A bus that keeps what it was asked to forward.
    #[derive(Default)]
    struct FakeBus(Mutex<Vec<Assignments>>);

    impl ClusterBus for FakeBus {
        fn forward(
            &self,
            _msg: &Arc<AppMessage>,
            assigned: &Assignments,
        ) -> futures_util::future::BoxFuture<'static, Result<(), String>> {
            lock(&self.0).push(assigned.clone());
            Box::pin(std::future::ready(Ok(())))
        }
    }

    const ME: u64 = 0xa;
    const OTHER: u64 = 0xb;
    const GROUP: &str = "$share/g/t/#";

    /// A clustered broker (instance [`ME`]) with one connected member of
    /// [`GROUP`].
    fn clustered(dir: &Path) -> (Arc<Broker>, Arc<FakeBus>, String) {
        let b = Broker::open(dir, 100, RateLimitConfig::default()).unwrap();
        let bus = Arc::new(FakeBus::default());
        b.set_bus_as(bus.clone(), ME);
        b.connect("u", "m", true, 0);
        let key = session_key("u", "m");
        b.subscribe(&key, GROUP, opts(QoS::AtLeastOnce), None);
        (b, bus, key)
    }

    fn other_node(members: u32) -> share_registry::ShareNotice {
        share_registry::ShareNotice {
            node: share_registry::node_hex(OTHER),
            node_id: None,
            groups: vec![share_registry::GroupNotice {
                share: GROUP.into(),
                members,
                offline: 0,
            }],
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn remote_publishes_obey_the_publishers_assignment() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _bus, key) = clustered(dir.path());
        let to = |node: u64| Assignments::from([(GROUP.to_owned(), node)]);
        assert_eq!(
            b.inject_remote(msg("t/1", QoS::AtLeastOnce, false), &to(OTHER)),
            0
        );
        assert_eq!(b.queued(&key), 0, "assigned to another node");
        assert_eq!(
            b.inject_remote(msg("t/2", QoS::AtLeastOnce, false), &to(ME)),
            1
        );
        assert_eq!(b.queued(&key), 1, "assigned here");
        // A group the publisher did not know (or an older node): here.
        let other_group = Assignments::from([("$share/x/t/#".to_owned(), OTHER)]);
        assert_eq!(
            b.inject_remote(msg("t/3", QoS::AtLeastOnce, false), &other_group),
            1
        );
        assert_eq!(
            b.inject_remote(msg("t/4", QoS::AtLeastOnce, false), &Assignments::new()),
            1
        );
        assert_eq!(b.queued(&key), 3);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn local_publishes_spread_over_the_nodes_until_a_node_goes_silent() {
        let dir = tempfile::tempdir().unwrap();
        let (b, bus, key) = clustered(dir.path());
        // Alone in the cluster: delivered here, and the others are told so.
        b.publish(None, msg("t/0", QoS::AtLeastOnce, false));
        assert_eq!(b.queued(&key), 1);
        assert_eq!(
            lock(&bus.0).pop(),
            Some(Assignments::from([(GROUP.to_owned(), ME)]))
        );
        // Another node with one member: every second message goes there.
        let t0 = Instant::now();
        b.share_heard(&other_node(1), t0);
        let mut here = 0;
        for i in 0..10 {
            let before = b.queued(&key);
            b.publish(None, msg(&format!("t/{i}"), QoS::AtLeastOnce, false));
            let sent = lock(&bus.0).pop().unwrap();
            let node = sent[GROUP];
            assert_eq!(
                b.queued(&key) > before,
                node == ME,
                "delivered here iff assigned here"
            );
            here += usize::from(node == ME);
        }
        assert_eq!(here, 5);
        // Groups only on the other node are assigned there.
        let mut only_there = other_node(2);
        only_there.groups[0].share = "$share/r/t/#".into();
        only_there.groups.push(other_node(1).groups[0].clone());
        b.share_heard(&only_there, t0);
        b.publish(None, msg("t/x", QoS::AtLeastOnce, false));
        assert_eq!(lock(&bus.0).pop().unwrap()["$share/r/t/#"], OTHER);
        // The other node falls silent: forgotten, everything stays here.
        assert!(b.share_due(t0 + share_registry::EXPIRE_AFTER).is_some());
        let before = b.queued(&key);
        for i in 0..4 {
            b.publish(None, msg(&format!("t/{i}"), QoS::AtLeastOnce, false));
            assert_eq!(
                lock(&bus.0).pop().unwrap(),
                Assignments::from([(GROUP.to_owned(), ME)])
            );
        }
        assert_eq!(b.queued(&key), before + 4);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn membership_changes_are_announced() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _bus, key) = clustered(dir.path());
        let t0 = Instant::now();
        let n = b.share_due(t0).expect("the first member joined");
        assert_eq!(n.node, share_registry::node_hex(ME));
        assert_eq!((n.groups.len(), n.groups[0].members), (1, 1));
        assert!(b.share_due(t0).is_none(), "nothing changed");
        b.unsubscribe(&key, GROUP);
        assert!(b.share_due(t0).is_none(), "at most one a second");
        let n = b
            .share_due(t0 + share_registry::MIN_GAP)
            .expect("the last one left");
        assert!(n.groups.is_empty());
        assert!(
            b.share_due(t0 + share_registry::REFRESH_EVERY * 3)
                .is_none(),
            "no refresh of nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn without_a_bus_nothing_is_assigned() {
        let dir = tempfile::tempdir().unwrap();
        let b = Broker::open(dir.path(), 100, RateLimitConfig::default()).unwrap();
        for d in ["m1", "m2"] {
            b.connect("u", d, true, 0);
            b.subscribe(&session_key("u", d), GROUP, opts(QoS::AtLeastOnce), None);
        }
        for i in 0..4 {
            assert_eq!(
                b.publish(None, msg(&format!("t/{i}"), QoS::AtLeastOnce, false)),
                1
            );
        }
        assert_eq!(b.queued(&session_key("u", "m1")), 2);
        assert!(lock(&b.inner).cluster.is_none());
    }
}
