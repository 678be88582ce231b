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

/// First byte of the binary record form (a JSON record starts with `{`).
const RECORD_V1: u8 = 0xB1;
const F_RETAIN: u8 = 1;
const F_MSG_RETAIN: u8 = 2;
const F_EXPIRES: u8 = 4;
const F_OWNER: u8 = 8;

/// The compact binary record of a delivery, as `mqtt.redb` keeps it: a
/// version byte, QoS and flags, then length-prefixed topic, properties
/// (their wire encoding) and subscription ids, and the payload as the
/// rest (stored once, as bytes).
pub fn encode_record(d: &Delivery) -> Vec<u8> {
    let m = &d.msg;
    let mut props = BytesMut::new();
    m.properties.encode(&mut props);
    let mut out = Vec::with_capacity(
        24 + m.topic.len() + props.len() + 4 * d.subscription_ids.len() + m.payload.len(),
    );
    let mut flags = 0;
    if d.retain {
        flags |= F_RETAIN;
    }
    if m.retain {
        flags |= F_MSG_RETAIN;
    }
    if m.expires_at_ms.is_some() {
        flags |= F_EXPIRES;
    }
    if m.owner.is_some() {
        flags |= F_OWNER;
    }
    out.extend_from_slice(&[RECORD_V1, m.qos.as_u8(), d.qos.as_u8(), flags]);
    if let Some(t) = m.expires_at_ms {
        out.extend_from_slice(&t.to_le_bytes());
    }
    put_chunk(&mut out, m.topic.as_bytes());
    if let Some(owner) = &m.owner {
        put_chunk(&mut out, owner.as_bytes());
    }
    put_chunk(&mut out, &props);
    out.extend_from_slice(&len_u32(d.subscription_ids.len()).to_le_bytes());
    for id in &d.subscription_ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out.extend_from_slice(&m.payload);
    out
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_chunk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&len_u32(b.len()).to_le_bytes());
    out.extend_from_slice(b);
}

/// A cursor over a record; every read is bounds-checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn chunk(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n)
    }
}

/// A record written by [`encode_record`]; None if it is not one (a
/// corrupt entry is skipped, never trusted).
pub fn decode_record(b: &[u8]) -> Option<Delivery> {
    let mut c = Cursor(b);
    if c.u8()? != RECORD_V1 {
        return None;
    }
    let msg_qos = QoS::from_u8(c.u8()?)?;
    let qos = QoS::from_u8(c.u8()?)?;
    let flags = c.u8()?;
    let expires_at_ms = if flags & F_EXPIRES != 0 {
        Some(i64::from_le_bytes(c.take(8)?.try_into().ok()?))
    } else {
        None
    };
    let topic = std::str::from_utf8(c.chunk()?).ok()?.to_owned();
    let owner = if flags & F_OWNER != 0 {
        Some(std::str::from_utf8(c.chunk()?).ok()?.to_owned())
    } else {
        None
    };
    let properties = Properties::decode(&mut Reader::new(c.chunk()?)).ok()?;
    let n = usize::try_from(c.u32()?).ok()?;
    if n > c.0.len() / 4 {
        return None;
    }
    let subscription_ids = (0..n).map(|_| c.u32()).collect::<Option<Vec<u32>>>()?;
    Some(Delivery {
        msg: Arc::new(AppMessage {
            topic,
            payload: Bytes::copy_from_slice(c.0),
            qos: msg_qos,
            retain: flags & F_MSG_RETAIN != 0,
            properties,
            expires_at_ms,
            owner,
        }),
        qos,
        retain: flags & F_RETAIN != 0,
        subscription_ids,
    })
}

/// A stored delivery in either form: the binary record, or the JSON
/// [`StoredDelivery`] of earlier versions.
pub fn decode_any(b: &[u8]) -> Option<Delivery> {
    if b.first() == Some(&RECORD_V1) {
        return decode_record(b);
    }
    serde_json::from_slice::<StoredDelivery>(b)
        .ok()?
        .into_delivery()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(expiry: Option<i64>) -> Delivery {
        let mut properties = Properties::default();
        properties.push(imgate_codecs::mqtt::Property::ContentType(
            "text/plain".into(),
        ));
        Delivery {
            msg: Arc::new(AppMessage {
                topic: "a/b/ü".into(),
                payload: Bytes::from_static(b"\x00\x01payload\xff"),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties,
                expires_at_ms: expiry,
                owner: Some("alice".into()),
            }),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![7, 268_435_455],
        }
    }

    fn same(a: &Delivery, b: &Delivery) -> bool {
        a.msg == b.msg
            && a.qos == b.qos
            && a.retain == b.retain
            && a.subscription_ids == b.subscription_ids
    }

    #[test]
    fn records_round_trip_and_old_json_still_reads() {
        for expiry in [None, Some(1_700_000_000_123)] {
            let d = sample(expiry);
            let rec = encode_record(&d);
            assert!(same(&decode_record(&rec).unwrap(), &d));
            assert!(same(&decode_any(&rec).unwrap(), &d));
            let json = serde_json::to_vec(&StoredDelivery::from_delivery(&d)).unwrap();
            assert!(same(&decode_any(&json).unwrap(), &d));
        }
    }

    #[test]
    fn records_store_the_payload_as_bytes() {
        let mut d = sample(None);
        Arc::make_mut(&mut d.msg).payload = Bytes::from(vec![200u8; 60_000]);
        let rec = encode_record(&d);
        assert!(rec.len() < 60_100, "record is {} bytes", rec.len());
        let json = serde_json::to_vec(&StoredDelivery::from_delivery(&d)).unwrap();
        assert!(
            json.len() > 200_000,
            "the old JSON form was {} bytes",
            json.len()
        );
    }

    #[test]
    fn truncated_or_corrupt_records_are_refused() {
        let rec = encode_record(&sample(Some(5)));
        let payload_start = rec.len() - b"\x00\x01payload\xff".len();
        for n in 0..payload_start {
            assert!(decode_record(&rec[..n]).is_none(), "prefix of {n} bytes");
        }
        let mut bad = rec.clone();
        bad[1] = 3; // QoS 3
        assert!(decode_record(&bad).is_none());
        let mut huge = encode_record(&sample(None));
        let at = 4 + 4 + "a/b/ü".len();
        // Property length far past the end.
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_record(&huge).is_none());
    }
}
