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
//! MQTT 5 properties and the absolute expiry time. A body that does not
//! decode is logged and skipped, never trusted.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use imgate_adapters::rabbit::{BusEvent, BusSink, MqttBus};

use super::message::{AppMessage, Delivery, StoredDelivery};
use super::Broker;

/// How long a QoS ≥ 1 publisher waits for the bus to confirm.
const CONFIRM_WAIT: Duration = Duration::from_secs(10);

/// Carries generic publishes to the other nodes.
pub trait ClusterBus: Send + Sync {
    /// Queue `msg` for the other nodes (in call order, never blocking);
    /// the future resolves when the bus holds it durably, or with why not.
    fn forward(&self, msg: &AppMessage) -> BoxFuture<'static, Result<(), String>>;
}

fn encode(msg: &Arc<AppMessage>) -> Result<Vec<u8>, String> {
    let d = Delivery {
        msg: msg.clone(),
        qos: msg.qos,
        retain: msg.retain,
        subscription_ids: vec![],
    };
    serde_json::to_vec(&StoredDelivery::from_delivery(&d)).map_err(|e| e.to_string())
}

fn decode(body: &[u8]) -> Option<AppMessage> {
    let stored: StoredDelivery = serde_json::from_slice(body).ok()?;
    let d = stored.into_delivery()?;
    if d.msg.topic.is_empty() || d.msg.topic.starts_with("im/") {
        return None;
    }
    Some(Arc::unwrap_or_clone(d.msg))
}

/// [`ClusterBus`] on the RabbitMQ store.
pub struct RabbitBus(pub MqttBus);

impl ClusterBus for RabbitBus {
    fn forward(&self, msg: &AppMessage) -> BoxFuture<'static, Result<(), String>> {
        let body = encode(&Arc::new(msg.clone()));
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
        let Some(msg) = decode(body) else {
            tracing::warn!("mqtt: skipping an undecodable message from the cluster bus");
            return;
        };
        if retained {
            broker.apply_retained(msg);
        } else {
            broker.inject_remote(msg);
        }
    })
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
        });
        let body = encode(&m).unwrap();
        assert_eq!(decode(&body).as_ref(), Some(m.as_ref()));
        assert!(decode(b"not json").is_none());
        let im = Arc::new(AppMessage {
            topic: "im/send".into(),
            ..(*m).clone()
        });
        assert!(decode(&encode(&im).unwrap()).is_none());
    }
}
