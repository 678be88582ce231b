//! Shared subscription groups across nodes (cluster mode only): which
//! groups this node has members in ([`LocalShares`], what it announces)
//! and which groups the other nodes have ([`ShareRegistry`], from their
//! announcements), so that the publishing node can pick the one node that
//! delivers a message to a group ([`ShareRegistry::choose`]).
//!
//! Announcements ([`ShareNotice`], JSON on the store's announcement topic
//! [`SHARE_TOPIC`]) carry a node's full list: sent when a group appears or
//! disappears on the node, or its connected members go from none to some
//! (or back), at most once a second, and every [`REFRESH_EVERY`] as a
//! refresh. A node not heard from for [`EXPIRE_AFTER`] is forgotten (it
//! crashed), and so is an instance replaced by a new one with the same
//! configured node id (it restarted). A node that hears another for the
//! first time announces its own list again soon (the newcomer missed it). Everything is bounded: a node announces at most
//! [`MAX_GROUPS`] groups (the others stay node-local, as on a single
//! node), and at most [`MAX_REMOTE_NODES`] other nodes are kept.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use imgate_codecs::mqtt::topic;
use serde::{Deserialize, Serialize};

use super::trie::SubscriptionTrie;

/// The node assigned to each shared group a publishing node considered.
pub type Assignments = BTreeMap<String, u64>;

/// The announcement topic of shared groups.
pub const SHARE_TOPIC: &str = "mqtt-share";
/// Groups a node announces at most (and keeps at most per other node).
pub const MAX_GROUPS: usize = 10_000;
/// Other nodes kept at most.
pub const MAX_REMOTE_NODES: usize = 64;
/// A node's list is announced again this often.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// A node not heard from for this long is dropped.
pub const EXPIRE_AFTER: Duration = Duration::from_secs(90);
/// Changes are announced at most this often.
pub const MIN_GAP: Duration = Duration::from_secs(1);

/// A node's announced groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareNotice {
    /// The announcing node's instance id, hex.
    pub node: String,
    /// Its configured node id: a new instance with the same one replaces
    /// the old (a restart), so nothing waits for the old one to expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u16>,
    pub groups: Vec<GroupNotice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupNotice {
    /// The full filter, `$share/{name}/{filter}`.
    pub share: String,
    /// Connected members.
    pub members: u32,
    /// Members offline with a persistent session (they queue messages).
    #[serde(default)]
    pub offline: u32,
}

/// Members of one group on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub online: u32,
    pub offline: u32,
}

impl Counts {
    fn is_empty(&self) -> bool {
        self.online == 0 && self.offline == 0
    }
}

/// An instance id as it travels (fixed-width hex).
pub fn node_hex(id: u64) -> String {
    format!("{id:016x}")
}

pub fn parse_node(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// A fresh random id for this process (system randomness, else time and
/// pid mixed).
pub fn new_instance_id() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // splitmix64 finalizer: nearby inputs give unrelated ids.
    let mut z = t ^ (u64::from(std::process::id()) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct LocalGroup {
    counts: Counts,
    /// Announced to the cluster (within [`MAX_GROUPS`]); fixed while the
    /// group exists here. Groups over the limit are delivered here as on
    /// a single node and never assigned to other nodes.
    managed: bool,
}

/// This node's shared groups, kept up to date by the broker.
#[derive(Default)]
pub struct LocalShares {
    groups: HashMap<String, LocalGroup>,
    managed: usize,
    /// Something worth announcing changed since the last announcement.
    pub dirty: bool,
    warned: bool,
}

impl LocalShares {
    /// A member of `full` joins (`add`) or leaves, `online` or not.
    pub fn adjust(&mut self, full: &str, online: bool, add: bool) {
        if add {
            let managed = &mut self.managed;
            let warned = &mut self.warned;
            let dirty = &mut self.dirty;
            let g = self.groups.entry(full.to_owned()).or_insert_with(|| {
                let ok = *managed < MAX_GROUPS;
                if ok {
                    *managed += 1;
                    *dirty = true;
                } else if !std::mem::replace(warned, true) {
                    tracing::warn!(
                        max = MAX_GROUPS,
                        share = %full,
                        "mqtt: too many shared groups to announce; the others are delivered per node"
                    );
                }
                LocalGroup {
                    counts: Counts::default(),
                    managed: ok,
                }
            });
            let c = if online {
                &mut g.counts.online
            } else {
                &mut g.counts.offline
            };
            *c += 1;
            if online && *c == 1 && g.managed {
                self.dirty = true;
            }
            return;
        }
        let Some(g) = self.groups.get_mut(full) else {
            return;
        };
        let c = if online {
            &mut g.counts.online
        } else {
            &mut g.counts.offline
        };
        *c = c.saturating_sub(1);
        if online && *c == 0 && g.managed {
            self.dirty = true;
        }
        if g.counts.is_empty() {
            if g.managed {
                self.managed -= 1;
                self.dirty = true;
            }
            self.groups.remove(full);
        }
    }

    /// Whether `full` takes part in cluster assignment here (a group not
    /// present here does, on the other nodes' terms).
    pub fn managed(&self, full: &str) -> bool {
        self.groups.get(full).is_none_or(|g| g.managed)
    }

    pub fn is_empty(&self) -> bool {
        self.managed == 0
    }

    /// The announcement of this node's managed groups (sorted).
    pub fn notice(&self, me: u64) -> ShareNotice {
        let mut groups: Vec<GroupNotice> = self
            .groups
            .iter()
            .filter(|(_, g)| g.managed)
            .map(|(share, g)| GroupNotice {
                share: share.clone(),
                members: g.counts.online,
                offline: g.counts.offline,
            })
            .collect();
        groups.sort_by(|a, b| a.share.cmp(&b.share));
        ShareNotice {
            node: node_hex(me),
            node_id: None,
            groups,
        }
    }
}

struct RemoteNode {
    seen: Instant,
    node_id: Option<u16>,
    groups: Vec<String>,
}

#[derive(Default)]
struct RemoteGroup {
    nodes: BTreeMap<u64, Counts>,
    /// Round-robin position over the members of every node.
    next: u64,
}

/// The other nodes' shared groups.
#[derive(Default)]
pub struct ShareRegistry {
    nodes: HashMap<u64, RemoteNode>,
    groups: HashMap<String, RemoteGroup>,
    /// Inner filter → full filter of every known remote group.
    filters: SubscriptionTrie,
    warned: bool,
}

impl ShareRegistry {
    /// Apply another node's announcement (its full list replaces what was
    /// known of it). True when the node was not known before.
    pub fn apply(&mut self, n: &ShareNotice, now: Instant) -> bool {
        let Some(node) = parse_node(&n.node) else {
            tracing::warn!(node = %n.node, "mqtt: shared group announcement with a bad node id");
            return false;
        };
        let new = !self.nodes.contains_key(&node);
        if let Some(id) = n.node_id.filter(|_| new) {
            let before: Vec<u64> = self
                .nodes
                .iter()
                .filter(|(_, r)| r.node_id == Some(id))
                .map(|(i, _)| *i)
                .collect();
            for old in before {
                tracing::info!(
                    node_id = id,
                    "mqtt: a node restarted; forgetting its old shared groups"
                );
                self.forget(old);
            }
        }
        if new && self.nodes.len() >= MAX_REMOTE_NODES {
            if !std::mem::replace(&mut self.warned, true) {
                tracing::warn!(
                    max = MAX_REMOTE_NODES,
                    "mqtt: too many nodes announce shared groups; ignoring the others"
                );
            }
            return false;
        }
        self.forget(node);
        let mut kept = Vec::new();
        for g in n.groups.iter().take(MAX_GROUPS) {
            let counts = Counts {
                online: g.members,
                offline: g.offline,
            };
            let Some((_, inner)) = topic::shared(&g.share) else {
                continue;
            };
            if counts.is_empty() {
                continue;
            }
            let entry = self.groups.entry(g.share.clone()).or_insert_with(|| {
                self.filters.insert(inner, &g.share);
                RemoteGroup::default()
            });
            if entry.nodes.insert(node, counts).is_none() {
                kept.push(g.share.clone());
            }
        }
        self.nodes.insert(
            node,
            RemoteNode {
                seen: now,
                node_id: n.node_id,
                groups: kept,
            },
        );
        new
    }

    fn forget(&mut self, node: u64) {
        let Some(old) = self.nodes.remove(&node) else {
            return;
        };
        for share in old.groups {
            let Some(g) = self.groups.get_mut(&share) else {
                continue;
            };
            g.nodes.remove(&node);
            if g.nodes.is_empty() {
                self.groups.remove(&share);
                if let Some((_, inner)) = topic::shared(&share) {
                    self.filters.remove(inner, &share);
                }
            }
        }
    }

    /// Drop the nodes not heard from for [`EXPIRE_AFTER`].
    pub fn expire(&mut self, now: Instant) {
        let gone: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| now.saturating_duration_since(n.seen) >= EXPIRE_AFTER)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            tracing::info!(node = %node_hex(id), "mqtt: forgetting the shared groups of a silent node");
            self.forget(id);
        }
    }

    /// The full filters of the remote groups whose filter matches `topic`.
    pub fn matching(&self, topic: &str) -> Vec<String> {
        if self.groups.is_empty() {
            return vec![];
        }
        self.filters
            .matches(topic)
            .into_iter()
            .map(|(share, _)| share)
            .collect()
    }

    /// The node that delivers the next message of group `full`: round
    /// robin over the members of every node (this one, `me`, with `local`
    /// members), connected members first (offline ones only when no node
    /// has a connected one). None when no node has members.
    pub fn choose(&mut self, full: &str, me: u64, local: Counts) -> Option<u64> {
        let Some(g) = self.groups.get_mut(full) else {
            return (!local.is_empty()).then_some(me);
        };
        let mut nodes: Vec<(u64, Counts)> = g.nodes.iter().map(|(n, c)| (*n, *c)).collect();
        if !local.is_empty() {
            nodes.push((me, local));
        }
        let online = nodes.iter().any(|(_, c)| c.online > 0);
        let weight = |c: &Counts| u64::from(if online { c.online } else { c.offline });
        let total: u64 = nodes.iter().map(|(_, c)| weight(c)).sum();
        if total == 0 {
            return None;
        }
        let mut i = g.next % total;
        g.next = g.next.wrapping_add(1);
        for (node, c) in &nodes {
            let w = weight(c);
            if i < w {
                return Some(*node);
            }
            i -= w;
        }
        None
    }

    #[cfg(test)]
    pub fn knows(&self, full: &str) -> bool {
        self.groups.contains_key(full)
    }
}

/// The cluster side of shared groups in the broker's state (present only
/// with a cluster bus).
pub struct ClusterShares {
    /// This process's instance id (new at every start).
    pub me: u64,
    pub local: LocalShares,
    pub remote: ShareRegistry,
    last_announced: Option<(Instant, bool)>,
}

impl ClusterShares {
    pub fn new(me: u64) -> ClusterShares {
        ClusterShares {
            me,
            local: LocalShares::default(),
            remote: ShareRegistry::default(),
            last_announced: None,
        }
    }

    /// The announcement to send now, if one is due: a change (at most
    /// every [`MIN_GAP`]) or the refresh (skipped while this node has no
    /// group and said so already).
    pub fn due(&mut self, now: Instant) -> Option<ShareNotice> {
        let due = match self.last_announced {
            None => !self.local.is_empty(),
            Some((at, was_empty)) => {
                let since = now.saturating_duration_since(at);
                (self.local.dirty && since >= MIN_GAP)
                    || (since >= REFRESH_EVERY && !(was_empty && self.local.is_empty()))
            }
        };
        if !due {
            return None;
        }
        self.local.dirty = false;
        self.last_announced = Some((now, self.local.is_empty()));
        Some(self.local.notice(self.me))
    }

    /// The announcement could not be sent: send the list again after
    /// [`MIN_GAP`].
    pub fn retry(&mut self) {
        self.local.dirty = true;
    }

    /// Another node's announcement; a node heard for the first time gets
    /// this node's list soon (it may have missed the last refresh).
    pub fn heard(&mut self, n: &ShareNotice, now: Instant) {
        if self.remote.apply(n, now) && !self.local.is_empty() {
            self.local.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(node: u64, groups: &[(&str, u32, u32)]) -> ShareNotice {
        ShareNotice {
            node: node_hex(node),
            node_id: None,
            groups: groups
                .iter()
                .map(|(s, m, o)| GroupNotice {
                    share: s.to_string(),
                    members: *m,
                    offline: *o,
                })
                .collect(),
        }
    }

    #[test]
    fn choice_is_weighted_round_robin_over_nodes() {
        let mut r = ShareRegistry::default();
        let t0 = Instant::now();
        r.apply(&notice(7, &[("$share/g/a/#", 2, 0)]), t0);
        let local = Counts {
            online: 1,
            offline: 0,
        };
        let picks: Vec<u64> = (0..6)
            .map(|_| r.choose("$share/g/a/#", 1, local).unwrap())
            .collect();
        assert_eq!(picks.iter().filter(|n| **n == 7).count(), 4);
        assert_eq!(picks.iter().filter(|n| **n == 1).count(), 2);
        // Offline members only count when nobody is connected.
        let offline = Counts {
            online: 0,
            offline: 3,
        };
        assert!((0..5).all(|_| r.choose("$share/g/a/#", 1, offline) == Some(7)));
        // A group nobody else has stays here; an unknown empty one nowhere.
        assert_eq!(r.choose("$share/g/b", 1, local), Some(1));
        assert_eq!(r.choose("$share/g/b", 1, Counts::default()), None);
    }

    #[test]
    fn matching_follows_filters_and_dollar_topics() {
        let mut r = ShareRegistry::default();
        let t0 = Instant::now();
        r.apply(
            &notice(7, &[("$share/g/a/+", 1, 0), ("$share/h/#", 1, 0)]),
            t0,
        );
        let mut m = r.matching("a/b");
        m.sort();
        assert_eq!(m, vec!["$share/g/a/+", "$share/h/#"]);
        assert!(r.matching("$SYS/x").is_empty());
        // Bad entries are skipped, not trusted.
        let bad = ShareNotice {
            node: "zz".into(),
            node_id: None,
            groups: vec![],
        };
        assert!(!r.apply(&bad, t0));
        r.apply(
            &notice(8, &[("not-a-share", 1, 0), ("$share/g/a/+", 0, 0)]),
            t0,
        );
        assert_eq!(r.choose("$share/g/a/+", 1, Counts::default()), Some(7));
    }

    #[test]
    fn silent_nodes_expire_and_a_new_list_replaces_the_old() {
        let mut r = ShareRegistry::default();
        let t0 = Instant::now();
        assert!(r.apply(&notice(7, &[("$share/g/a", 1, 0)]), t0));
        assert!(!r.apply(&notice(7, &[("$share/g/b", 1, 0)]), t0));
        assert!(!r.knows("$share/g/a") && r.matching("a").is_empty());
        assert_eq!(r.matching("b"), vec!["$share/g/b"]);
        r.apply(&notice(8, &[("$share/g/b", 1, 0)]), t0 + EXPIRE_AFTER / 2);
        r.expire(t0 + EXPIRE_AFTER);
        assert_eq!(r.choose("$share/g/b", 1, Counts::default()), Some(8));
        r.expire(t0 + EXPIRE_AFTER * 2);
        assert!(!r.knows("$share/g/b") && r.matching("b").is_empty());
        // A restart (new instance, same node id) replaces the old one.
        let mut old = notice(9, &[("$share/g/c", 1, 0)]);
        old.node_id = Some(3);
        r.apply(&old, t0);
        let mut new = notice(10, &[("$share/g/d", 1, 0)]);
        new.node_id = Some(3);
        assert!(r.apply(&new, t0));
        assert!(!r.knows("$share/g/c") && r.knows("$share/g/d"));
    }

    #[test]
    fn local_groups_mark_changes_worth_announcing() {
        let mut l = LocalShares::default();
        l.adjust("$share/g/a", true, true);
        assert!(std::mem::take(&mut l.dirty));
        l.adjust("$share/g/a", false, true);
        l.adjust("$share/g/a", true, true);
        assert!(
            !l.dirty,
            "more members of a known group: the refresh says it"
        );
        assert_eq!(
            l.notice(1).groups,
            vec![GroupNotice {
                share: "$share/g/a".into(),
                members: 2,
                offline: 1
            }]
        );
        l.adjust("$share/g/a", true, false);
        l.adjust("$share/g/a", true, false);
        assert!(std::mem::take(&mut l.dirty), "no connected member any more");
        l.adjust("$share/g/a", false, false);
        assert!(l.dirty && l.is_empty() && l.notice(1).groups.is_empty());
        // Groups over the limit are neither announced nor assigned.
        for i in 0..=MAX_GROUPS {
            l.adjust(&format!("$share/g/{i}"), true, true);
        }
        let over = format!("$share/g/{MAX_GROUPS}");
        assert!(!l.managed(&over) && l.managed("$share/g/0") && l.managed("$share/g/absent"));
        assert_eq!(l.notice(1).groups.len(), MAX_GROUPS);
        l.adjust("$share/g/0", true, false);
        l.adjust(&over, true, false);
        l.adjust(&over, true, true);
        assert!(l.managed(&over), "room again once a group left");
    }
}
