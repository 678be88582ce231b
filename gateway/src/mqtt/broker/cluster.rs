//! Generic MQTT topics across gateway nodes: the broker's view of a
//! "cluster bus" ([`ClusterBus`]) and its RabbitMQ implementation on the
//! store's bus (`imgate_adapters::rabbit::MqttBus`).
//!
//! A node's broker routes every generic publish locally first, then hands
//! it to the bus; the bus brings the other nodes' publishes back, which the
//! broker routes to its local subscribers only ([`Broker::inject_remote`]:
//! never forwarded again, so nothing loops), and every retained update in
//! one global order ([`Broker::apply_retained`]: the retained tables of all
//! nodes converge). The embedded store has no bus: the broker is then the
//! single-node broker it always was.
//!
//! Messages travel in the broker's own persisted form
//! ([`StoredDelivery`], JSON): topic, payload, QoS, retain flag, forwarded
//! MQTT 5 properties and the absolute expiry time, plus `share`: every
//! shared group the publishing node considered, with the instance id
//! (hex) of the node it assigned the message to (absent when there is
//! none; a body without it, from an older node, assigns nothing). A body
//! that does not decode is logged and skipped, never trusted; an
//! assignment that does not decode is ignored (the group counts as
//! unknown to the publisher).
//!
//! Shared groups: [`share_groups`] announces this node's groups through
//! the store (topic [`SHARE_TOPIC`]) and follows the other nodes' (see
//! [`super::share_registry`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use imgate_adapters::rabbit::{BusEvent, BusSink, MqttBus};
use imgate_core::Store;
use serde::{Deserialize, Serialize};

use super::message::{AppMessage, Delivery, StoredDelivery};
use super::share_registry::{node_hex, parse_node, Assignments, ShareNotice, SHARE_TOPIC};
use super::{lock, Broker};
use crate::sessions::cluster::follow_topic;

/// How long a QoS ≥ 1 publisher waits for the bus to confirm.
const CONFIRM_WAIT: Duration = Duration::from_secs(10);
/// How often the announcer checks whether an announcement is due.
const ANNOUNCE_TICK: Duration = Duration::from_millis(250);

/// Carries generic publishes to the other nodes.
pub trait ClusterBus: Send + Sync {
    /// Queue `msg` for the other nodes (in call order, never blocking),
    /// with the nodes `assigned` to its shared groups; the future resolves
    /// when the bus holds it durably, or with why not.
    fn forward(
        &self,
        msg: &Arc<AppMessage>,
        assigned: &Assignments,
    ) -> BoxFuture<'static, Result<(), String>>;
}

#[derive(Serialize)]
struct BodyOut<'a> {
    #[serde(flatten)]
    d: &'a StoredDelivery,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    share: BTreeMap<&'a str, String>,
}

#[derive(Deserialize)]
struct BodyShares {
    #[serde(default)]
    share: BTreeMap<String, String>,
}

/// The `share` key as the encoder writes it (a `"` inside a JSON string
/// is escaped, so only a key matches).
const SHARE_KEY: &[u8] = b"\"share\":";

fn encode(msg: &Arc<AppMessage>, assigned: &Assignments) -> Result<Vec<u8>, String> {
    let d = Delivery {
        msg: msg.clone(),
        qos: msg.qos,
        retain: msg.retain,
        subscription_ids: vec![],
    };
    let body = BodyOut {
        d: &StoredDelivery::from_delivery(&d),
        share: assigned
            .iter()
            .map(|(s, n)| (s.as_str(), node_hex(*n)))
            .collect(),
    };
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

fn decode(body: &[u8]) -> Option<(AppMessage, Assignments)> {
    let stored: StoredDelivery = serde_json::from_slice(body).ok()?;
    let d = stored.into_delivery()?;
    if d.msg.topic.is_empty() || d.msg.topic.starts_with("im/") {
        return None;
    }
    // Most bodies assign nothing: skip the second parse for them.
    let mut assigned = Assignments::new();
    if body.windows(SHARE_KEY.len()).any(|w| w == SHARE_KEY) {
        match serde_json::from_slice::<BodyShares>(body) {
            Ok(shares) => {
                for (share, node) in shares.share {
                    if let Some(node) = parse_node(&node) {
                        assigned.insert(share, node);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "mqtt: ignoring undecodable share assignments"),
        }
    }
    Some((Arc::unwrap_or_clone(d.msg), assigned))
}

/// [`ClusterBus`] on the RabbitMQ store.
pub struct RabbitBus(pub MqttBus);

impl ClusterBus for RabbitBus {
    fn forward(
        &self,
        msg: &Arc<AppMessage>,
        assigned: &Assignments,
    ) -> BoxFuture<'static, Result<(), String>> {
        let body = encode(msg, assigned);
        let done = body.map(|b| self.0.publish(b, msg.retain));
        Box::pin(async move {
            let done = done?;
            match tokio::time::timeout(CONFIRM_WAIT, done).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(e.to_string()),
                Ok(Err(_)) => Err("MQTT bus stopped".into()),
                Err(_) => Err("timed out waiting for the MQTT bus confirm".into()),
            }
        })
    }
}

/// The sink that feeds the bus's events into `broker` (weakly held: the
/// bus never keeps a stopped broker alive).
pub fn sink(broker: &Arc<Broker>) -> BusSink {
    let weak: Weak<Broker> = Arc::downgrade(broker);
    Arc::new(move |event: BusEvent| {
        let Some(broker) = weak.upgrade() else { return };
        let (body, retained) = match &event {
            BusEvent::Message(b) => (b, false),
            BusEvent::Retained(b) => (b, true),
        };
        let Some((msg, assigned)) = decode(body) else {
            tracing::warn!("mqtt: skipping an undecodable message from the cluster bus");
            return;
        };
        if retained {
            broker.apply_retained(msg);
        } else {
            broker.inject_remote(msg, &assigned);
        }
    })
}

/// Take part in the cluster's shared groups (with a bus set): follow the
/// other nodes' announcements, and announce this node's groups (with its
/// configured `node_id`) when they change and as a refresh, until the
/// store closes.
pub fn share_groups(broker: &Arc<Broker>, store: Arc<dyn Store>, node_id: u16) {
    let weak = Arc::downgrade(broker);
    let follower = weak.clone();
    tokio::spawn(follow_topic(
        store.clone(),
        SHARE_TOPIC,
        move |n: ShareNotice, local| {
            if local {
                return; // our own
            }
            if let Some(b) = follower.upgrade() {
                b.share_heard(&n, Instant::now());
            }
        },
    ));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ANNOUNCE_TICK);
        loop {
            tick.tick().await;
            let Some(due) = weak.upgrade().map(|b| b.share_due(Instant::now())) else {
                return;
            };
            let Some(mut notice) = due else { continue };
            notice.node_id = Some(node_id);
            let payload = match serde_json::to_string(&notice) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt: shared groups not encodable");
                    continue;
                }
            };
            if let Err(e) = store.announce(SHARE_TOPIC.to_owned(), payload).await {
                tracing::warn!(error = %e, "mqtt: shared groups not announced; retrying");
                if let Some(b) = weak.upgrade() {
                    b.share_retry();
                }
            }
        }
    });
}

impl Broker {
    /// Another node's shared groups.
    pub fn share_heard(&self, n: &ShareNotice, now: Instant) {
        if let Some(c) = lock(&self.inner).cluster.as_mut() {
            c.heard(n, now);
        }
    }

    /// Forget silent nodes; this node's announcement, if one is due.
    pub fn share_due(&self, now: Instant) -> Option<ShareNotice> {
        let mut g = lock(&self.inner);
        let c = g.cluster.as_mut()?;
        c.remote.expire(now);
        c.due(now)
    }

    fn share_retry(&self) {
        if let Some(c) = lock(&self.inner).cluster.as_mut() {
            c.retry();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use imgate_codecs::mqtt::{Properties, QoS};

    #[test]
    fn messages_round_trip_and_bad_bodies_are_refused() {
        let m = Arc::new(AppMessage {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"\x00\xffhi"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
            expires_at_ms: Some(42),
            owner: Some("alice".into()),
        });
        let none = Assignments::new();
        let body = encode(&m, &none).unwrap();
        assert_eq!(decode(&body), Some(((*m).clone(), none.clone())));
        assert!(decode(b"not json").is_none());
        let im = Arc::new(AppMessage {
            topic: "im/send".into(),
            ..(*m).clone()
        });
        assert!(decode(&encode(&im, &none).unwrap()).is_none());
    }

    #[test]
    fn assignments_travel_and_old_bodies_assign_nothing() {
        let m = Arc::new(AppMessage {
            topic: "a/\"share\":".into(),
            payload: Bytes::from_static(b"p"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
            expires_at_ms: None,
            owner: None,
        });
        let mut assigned = Assignments::new();
        assigned.insert("$share/g/a/#".into(), u64::MAX);
        assigned.insert("$share/h/#".into(), 7);
        let body = encode(&m, &assigned).unwrap();
        assert_eq!(decode(&body), Some(((*m).clone(), assigned)));
        // The old form (a bare StoredDelivery) still decodes.
        let d = Delivery {
            msg: m.clone(),
            qos: m.qos,
            retain: false,
            subscription_ids: vec![],
        };
        let old = serde_json::to_vec(&StoredDelivery::from_delivery(&d)).unwrap();
        assert_eq!(decode(&old), Some(((*m).clone(), Assignments::new())));
        // A bad node id is ignored; the message still goes through.
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["share"]["$share/h/#"] = "not hex".into();
        let (_, got) = decode(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), vec!["$share/g/a/#"]);
    }
}
