//! What the generic broker lets in, for PUBLISHes and wills alike: the
//! per-user publish rate, the retained limits ([`super::retained_quota`])
//! and the subscriptions per session. The reserved-topic check is the
//! ACL's (`crate::mqtt::acl::publish_target`), made by the connection for
//! a PUBLISH and at CONNECT for a will.
//!
//! A will goes through the same checks as a PUBLISH when it fires: over
//! the publisher's rate it is dropped (logged, counted in
//! `rate_limited`); over a retained limit it is delivered but not
//! retained, as a QoS 0 PUBLISH is (nobody is left to tell).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::retained_quota::{Exceeded, RetainedLimits};
use super::{lock, AppMessage, Broker};
use crate::config::Config;

/// What to do with a retained message over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverQuota {
    /// Nothing is delivered; the caller refuses it (QoS ≥ 1).
    Refuse,
    /// Delivered, not retained (QoS 0, wills).
    Unretain,
}

impl Broker {
    /// The limits from the configuration (at startup, before serving).
    pub fn configure(&self, config: &Config) {
        self.max_subscriptions
            .store(config.mqtt_max_subscriptions_per_session, Ordering::Relaxed);
        lock(&self.inner)
            .quota
            .set_limits(RetainedLimits::from_config(config));
    }

    /// One generic publish of `user` against the per-user rate; false
    /// (logged, counted) when over it.
    pub fn within_rate(&self, user: &str) -> bool {
        let keys = [format!("mqtt-publish:{user}")];
        if self.limiter.try_acquire(&keys, Instant::now()).is_ok() {
            return true;
        }
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%user, "mqtt: publish over the rate limit");
        false
    }

    /// A retained message over a limit (under the state lock, before it
    /// is routed): Err for [`OverQuota::Refuse`], else it loses its
    /// retain flag.
    pub(super) fn retained_over(
        &self,
        msg: &mut AppMessage,
        exceeded: Exceeded,
        policy: OverQuota,
    ) -> Result<(), Exceeded> {
        self.retained_refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            user = msg.owner.as_deref().unwrap_or(""),
            topic = %msg.topic,
            limit = exceeded.as_str(),
            refused = policy == OverQuota::Refuse,
            "mqtt: retained message over a limit; not retained"
        );
        match policy {
            OverQuota::Refuse => Err(exceeded),
            OverQuota::Unretain => {
                msg.retain = false;
                Ok(())
            }
        }
    }

    /// Fire a will: the publisher's rate, then the retained limits.
    pub(super) fn publish_will(&self, will: AppMessage) {
        let user = will.owner.clone().unwrap_or_default();
        if !self.within_rate(&user) {
            tracing::debug!(%user, topic = %will.topic, "mqtt: will over the publish rate limit; dropped");
            return;
        }
        self.publish(None, will);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use imgate_codecs::mqtt::{Properties, QoS};
    use imgate_core::pipeline::RateLimitConfig;

    fn retained(topic: &str, payload: &'static [u8], owner: &str) -> AppMessage {
        AppMessage {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
            expires_at_ms: None,
            owner: Some(owner.into()),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn updates_from_other_nodes_count_for_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let b = Broker::open(dir.path(), 10, RateLimitConfig::default()).unwrap();
        b.configure(&Config {
            mqtt_retained_max_per_user: 1,
            ..Config::default()
        });
        // Bob's retained message set on another node, in the bus's order:
        // applied even over his limit (the tables must not diverge).
        b.apply_retained(retained("t/1", b"x", "bob"));
        b.apply_retained(retained("t/2", b"x", "bob"));
        let refuse = OverQuota::Refuse;
        let publish = |m| {
            b.publish_forwarded(None, m, refuse)
                .map(|_| ())
                .map_err(|e| match e {
                    super::super::PublishRefused::Quota(q) => q,
                    other => panic!("refused for another reason: {other}"),
                })
        };
        assert_eq!(
            publish(retained("t/3", b"x", "bob")),
            Err(Exceeded::UserCount)
        );
        assert_eq!(publish(retained("t/3", b"x", "alice")), Ok(()));
        // Clearing from the bus frees; an unretained copy passes.
        b.apply_retained(retained("t/1", b"", "bob"));
        b.apply_retained(retained("t/2", b"", "bob"));
        assert_eq!(publish(retained("t/4", b"x", "bob")), Ok(()));
        assert_eq!(
            publish(retained("t/5", b"x", "bob")),
            Err(Exceeded::UserCount)
        );
        assert_eq!(b.publish(None, retained("t/5", b"x", "bob")), 0);
        assert!(!lock(&b.inner).retained.contains_key("t/5"));
        assert_eq!(b.retained_refused.load(Ordering::Relaxed), 3);
    }
}
