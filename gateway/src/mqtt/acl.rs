//! Topic permissions: the `im/` namespace is the IM system's (only
//! `im/send`, your own inbox and your own ack topic), `$` topics are the
//! server's; everything else is open to every logged-in client.

use imgate_codecs::mqtt::normalizer::{IM_NAMESPACE, IM_SEND_TOPIC};
use imgate_codecs::mqtt::MqttNormalizer;

/// What a PUBLISH topic means.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishTarget {
    ImSend,
    Generic,
    Forbidden,
}

pub fn publish_target(topic: &str) -> PublishTarget {
    if topic == IM_SEND_TOPIC {
        PublishTarget::ImSend
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
