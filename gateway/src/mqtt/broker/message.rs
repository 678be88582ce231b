//! Application messages as the broker keeps them (retained, queued,
//! in flight) and their compact persisted form.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use imgate_codecs::mqtt::wire::Reader;
use imgate_codecs::mqtt::{Properties, QoS};
use serde::{Deserialize, Serialize};

/// A message published to a generic (non-`im/`) topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMessage {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The properties forwarded to subscribers (MQTT 5 §3.3.2.3).
    pub properties: Properties,
    /// Unix ms after which it is not delivered (message expiry interval).
    pub expires_at_ms: Option<i64>,
    /// The publishing user: the owner a retained message is counted
    /// against (see [`super::retained_quota`]). None from an older node
    /// or an older `mqtt.redb`.
    pub owner: Option<String>,
}

impl AppMessage {
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }

    /// Seconds left of the message expiry interval, for forwarding.
    pub fn remaining_expiry_secs(&self, now_ms: i64) -> Option<u32> {
        self.expires_at_ms
            .map(|t| u32::try_from(((t - now_ms).max(0) + 999) / 1000).unwrap_or(u32::MAX))
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<AppMessage>,
    /// min(published QoS, subscription QoS).
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

/// Serde form of a [`Delivery`] (properties in their wire encoding).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDelivery {
    pub topic: String,
    pub payload: Vec<u8>,
    pub msg_qos: u8,
    pub qos: u8,
    pub retain: bool,
    pub msg_retain: bool,
    pub properties: Vec<u8>,
    pub expires_at_ms: Option<i64>,
    pub subscription_ids: Vec<u32>,
    /// [`AppMessage::owner`], kept for retained messages only (what the
    /// retained limits need after a restart and on the other nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl StoredDelivery {
    pub fn from_delivery(d: &Delivery) -> Self {
        let mut props = BytesMut::new();
        d.msg.properties.encode(&mut props);
        StoredDelivery {
            topic: d.msg.topic.clone(),
            payload: d.msg.payload.to_vec(),
            msg_qos: d.msg.qos.as_u8(),
            qos: d.qos.as_u8(),
            retain: d.retain,
            msg_retain: d.msg.retain,
            properties: props.to_vec(),
            expires_at_ms: d.msg.expires_at_ms,
            subscription_ids: d.subscription_ids.clone(),
            owner: d.msg.owner.clone().filter(|_| d.msg.retain),
        }
    }

    /// None if the stored bytes are not a valid encoding (a corrupt entry
    /// is skipped, never trusted).
    pub fn into_delivery(self) -> Option<Delivery> {
        let properties = Properties::decode(&mut Reader::new(&self.properties)).ok()?;
        Some(Delivery {
            msg: Arc::new(AppMessage {
                topic: self.topic,
                payload: Bytes::from(self.payload),
                qos: QoS::from_u8(self.msg_qos)?,
                retain: self.msg_retain,
                properties,
                expires_at_ms: self.expires_at_ms,
                owner: self.owner,
            }),
            qos: QoS::from_u8(self.qos)?,
            retain: self.retain,
            subscription_ids: self.subscription_ids,
        })
    }
}
