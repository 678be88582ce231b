//! Bounds on the generic broker's retained messages: a count and a byte
//! total per user and for the whole table (`mqtt_retained_max_*`; 0 = no
//! limit).
//!
//! A retained entry belongs to the user who set it last
//! ([`AppMessage::owner`]); an entry without an owner (written by an older
//! version) counts in the totals only. Its size is its topic, payload and
//! forwarded properties. Replacing a topic counts the difference (and
//! moves the entry to the new owner); an empty retained payload deletes it
//! and frees its share.
//!
//! Only growth is refused: a change that does not raise a count or a byte
//! total passes even above a limit (limits lowered since, or the cluster's
//! overshoot below), so a user over quota can always replace or clear.
//!
//! The counters follow the table itself, which is rebuilt from
//! `mqtt.redb` at startup, so they survive a restart. With a cluster bus
//! every node applies every retained update, with its owner, in the bus's
//! order: each node's counters describe the cluster's table. A publish is
//! checked against the publishing node's view, so publishes on several
//! nodes at once can overshoot a limit by those still on the bus; an
//! update from the bus is always applied (refusing it on one node only
//! would make the tables diverge).

use std::collections::HashMap;

use bytes::BytesMut;

use super::message::AppMessage;
use crate::config::Config;

/// The configured limits (0 = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainedLimits {
    pub max_per_user: u64,
    pub max_bytes_per_user: u64,
    pub max_total: u64,
    pub max_bytes_total: u64,
}

impl RetainedLimits {
    pub fn from_config(c: &Config) -> Self {
        RetainedLimits {
            max_per_user: c.mqtt_retained_max_per_user,
            max_bytes_per_user: c.mqtt_retained_max_bytes_per_user,
            max_total: c.mqtt_retained_max_total,
            max_bytes_total: c.mqtt_retained_max_bytes_total,
        }
    }
}

/// The configuration's defaults.
impl Default for RetainedLimits {
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}

/// Retained messages and their bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub count: u64,
    pub bytes: u64,
}

/// The limit a retained message would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    UserCount,
    UserBytes,
    TotalCount,
    TotalBytes,
}

impl Exceeded {
    pub fn as_str(self) -> &'static str {
        match self {
            Exceeded::UserCount => "retained messages per user",
            Exceeded::UserBytes => "retained bytes per user",
            Exceeded::TotalCount => "retained messages in total",
            Exceeded::TotalBytes => "retained bytes in total",
        }
    }
}

#[derive(Debug, Default)]
pub struct RetainedQuota {
    limits: RetainedLimits,
    /// Users with at least one retained message (the map is bounded by
    /// the table).
    users: HashMap<String, Usage>,
    total: Usage,
}

/// What one retained message counts for.
pub fn retained_bytes(m: &AppMessage) -> u64 {
    let props = if m.properties.is_empty() {
        0
    } else {
        let mut b = BytesMut::new();
        m.properties.encode(&mut b);
        b.len()
    };
    u64::try_from(m.topic.len() + m.payload.len() + props).unwrap_or(u64::MAX)
}

/// Would `value`, after growing, be over `limit`?
fn over(limit: u64, value: u64) -> bool {
    limit != 0 && value > limit
}

/// `usage` with `old` (count, bytes) replaced by one message of `bytes`:
/// the limit it then exceeds, if it grew.
fn grown(usage: Usage, old: Usage, bytes: u64, max: u64, max_bytes: u64) -> Option<bool> {
    let count = usage.count.saturating_sub(old.count) + 1;
    let total = usage.bytes.saturating_sub(old.bytes).saturating_add(bytes);
    if old.count == 0 && over(max, count) {
        return Some(true);
    }
    if bytes > old.bytes && over(max_bytes, total) {
        return Some(false);
    }
    None
}

impl RetainedQuota {
    pub fn set_limits(&mut self, limits: RetainedLimits) {
        self.limits = limits;
    }

    /// Whether `new` (a non-empty retained message) may replace `old`,
    /// what its topic holds now.
    pub fn check(&self, old: Option<&AppMessage>, new: &AppMessage) -> Result<(), Exceeded> {
        let l = &self.limits;
        let bytes = retained_bytes(new);
        let old_usage = old.map_or(Usage::default(), |o| Usage {
            count: 1,
            bytes: retained_bytes(o),
        });
        if let Some(count) = grown(self.total, old_usage, bytes, l.max_total, l.max_bytes_total) {
            return Err(if count {
                Exceeded::TotalCount
            } else {
                Exceeded::TotalBytes
            });
        }
        let Some(owner) = &new.owner else {
            return Ok(());
        };
        let mine = self.users.get(owner).copied().unwrap_or_default();
        let replaced = match old {
            Some(o) if o.owner.as_ref() == Some(owner) => old_usage,
            _ => Usage::default(),
        };
        match grown(mine, replaced, bytes, l.max_per_user, l.max_bytes_per_user) {
            Some(true) => Err(Exceeded::UserCount),
            Some(false) => Err(Exceeded::UserBytes),
            None => Ok(()),
        }
    }

    /// `m` entered the table.
    pub fn add(&mut self, m: &AppMessage) {
        let bytes = retained_bytes(m);
        self.total.count += 1;
        self.total.bytes = self.total.bytes.saturating_add(bytes);
        if let Some(owner) = &m.owner {
            let u = self.users.entry(owner.clone()).or_default();
            u.count += 1;
            u.bytes = u.bytes.saturating_add(bytes);
        }
    }

    /// `m` left the table (cleared or replaced).
    pub fn remove(&mut self, m: &AppMessage) {
        let bytes = retained_bytes(m);
        self.total.count = self.total.count.saturating_sub(1);
        self.total.bytes = self.total.bytes.saturating_sub(bytes);
        if let Some(owner) = &m.owner {
            if let Some(u) = self.users.get_mut(owner) {
                u.count = u.count.saturating_sub(1);
                u.bytes = u.bytes.saturating_sub(bytes);
                if u.count == 0 {
                    self.users.remove(owner);
                }
            }
        }
    }

    #[cfg(test)]
    pub fn usage(&self, user: &str) -> Usage {
        self.users.get(user).copied().unwrap_or_default()
    }

    #[cfg(test)]
    pub fn total(&self) -> Usage {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use imgate_codecs::mqtt::{Properties, QoS};

    fn m(topic: &str, payload: &str, owner: Option<&str>) -> AppMessage {
        AppMessage {
            topic: topic.into(),
            payload: Bytes::from(payload.to_owned()),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Properties::default(),
            expires_at_ms: None,
            owner: owner.map(str::to_owned),
        }
    }

    fn quota(limits: RetainedLimits) -> RetainedQuota {
        let mut q = RetainedQuota::default();
        q.set_limits(limits);
        q
    }

    #[test]
    fn counts_per_user_and_replacements_count_the_difference() {
        let mut q = quota(RetainedLimits {
            max_per_user: 2,
            max_bytes_per_user: 20,
            max_total: 0,
            max_bytes_total: 0,
        });
        let a1 = m("t/1", "12345", Some("a"));
        let a2 = m("t/2", "12345", Some("a"));
        q.add(&a1);
        q.add(&a2);
        assert_eq!(
            q.usage("a"),
            Usage {
                count: 2,
                bytes: 16
            }
        );
        assert_eq!(
            q.check(None, &m("t/3", "x", Some("a"))),
            Err(Exceeded::UserCount)
        );
        assert_eq!(q.check(None, &m("t/3", "x", Some("b"))), Ok(()));
        // Same count; 4 more bytes fit, 5 do not.
        assert_eq!(
            q.check(Some(&a1), &m("t/1", "123456789", Some("a"))),
            Ok(())
        );
        assert_eq!(
            q.check(Some(&a1), &m("t/1", "1234567890", Some("a"))),
            Err(Exceeded::UserBytes)
        );
        // Taking over b's topic counts in full for a.
        let b = m("t/b", "1", Some("b"));
        q.add(&b);
        assert_eq!(
            q.check(Some(&b), &m("t/b", "1", Some("a"))),
            Err(Exceeded::UserCount)
        );
        q.remove(&a2);
        assert_eq!(q.usage("a"), Usage { count: 1, bytes: 8 });
        assert_eq!(q.check(None, &m("t/3", "x", Some("a"))), Ok(()));
        q.remove(&a1);
        assert!(!q.users.contains_key("a"), "no entry without messages");
    }

    #[test]
    fn totals_bind_everyone_and_shrinking_passes_when_over() {
        let mut q = quota(RetainedLimits {
            max_per_user: 0,
            max_bytes_per_user: 0,
            max_total: 2,
            max_bytes_total: 10,
        });
        let a = m("a", "1234", Some("a"));
        q.add(&a);
        q.add(&m("b", "1234", None));
        assert_eq!(
            q.total(),
            Usage {
                count: 2,
                bytes: 10
            }
        );
        assert_eq!(
            q.check(None, &m("c", "", Some("c"))),
            Err(Exceeded::TotalCount)
        );
        assert_eq!(
            q.check(Some(&a), &m("a", "12345", Some("a"))),
            Err(Exceeded::TotalBytes)
        );
        // Over after a lowered limit: growth refused, shrinking allowed.
        q.set_limits(RetainedLimits {
            max_bytes_total: 5,
            ..q.limits
        });
        assert_eq!(q.check(Some(&a), &m("a", "12", Some("a"))), Ok(()));
        assert_eq!(
            q.check(Some(&a), &m("a", "12345", Some("a"))),
            Err(Exceeded::TotalBytes)
        );
    }
}
