//! MQTT 5 properties (MQTT 5 §2.2.2.2): kept as an ordered list so that a
//! decoded packet re-encodes to the same bytes, with typed accessors for
//! the ones the gateway reads.
//!
//! A property may appear once per packet, except User Property and, in
//! PUBLISH only, Subscription Identifier (§3.3.2.3.8; §3.8.2.1.2 for
//! SUBSCRIBE): a repeat is a Protocol Error, found in one pass with a
//! bitset over the identifiers already seen.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::MqttCodecError;
use super::wire::{self, Reader};

/// One property. Identifiers are the spec's (table 2-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(String),
    ResponseTopic(String),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(String),
    ServerKeepAlive(u16),
    AuthenticationMethod(String),
    AuthenticationData(Bytes),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(String),
    ServerReference(String),
    ReasonString(String),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQos(u8),
    RetainAvailable(u8),
    UserProperty(String, String),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

/// User Property (0x26) may repeat in every packet.
const REPEATABLE: u64 = 1 << 0x26;
/// ... and Subscription Identifier (0x0B) in PUBLISH.
const REPEATABLE_IN_PUBLISH: u64 = REPEATABLE | 1 << 0x0B;

/// The property list of one packet (empty for MQTT 3.1.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties(pub Vec<Property>);

macro_rules! getter {
    ($name:ident, $variant:ident, $t:ty) => {
        pub fn $name(&self) -> Option<$t> {
            self.0.iter().find_map(|p| match p {
                Property::$variant(v) => Some(v.clone()),
                _ => None,
            })
        }
    };
}

impl Properties {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push(&mut self, p: Property) -> &mut Self {
        self.0.push(p);
        self
    }

    getter!(payload_format_indicator, PayloadFormatIndicator, u8);
    getter!(message_expiry_interval, MessageExpiryInterval, u32);
    getter!(content_type, ContentType, String);
    getter!(response_topic, ResponseTopic, String);
    getter!(session_expiry_interval, SessionExpiryInterval, u32);
    getter!(will_delay_interval, WillDelayInterval, u32);
    getter!(receive_maximum, ReceiveMaximum, u16);
    getter!(topic_alias_maximum, TopicAliasMaximum, u16);
    getter!(topic_alias, TopicAlias, u16);
    getter!(maximum_packet_size, MaximumPacketSize, u32);
    getter!(reason_string, ReasonString, String);
    getter!(assigned_client_identifier, AssignedClientIdentifier, String);
    getter!(authentication_method, AuthenticationMethod, String);

    /// Every subscription identifier (a PUBLISH may carry several).
    pub fn subscription_identifiers(&self) -> Vec<u32> {
        self.0
            .iter()
            .filter_map(|p| match p {
                Property::SubscriptionIdentifier(v) => Some(*v),
                _ => None,
            })
            .collect()
    }

    pub fn user_properties(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|p| match p {
                Property::UserProperty(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }

    /// The properties that travel with an application message from
    /// publisher to subscriber (MQTT 5 §3.3.2.3): everything but the topic
    /// alias and subscription identifiers.
    pub fn forwardable(&self) -> Properties {
        Properties(
            self.0
                .iter()
                .filter(|p| {
                    matches!(
                        p,
                        Property::PayloadFormatIndicator(_)
                            | Property::ContentType(_)
                            | Property::ResponseTopic(_)
                            | Property::CorrelationData(_)
                            | Property::UserProperty(..)
                    )
                })
                .cloned()
                .collect(),
        )
    }

    /// The properties of any packet but PUBLISH.
    pub fn decode(r: &mut Reader<'_>) -> Result<Properties, MqttCodecError> {
        Self::decode_with(r, REPEATABLE)
    }

    /// The properties of a PUBLISH: a server-to-client one carries one
    /// Subscription Identifier per matching subscription. (A client must
    /// send none [MQTT-3.3.4-6]: the server checks that, knowing who sent.)
    pub fn decode_publish(r: &mut Reader<'_>) -> Result<Properties, MqttCodecError> {
        Self::decode_with(r, REPEATABLE_IN_PUBLISH)
    }

    fn decode_with(r: &mut Reader<'_>, repeatable: u64) -> Result<Properties, MqttCodecError> {
        let len = r.varint()?;
        let mut body = Reader::new(r.take(len)?);
        let mut out = Vec::new();
        let mut seen = 0u64;
        while body.remaining() > 0 {
            let id = body.u8()?;
            // Every known identifier is below 64; the others are refused
            // by the match below as unknown.
            if id < 64 {
                let bit = 1u64 << id;
                if seen & bit != 0 && repeatable & bit == 0 {
                    return Err(MqttCodecError::DuplicateProperty(id));
                }
                seen |= bit;
            }
            let p = match id {
                0x01 => Property::PayloadFormatIndicator(body.u8()?),
                0x02 => Property::MessageExpiryInterval(body.u32()?),
                0x03 => Property::ContentType(body.string()?),
                0x08 => Property::ResponseTopic(body.string()?),
                0x09 => Property::CorrelationData(body.binary()?),
                0x0B => {
                    let v = body.varint()?;
                    if v == 0 {
                        return Err(MqttCodecError::Malformed("subscription identifier 0"));
                    }
                    Property::SubscriptionIdentifier(v as u32)
                }
                0x11 => Property::SessionExpiryInterval(body.u32()?),
                0x12 => Property::AssignedClientIdentifier(body.string()?),
                0x13 => Property::ServerKeepAlive(body.u16()?),
                0x15 => Property::AuthenticationMethod(body.string()?),
                0x16 => Property::AuthenticationData(body.binary()?),
                0x17 => Property::RequestProblemInformation(body.u8()?),
                0x18 => Property::WillDelayInterval(body.u32()?),
                0x19 => Property::RequestResponseInformation(body.u8()?),
                0x1A => Property::ResponseInformation(body.string()?),
                0x1C => Property::ServerReference(body.string()?),
                0x1F => Property::ReasonString(body.string()?),
                0x21 => Property::ReceiveMaximum(body.u16()?),
                0x22 => Property::TopicAliasMaximum(body.u16()?),
                0x23 => Property::TopicAlias(body.u16()?),
                0x24 => Property::MaximumQos(body.u8()?),
                0x25 => Property::RetainAvailable(body.u8()?),
                0x26 => Property::UserProperty(body.string()?, body.string()?),
                0x27 => Property::MaximumPacketSize(body.u32()?),
                0x28 => Property::WildcardSubscriptionAvailable(body.u8()?),
                0x29 => Property::SubscriptionIdentifierAvailable(body.u8()?),
                0x2A => Property::SharedSubscriptionAvailable(body.u8()?),
                other => return Err(MqttCodecError::UnknownProperty(other)),
            };
            out.push(p);
        }
        Ok(Properties(out))
    }

    fn encode_body(&self, out: &mut BytesMut) {
        for p in &self.0 {
            match p {
                Property::PayloadFormatIndicator(v) => byte(out, 0x01, *v),
                Property::MessageExpiryInterval(v) => int32(out, 0x02, *v),
                Property::ContentType(s) => string(out, 0x03, s),
                Property::ResponseTopic(s) => string(out, 0x08, s),
                Property::CorrelationData(b) => {
                    out.put_u8(0x09);
                    wire::put_binary(out, b);
                }
                Property::SubscriptionIdentifier(v) => {
                    out.put_u8(0x0B);
                    wire::put_varint(out, (*v as usize).min(wire::MAX_VARINT));
                }
                Property::SessionExpiryInterval(v) => int32(out, 0x11, *v),
                Property::AssignedClientIdentifier(s) => string(out, 0x12, s),
                Property::ServerKeepAlive(v) => int16(out, 0x13, *v),
                Property::AuthenticationMethod(s) => string(out, 0x15, s),
                Property::AuthenticationData(b) => {
                    out.put_u8(0x16);
                    wire::put_binary(out, b);
                }
                Property::RequestProblemInformation(v) => byte(out, 0x17, *v),
                Property::WillDelayInterval(v) => int32(out, 0x18, *v),
                Property::RequestResponseInformation(v) => byte(out, 0x19, *v),
                Property::ResponseInformation(s) => string(out, 0x1A, s),
                Property::ServerReference(s) => string(out, 0x1C, s),
                Property::ReasonString(s) => string(out, 0x1F, s),
                Property::ReceiveMaximum(v) => int16(out, 0x21, *v),
                Property::TopicAliasMaximum(v) => int16(out, 0x22, *v),
                Property::TopicAlias(v) => int16(out, 0x23, *v),
                Property::MaximumQos(v) => byte(out, 0x24, *v),
                Property::RetainAvailable(v) => byte(out, 0x25, *v),
                Property::UserProperty(k, v) => {
                    out.put_u8(0x26);
                    wire::put_string(out, k);
                    wire::put_string(out, v);
                }
                Property::MaximumPacketSize(v) => int32(out, 0x27, *v),
                Property::WildcardSubscriptionAvailable(v) => byte(out, 0x28, *v),
                Property::SubscriptionIdentifierAvailable(v) => byte(out, 0x29, *v),
                Property::SharedSubscriptionAvailable(v) => byte(out, 0x2A, *v),
            }
        }
    }

    /// Length prefix and list.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut body = BytesMut::new();
        self.encode_body(&mut body);
        wire::put_varint(out, body.len());
        out.put_slice(&body);
    }
}

fn byte(out: &mut BytesMut, id: u8, v: u8) {
    out.put_u8(id);
    out.put_u8(v);
}

fn int16(out: &mut BytesMut, id: u8, v: u16) {
    out.put_u8(id);
    out.put_u16(v);
}

fn int32(out: &mut BytesMut, id: u8, v: u32) {
    out.put_u8(id);
    out.put_u32(v);
}

fn string(out: &mut BytesMut, id: u8, s: &str) {
    out.put_u8(id);
    wire::put_string(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::reason;

    fn decode(bytes: &[u8]) -> Result<Properties, MqttCodecError> {
        Properties::decode(&mut Reader::new(bytes))
    }

    fn decode_publish(bytes: &[u8]) -> Result<Properties, MqttCodecError> {
        Properties::decode_publish(&mut Reader::new(bytes))
    }

    #[test]
    fn a_repeated_session_expiry_is_a_protocol_error() {
        // Length 10: Session Expiry Interval 1, then 2.
        let bytes = [0x0a, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
        let e = decode(&bytes).unwrap_err();
        assert!(matches!(e, MqttCodecError::DuplicateProperty(0x11)), "{e}");
        assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
        // Not adjacent: Receive Maximum, User Property, Receive Maximum.
        let bytes = [0x0d, 0x21, 0, 5, 0x26, 0, 1, b'k', 0, 1, b'v', 0x21, 0, 6];
        assert!(matches!(
            decode(&bytes),
            Err(MqttCodecError::DuplicateProperty(0x21))
        ));
    }

    #[test]
    fn user_properties_repeat_everywhere_subscription_ids_only_in_publish() {
        let users = [0x0c, 0x26, 0, 1, b'a', 0, 0, 0x26, 0, 1, b'a', 0, 0];
        assert_eq!(decode(&users).unwrap().user_properties().len(), 2);
        assert_eq!(decode_publish(&users).unwrap().user_properties().len(), 2);
        let sub_ids = [0x04, 0x0b, 0x01, 0x0b, 0x02];
        assert_eq!(
            decode_publish(&sub_ids).unwrap().subscription_identifiers(),
            [1, 2]
        );
        assert!(matches!(
            decode(&sub_ids),
            Err(MqttCodecError::DuplicateProperty(0x0b))
        ));
    }

    #[test]
    fn every_other_property_is_refused_twice() {
        let samples = [
            Property::PayloadFormatIndicator(1),
            Property::MessageExpiryInterval(9),
            Property::ContentType("t".into()),
            Property::ResponseTopic("r".into()),
            Property::CorrelationData(Bytes::from_static(b"c")),
            Property::SessionExpiryInterval(1),
            Property::AssignedClientIdentifier("a".into()),
            Property::ServerKeepAlive(1),
            Property::AuthenticationMethod("m".into()),
            Property::AuthenticationData(Bytes::from_static(b"d")),
            Property::RequestProblemInformation(1),
            Property::WillDelayInterval(1),
            Property::RequestResponseInformation(1),
            Property::ResponseInformation("i".into()),
            Property::ServerReference("s".into()),
            Property::ReasonString("why".into()),
            Property::ReceiveMaximum(1),
            Property::TopicAliasMaximum(1),
            Property::TopicAlias(1),
            Property::MaximumQos(1),
            Property::RetainAvailable(1),
            Property::MaximumPacketSize(1),
            Property::WildcardSubscriptionAvailable(1),
            Property::SubscriptionIdentifierAvailable(1),
            Property::SharedSubscriptionAvailable(1),
        ];
        for p in samples {
            let mut once = BytesMut::new();
            Properties(vec![p.clone()]).encode(&mut once);
            assert_eq!(decode_publish(&once).unwrap().0, std::slice::from_ref(&p));
            let id = once[1];
            let mut twice = BytesMut::new();
            Properties(vec![p.clone(), p.clone()]).encode(&mut twice);
            for result in [decode(&twice), decode_publish(&twice)] {
                match result {
                    Err(MqttCodecError::DuplicateProperty(got)) => assert_eq!(got, id, "{p:?}"),
                    other => panic!("{p:?} twice: {other:?}"),
                }
            }
        }
    }
}
