//! Topic permissions. The `im/` namespace is the IM system's (only
//! `im/send`, your own inbox and your own ack topic), `$` topics are the
//! server's. Everything else ("generic" topics) is governed by the topic
//! ACL ([`TopicAcl`]): open to every logged-in client when none is
//! configured (a WARN at startup says so), else mosquitto's rules
//! ([`super::acl_file`]):
//!
//! - a PUBLISH (and a will, and a retained message) needs a rule granting
//!   `write` on its topic; a delivery (live or retained) needs `read`;
//! - a SUBSCRIBE filter is granted when some `read` rule overlaps it (some
//!   topic under it may be readable) and no `deny` rule covers it whole;
//!   what it then receives is checked per message at delivery, so `#`
//!   only ever brings what its user may read;
//! - any matching `deny` wins over every grant (mosquitto 2.x); nothing
//!   granted is denied.
//!
//! Where the rules come from: the file `mqtt_acl_file` at startup, unless
//! the admin API stored a rule set (store setting [`ACL_SETTING_KEY`]):
//! that one is in force on every node, now and after restarts, until the
//! admin API clears it (each node then goes back to its own file, or to
//! open). A change replaces the whole rule set at once (one pointer swap).

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use imgate_codecs::mqtt::normalizer::{IM_NAMESPACE, IM_SEND_TOPIC};
use imgate_codecs::mqtt::{topic, MqttNormalizer};
use imgate_core::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::acl_file::{self, Access, RuleSet};

/// What a PUBLISH topic means.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishTarget {
    ImSend,
    /// `im/read`: mark a conversation read (`conversations::read_by`).
    ImRead,
    Generic,
    Forbidden,
}

/// The topic a client publishes a conversation read to: JSON
/// `{"conv": {...}, "messageUid": N}` (absent `messageUid` = everything).
pub const IM_READ_TOPIC: &str = "im/read";

pub fn publish_target(topic: &str) -> PublishTarget {
    if topic == IM_SEND_TOPIC {
        PublishTarget::ImSend
    } else if topic == IM_READ_TOPIC {
        PublishTarget::ImRead
    } else if topic.starts_with(IM_NAMESPACE) || topic.starts_with('$') {
        PublishTarget::Forbidden
    } else {
        PublishTarget::Generic
    }
}

/// What a SUBSCRIBE filter means for `user` on `device`.
#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeTarget {
    Inbox,
    Ack,
    Generic,
    Forbidden,
}

pub fn subscribe_target(filter: &str, user: &str, device: &str) -> SubscribeTarget {
    if filter == MqttNormalizer::inbox_topic(user) {
        SubscribeTarget::Inbox
    } else if filter == MqttNormalizer::ack_topic(device) {
        SubscribeTarget::Ack
    } else if filter.starts_with(IM_NAMESPACE) {
        SubscribeTarget::Forbidden
    } else {
        // Wildcard filters like `#` or `+/inbox/x` are allowed: IM traffic
        // never goes through the generic broker, so they cannot see it.
        SubscribeTarget::Generic
    }
}

/// The store setting holding the rule set set through the admin API.
pub const ACL_SETTING_KEY: &str = "mqtt_acl";

/// The stored value: the mosquitto text, or None once the admin API
/// cleared it (every node then uses its own file, or none).
#[derive(Debug, Serialize, Deserialize)]
struct StoredAcl {
    acl: Option<String>,
}

/// Where the rules in force come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclSource {
    File,
    Api,
}

impl AclSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AclSource::File => "file",
            AclSource::Api => "api",
        }
    }
}

/// The rule set in force: none (every generic topic open) or rules.
#[derive(Debug)]
pub enum Active {
    Open,
    Rules {
        set: Arc<RuleSet>,
        source: AclSource,
    },
}

/// The live topic ACL of this node: one snapshot, swapped whole.
pub struct TopicAcl {
    active: RwLock<Arc<Active>>,
    /// The file's rules: in force whenever no API rule set is stored.
    file: Option<Arc<RuleSet>>,
    /// Serializes admin writes, so the store's last value is this node's
    /// latest.
    save_lock: tokio::sync::Mutex<()>,
}

impl TopicAcl {
    fn new(file: Option<Arc<RuleSet>>, active: Active) -> TopicAcl {
        TopicAcl {
            active: RwLock::new(Arc::new(active)),
            file,
            save_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// At startup: the file (empty path: none; a bad file is an error
    /// with its line), then the rule set stored by the admin API, which
    /// wins when there is one. Logs which one is in force, and a WARN when
    /// none is.
    pub async fn load(path: &str, store: &dyn Store) -> anyhow::Result<TopicAcl> {
        let file = if path.trim().is_empty() {
            None
        } else {
            let set = acl_file::load(std::path::Path::new(path.trim()))
                .with_context(|| format!("mqtt_acl_file {}", path.trim()))?;
            Some(Arc::new(set))
        };
        let stored = store
            .setting(ACL_SETTING_KEY)
            .await
            .context("reading the MQTT topic ACL from the store")?;
        let acl = Self::new(file, Active::Open);
        let active = match stored {
            Some(json) => acl
                .active_from_stored(&json)
                .context("the MQTT topic ACL stored by the admin API")?,
            None => acl.file_or_open(),
        };
        acl.install(active);
        Ok(acl)
    }

    /// The rule set in force now.
    pub fn current(&self) -> Arc<Active> {
        match self.active.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn install(&self, active: Active) {
        match &active {
            Active::Open => tracing::warn!(
                "no MQTT topic ACL (set mqtt_acl_file / IMGATE_MQTT_ACL_FILE, or PUT /admin/mqtt/acl): \
                 generic topics outside im/ are open to every authenticated user; see examples/acl.conf"
            ),
            Active::Rules { set, source } => tracing::info!(
                source = source.as_str(),
                rules = set.rule_count(),
                "mqtt: topic ACL in force"
            ),
        }
        let active = Arc::new(active);
        match self.active.write() {
            Ok(mut g) => *g = active,
            Err(p) => *p.into_inner() = active,
        }
    }

    fn file_or_open(&self) -> Active {
        match &self.file {
            Some(set) => Active::Rules {
                set: set.clone(),
                source: AclSource::File,
            },
            None => Active::Open,
        }
    }

    fn active_from_stored(&self, json: &str) -> anyhow::Result<Active> {
        let stored: StoredAcl = serde_json::from_str(json)?;
        Ok(match stored.acl {
            Some(text) => Active::Rules {
                set: Arc::new(acl_file::parse(&text)?),
                source: AclSource::Api,
            },
            None => self.file_or_open(),
        })
    }

    /// The admin API: put `set` in force here at once, then store it for
    /// every node (and restarts). None: back to the file (or open).
    pub async fn replace(&self, set: Option<RuleSet>, store: &dyn Store) -> anyhow::Result<()> {
        let _guard = self.save_lock.lock().await;
        let stored = StoredAcl {
            acl: set.as_ref().map(|s| s.text.clone()),
        };
        self.install(match set {
            Some(set) => Active::Rules {
                set: Arc::new(set),
                source: AclSource::Api,
            },
            None => self.file_or_open(),
        });
        store
            .put_setting(ACL_SETTING_KEY.to_string(), serde_json::to_string(&stored)?)
            .await?;
        Ok(())
    }

    /// Apply every ACL change the store reports (from any node, this one
    /// included) until the store closes.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>) {
        let mut changes = store.watch_settings();
        loop {
            let json = match changes.recv().await {
                Ok((key, value)) if key == ACL_SETTING_KEY => value.as_str().to_string(),
                Ok(_) => continue,
                // Missed some: the last value is all that matters.
                Err(RecvError::Lagged(_)) => match store.setting(ACL_SETTING_KEY).await {
                    Ok(Some(json)) => json,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "mqtt: cannot re-read the topic ACL");
                        continue;
                    }
                },
                Err(RecvError::Closed) => return,
            };
            match self.active_from_stored(&json) {
                Ok(active) => self.install(active),
                // Checked before it was stored: keep the rules in force.
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt: ignoring an unreadable topic ACL update")
                }
            }
        }
    }

    /// Whether `user` on `client_id` may publish to `topic` (generic
    /// topics only: `im/` and `$` topics are never the broker's). For
    /// PUBLISH and for wills. `retain` needs no other right than `write`
    /// (mosquitto's files have none for it); readers of a retained message
    /// are checked when it is delivered.
    pub fn may_publish(&self, user: &str, client_id: &str, topic: &str, retain: bool) -> bool {
        if publish_target(topic) != PublishTarget::Generic {
            return false;
        }
        let ok = self.current().may_write(user, client_id, topic);
        if !ok {
            tracing::debug!(%user, %client_id, %topic, retain, "mqtt: topic ACL refuses the publish");
        }
        ok
    }

    /// Whether `user` on `client_id` may subscribe to the generic `filter`.
    pub fn may_subscribe(&self, user: &str, client_id: &str, filter: &str) -> bool {
        self.current().may_subscribe(user, client_id, filter)
    }
}

/// Whether a generic message on `topic` may be delivered to `user` on
/// `client_id` (the broker's routing, live and retained): with no ACL
/// (None or [`Active::Open`]), yes.
pub fn may_read(acl: Option<&Active>, user: &str, client_id: &str, topic: &str) -> bool {
    acl.is_none_or(|a| a.may_read(user, client_id, topic))
}

impl Active {
    pub fn may_read(&self, user: &str, client_id: &str, topic: &str) -> bool {
        self.decide(user, client_id, Access::grants_read, |f| {
            let hit = topic::matches(f, topic);
            (hit, hit)
        })
    }

    pub fn may_write(&self, user: &str, client_id: &str, topic: &str) -> bool {
        self.decide(user, client_id, Access::grants_write, |f| {
            let hit = topic::matches(f, topic);
            (hit, hit)
        })
    }

    pub fn may_subscribe(&self, user: &str, client_id: &str, filter: &str) -> bool {
        self.decide(user, client_id, Access::grants_read, |f| {
            (covers(f, filter), overlaps(f, filter))
        })
    }

    /// Walk the rules that apply to `user`/`client_id`: false at the first
    /// `deny` whose filter `hit`s (first of the pair), else true when a
    /// rule granting `want` hits (second of the pair).
    fn decide(
        &self,
        user: &str,
        client_id: &str,
        want: fn(Access) -> bool,
        hit: impl Fn(&str) -> (bool, bool),
    ) -> bool {
        let Active::Rules { set, .. } = self else {
            return true;
        };
        let mut granted = false;
        for (access, filter) in applicable(set, user, client_id) {
            let (deny_hit, grant_hit) = hit(&filter);
            if access == Access::Deny {
                if deny_hit {
                    return false;
                }
            } else if !granted && grant_hit && want(access) {
                granted = true;
            }
        }
        granted
    }
}

/// The rules of `set` for `user` on `client_id`: everyone's, the user's
/// section, and the patterns with `%u`/`%c` substituted.
fn applicable<'a>(
    set: &'a RuleSet,
    user: &'a str,
    client_id: &'a str,
) -> impl Iterator<Item = (Access, Cow<'a, str>)> + 'a {
    set.everyone
        .iter()
        .chain(set.users.get(user).into_iter().flatten())
        .map(|r| (r.access, Cow::Borrowed(r.filter.as_str())))
        .chain(
            set.patterns
                .iter()
                .filter_map(move |r| substitute(&r.filter, user, client_id).map(|f| (r.access, f))),
        )
}

/// A pattern's filter with its `%u` and `%c` levels replaced. None when a
/// value needed is no safe topic level (empty, or with `/`, `+`, `#`:
/// it would widen the rule), as mosquitto skips such patterns.
fn substitute<'a>(pattern: &'a str, user: &str, client_id: &str) -> Option<Cow<'a, str>> {
    if !pattern.split('/').any(|l| l == "%u" || l == "%c") {
        return Some(Cow::Borrowed(pattern));
    }
    let safe = |v: &str| !v.is_empty() && !v.contains(['/', '+', '#']);
    let mut out = Vec::new();
    for level in pattern.split('/') {
        out.push(match level {
            "%u" if safe(user) => user,
            "%c" if safe(client_id) => client_id,
            "%u" | "%c" => return None,
            l => l,
        });
    }
    Some(Cow::Owned(out.join("/")))
}

/// Whether filter `wide` matches every topic that `narrow` matches.
fn covers(wide: &str, narrow: &str) -> bool {
    if narrow.starts_with('$') && wide.starts_with(['+', '#']) {
        return false;
    }
    let mut n = narrow.split('/');
    for w in wide.split('/') {
        match w {
            "#" => return true,
            "+" => match n.next() {
                None | Some("#") => return false,
                Some(_) => {}
            },
            literal => {
                if n.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    n.next().is_none()
}

/// Whether some topic matches both filters.
fn overlaps(a: &str, b: &str) -> bool {
    let wild = |s: &str| s.starts_with(['+', '#']);
    if (wild(a) && b.starts_with('$')) || (wild(b) && a.starts_with('$')) {
        return false;
    }
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) => {
                if p != q {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn im_namespace_is_guarded() {
        assert_eq!(publish_target("im/send"), PublishTarget::ImSend);
        assert_eq!(publish_target("im/inbox/bob"), PublishTarget::Forbidden);
        assert_eq!(publish_target("$SYS/x"), PublishTarget::Forbidden);
        assert_eq!(publish_target("sensors/1"), PublishTarget::Generic);
        assert_eq!(
            subscribe_target("im/inbox/alice", "alice", "d"),
            SubscribeTarget::Inbox
        );
        assert_eq!(
            subscribe_target("im/inbox/bob", "alice", "d"),
            SubscribeTarget::Forbidden
        );
        assert_eq!(
            subscribe_target("im/ack/d", "alice", "d"),
            SubscribeTarget::Ack
        );
        assert_eq!(
            subscribe_target("im/ack/e", "alice", "d"),
            SubscribeTarget::Forbidden
        );
        assert_eq!(
            subscribe_target("im/#", "alice", "d"),
            SubscribeTarget::Forbidden
        );
        assert_eq!(
            subscribe_target("#", "alice", "d"),
            SubscribeTarget::Generic
        );
    }
}

#[cfg(test)]
mod rule_tests {
    use super::*;

    fn rules(text: &str) -> Active {
        Active::Rules {
            set: Arc::new(acl_file::parse(text).unwrap()),
            source: AclSource::File,
        }
    }

    fn example() -> Active {
        rules(include_str!("../../../examples/acl.conf"))
    }

    #[test]
    fn per_user_subtrees() {
        let a = example();
        assert!(a.may_write("alice", "d1", "devices/alice/t"));
        assert!(a.may_read("alice", "d1", "devices/alice/cmd"));
        assert!(!a.may_read("bob", "d2", "devices/alice/t"));
        assert!(!a.may_write("bob", "d2", "devices/alice/x"));
        assert!(!a.may_write("bob", "d2", "elsewhere"), "nothing granted");
        assert!(a.may_read("bob", "d2", "public/news"));
        assert!(!a.may_write("bob", "d2", "public/news"));
        // %c: the device, whoever its user.
        assert!(a.may_write("bob", "d2", "clients/d2/cmd"));
        assert!(!a.may_read("bob", "d3", "clients/d2/cmd"));
        // A value that would widen a pattern: the pattern does not apply.
        assert!(!a.may_write("a+", "d", "devices/a+/x"));
        assert!(!a.may_read("x", "#", "clients/#"));
    }

    #[test]
    fn deny_wins_and_sections_add_to_everyones_rules() {
        let a = example();
        assert!(a.may_read("ops", "o", "devices/alice/t"));
        assert!(!a.may_read("ops", "o", "devices/alice/secret/k"));
        assert!(a.may_read("alice", "d", "devices/alice/secret/k"));
        assert!(a.may_write("ops", "o", "public/news"));
        assert!(a.may_write("ops", "o", "devices/ops/x"), "patterns too");
        let a = rules("topic readwrite #\ntopic deny a/b\n");
        assert!(a.may_write("u", "c", "a/c"));
        assert!(
            !a.may_write("u", "c", "a/b"),
            "deny after the grant still wins"
        );
        assert!(!a.may_read("u", "c", "a/b"));
    }

    #[test]
    fn subscriptions_need_some_readable_topic_under_them() {
        let a = example();
        assert!(a.may_subscribe("bob", "d", "#"));
        assert!(a.may_subscribe("bob", "d", "+/bob/#"));
        assert!(a.may_subscribe("bob", "d", "devices/bob"));
        assert!(!a.may_subscribe("bob", "d", "devices/alice/#"));
        assert!(!a.may_subscribe("bob", "d", "nowhere/+"));
        assert!(a.may_subscribe("ops", "o", "devices/+/t"));
        assert!(!a.may_subscribe("ops", "o", "devices/alice/secret/#"));
        assert!(!a.may_subscribe("ops", "o", "devices/+/secret/x"));
        assert!(
            a.may_subscribe("ops", "o", "devices/+/+/x"),
            "not all secret"
        );
        assert!(Active::Open.may_subscribe("x", "y", "#"));
    }

    #[test]
    fn filter_relations() {
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("+/b", "x/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/+", "a"));
        assert!(!covers("#", "$SYS/x"));
        assert!(overlaps("a/#", "a"));
        assert!(overlaps("+/b/#", "a/+"));
        assert!(!overlaps("a/b", "a/c"));
        assert!(!overlaps("a/b", "a/b/c"));
        assert!(!overlaps("#", "$SYS/#"));
        assert!(overlaps("$SYS/#", "$SYS/x"));
    }

    /// The broker's delivery check: a shared group's message goes to a
    /// member who may read it; retained messages only to readers.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_broker_delivers_only_to_readers() {
        use super::super::broker::{session_key, AppMessage, Broker};
        use imgate_codecs::mqtt::{Properties, QoS, SubOptions};
        let dir = tempfile::tempdir().unwrap();
        let b = Broker::open(dir.path(), 100, Default::default()).unwrap();
        let file = dir.path().join("acl.conf");
        std::fs::write(&file, include_str!("../../../examples/acl.conf")).unwrap();
        let store: Arc<dyn Store> = Arc::new(
            imgate_adapters::EmbeddedStore::open(imgate_adapters::EmbeddedConfig::new(dir.path()))
                .unwrap(),
        );
        let acl = TopicAcl::load(file.to_str().unwrap(), store.as_ref())
            .await
            .unwrap();
        b.set_acl(Arc::new(acl));
        let opts = SubOptions {
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        };
        let msg = |topic: &str, retain: bool| AppMessage {
            topic: topic.into(),
            payload: bytes::Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain,
            properties: Properties::default(),
            expires_at_ms: None,
            owner: None,
        };
        let (alice, bob) = (session_key("alice", "a"), session_key("bob", "b"));
        b.connect("alice", "a", true, 0);
        b.connect("bob", "b", true, 0);
        b.publish(None, msg("devices/alice/cmd", true));
        b.subscribe(&bob, "#", opts, None);
        assert_eq!(b.queued(&bob), 0, "not bob's retained message");
        b.subscribe(&alice, "devices/alice/#", opts, None);
        assert_eq!(b.queued(&alice), 1);
        b.unsubscribe(&alice, "devices/alice/#");
        b.unsubscribe(&bob, "#");
        for key in [&alice, &bob] {
            b.subscribe(key, "$share/g/devices/#", opts, None);
        }
        for _ in 0..4 {
            assert_eq!(b.publish(None, msg("devices/alice/t", false)), 1);
        }
        assert_eq!((b.queued(&alice), b.queued(&bob)), (5, 0));
    }

    #[tokio::test]
    async fn api_rules_replace_the_files_and_reach_other_nodes() {
        use imgate_adapters::{EmbeddedConfig, EmbeddedStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acl.conf");
        std::fs::write(&path, "pattern readwrite devices/%u/#\n").unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
        let path = path.to_str().unwrap();
        let here = TopicAcl::load(path, store.as_ref()).await.unwrap();
        assert!(here.may_publish("alice", "d", "devices/alice/t", false));
        assert!(!here.may_publish("alice", "d", "other", false));
        assert!(!here.may_publish("alice", "d", "im/inbox/alice", false));
        let there = Arc::new(TopicAcl::load(path, store.as_ref()).await.unwrap());
        let follower = tokio::spawn(there.clone().follow(store.clone()));
        let mut watch = store.watch_settings();
        here.replace(
            Some(acl_file::parse("topic write other\n").unwrap()),
            store.as_ref(),
        )
        .await
        .unwrap();
        assert!(
            here.may_publish("alice", "d", "other", true),
            "at once here"
        );
        assert!(!here.may_publish("alice", "d", "devices/alice/t", false));
        watch.recv().await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !there.may_publish("alice", "d", "other", false) {
            assert!(std::time::Instant::now() < deadline, "never followed");
            tokio::task::yield_now().await;
        }
        // A restart keeps the API's rules over the file.
        let again = TopicAcl::load(path, store.as_ref()).await.unwrap();
        assert!(again.may_publish("alice", "d", "other", false));
        // Cleared: the file again.
        here.replace(None, store.as_ref()).await.unwrap();
        assert!(here.may_publish("alice", "d", "devices/alice/t", false));
        follower.abort();
        // A bad file: refused, with its line.
        std::fs::write(dir.path().join("bad.conf"), "topic a\n\nfrobnicate\n").unwrap();
        let bad = dir.path().join("bad.conf");
        let e = TopicAcl::load(bad.to_str().unwrap(), store.as_ref())
            .await
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("line 3"), "{e:#}");
    }
}
