//! Packet bodies → [`Packet`], for a known protocol version (CONNECT
//! carries its own). Input is one whole packet, already delimited by the
//! framer; every length is checked, nothing panics on hostile bytes.

use bytes::Bytes;

use super::error::MqttCodecError;
use super::packet::*;
use super::properties::Properties;
use super::topic;
use super::wire::Reader;

const MALFORMED_FLAGS: MqttCodecError = MqttCodecError::Malformed("reserved flags set");

fn props(r: &mut Reader<'_>, v: Version) -> Result<Properties, MqttCodecError> {
    match v {
        Version::V5 => Properties::decode(r),
        Version::V4 => Ok(Properties::default()),
    }
}

fn end(r: &Reader<'_>) -> Result<(), MqttCodecError> {
    if r.remaining() == 0 {
        Ok(())
    } else {
        Err(MqttCodecError::Malformed("trailing bytes"))
    }
}

fn nonzero_pkid(r: &mut Reader<'_>) -> Result<u16, MqttCodecError> {
    match r.u16()? {
        0 => Err(MqttCodecError::Malformed("packet identifier 0")),
        id => Ok(id),
    }
}

/// Decode one packet given its first byte and body. `version` is the
/// connection's (ignored for CONNECT, which declares it).
pub fn decode_packet(first: u8, body: &[u8], version: Version) -> Result<Packet, MqttCodecError> {
    let flags = first & 0x0f;
    let mut r = Reader::new(body);
    let packet = match first >> 4 {
        1 => Packet::Connect(connect(flags, &mut r)?),
        2 => {
            if flags != 0 {
                return Err(MALFORMED_FLAGS);
            }
            let ack_flags = r.u8()?;
            if ack_flags & 0xfe != 0 {
                return Err(MALFORMED_FLAGS);
            }
            let code = r.u8()?;
            let properties = props(&mut r, version)?;
            Packet::ConnAck(ConnAck {
                session_present: ack_flags & 1 == 1,
                code,
                properties,
            })
        }
        3 => Packet::Publish(publish(flags, &mut r, version)?),
        kind @ 4..=7 => {
            let (kind, expected) = match kind {
                4 => (PubRespKind::PubAck, 0),
                5 => (PubRespKind::PubRec, 0),
                6 => (PubRespKind::PubRel, 2),
                _ => (PubRespKind::PubComp, 0),
            };
            if flags != expected {
                return Err(MALFORMED_FLAGS);
            }
            let pkid = nonzero_pkid(&mut r)?;
            let (reason, properties) = reason_and_props(&mut r, version)?;
            Packet::PubResp(PubResp {
                kind,
                pkid,
                reason,
                properties,
            })
        }
        8 => {
            if flags != 2 {
                return Err(MALFORMED_FLAGS);
            }
            let pkid = nonzero_pkid(&mut r)?;
            let properties = props(&mut r, version)?;
            let mut filters = Vec::new();
            while r.remaining() > 0 {
                let filter = r.string()?;
                let o = r.u8()?;
                let reserved = match version {
                    Version::V4 => 0xfc,
                    Version::V5 => 0xc0,
                };
                if o & reserved != 0 {
                    return Err(MqttCodecError::Malformed(
                        "reserved subscription option bits",
                    ));
                }
                let qos = QoS::from_u8(o & 3).ok_or(MqttCodecError::Malformed("QoS 3"))?;
                let retain_handling = (o >> 4) & 3;
                if retain_handling == 3 {
                    return Err(MqttCodecError::Malformed("retain handling 3"));
                }
                filters.push(SubscribeFilter {
                    filter,
                    options: SubOptions {
                        qos,
                        no_local: o & 0x04 != 0,
                        retain_as_published: o & 0x08 != 0,
                        retain_handling,
                    },
                });
            }
            if filters.is_empty() {
                return Err(MqttCodecError::Malformed("SUBSCRIBE without filters"));
            }
            Packet::Subscribe(Subscribe {
                pkid,
                filters,
                properties,
            })
        }
        9 => {
            if flags != 0 {
                return Err(MALFORMED_FLAGS);
            }
            let pkid = nonzero_pkid(&mut r)?;
            let properties = props(&mut r, version)?;
            Packet::SubAck(SubAck {
                pkid,
                reasons: r.rest().to_vec(),
                properties,
            })
        }
        10 => {
            if flags != 2 {
                return Err(MALFORMED_FLAGS);
            }
            let pkid = nonzero_pkid(&mut r)?;
            let properties = props(&mut r, version)?;
            let mut filters = Vec::new();
            while r.remaining() > 0 {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(MqttCodecError::Malformed("UNSUBSCRIBE without filters"));
            }
            Packet::Unsubscribe(Unsubscribe {
                pkid,
                filters,
                properties,
            })
        }
        11 => {
            if flags != 0 {
                return Err(MALFORMED_FLAGS);
            }
            let pkid = nonzero_pkid(&mut r)?;
            let properties = props(&mut r, version)?;
            let reasons = match version {
                Version::V5 => r.rest().to_vec(),
                Version::V4 => Vec::new(),
            };
            Packet::UnsubAck(UnsubAck {
                pkid,
                reasons,
                properties,
            })
        }
        12 | 13 => {
            if flags != 0 {
                return Err(MALFORMED_FLAGS);
            }
            end(&r)?;
            if first >> 4 == 12 {
                Packet::PingReq
            } else {
                Packet::PingResp
            }
        }
        14 => {
            if flags != 0 {
                return Err(MALFORMED_FLAGS);
            }
            let (reason, properties) = reason_and_props(&mut r, version)?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        15 if version == Version::V5 => {
            if flags != 0 {
                return Err(MALFORMED_FLAGS);
            }
            let (reason, properties) = reason_and_props(&mut r, version)?;
            Packet::Auth(Auth { reason, properties })
        }
        _ => return Err(MqttCodecError::Malformed("reserved packet type")),
    };
    end(&r)?;
    Ok(packet)
}

/// The optional reason code and properties of acks and DISCONNECT (MQTT 5
/// §3.4.2.1: both may be omitted).
fn reason_and_props(r: &mut Reader<'_>, v: Version) -> Result<(u8, Properties), MqttCodecError> {
    if v == Version::V4 || r.remaining() == 0 {
        return Ok((0, Properties::default()));
    }
    let reason = r.u8()?;
    if r.remaining() == 0 {
        return Ok((reason, Properties::default()));
    }
    Ok((reason, Properties::decode(r)?))
}

fn publish(flags: u8, r: &mut Reader<'_>, v: Version) -> Result<Publish, MqttCodecError> {
    let qos = QoS::from_u8((flags >> 1) & 3).ok_or(MqttCodecError::Malformed("QoS 3"))?;
    let dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(MqttCodecError::Malformed("DUP set on QoS 0"));
    }
    let topic = r.string()?;
    // MQTT 5 allows an empty topic when a topic alias stands for it.
    let alias_only = v == Version::V5 && topic.is_empty();
    if !(alias_only || topic::valid_topic_name(&topic)) {
        return Err(MqttCodecError::InvalidTopicName);
    }
    let pkid = match qos {
        QoS::AtMostOnce => 0,
        _ => nonzero_pkid(r)?,
    };
    let properties = match v {
        Version::V5 => Properties::decode_publish(r)?,
        Version::V4 => Properties::default(),
    };
    Ok(Publish {
        dup,
        qos,
        retain: flags & 1 != 0,
        topic,
        pkid,
        properties,
        payload: Bytes::copy_from_slice(r.rest()),
    })
}

/// CONNECT: protocol name and level first; any later error carries the
/// level ([`MqttCodecError::BadConnect`]) so the server can refuse in it.
fn connect(fixed_flags: u8, r: &mut Reader<'_>) -> Result<Connect, MqttCodecError> {
    let name = r.binary()?;
    if name.as_ref() != b"MQTT" {
        return Err(MqttCodecError::InvalidProtocolName);
    }
    let version = match r.u8()? {
        4 => Version::V4,
        5 => Version::V5,
        other => return Err(MqttCodecError::UnsupportedProtocolLevel(other)),
    };
    connect_after_level(fixed_flags, version, r).map_err(|error| MqttCodecError::BadConnect {
        version,
        error: Box::new(error),
    })
}

fn connect_after_level(
    fixed_flags: u8,
    version: Version,
    r: &mut Reader<'_>,
) -> Result<Connect, MqttCodecError> {
    if fixed_flags != 0 {
        return Err(MALFORMED_FLAGS);
    }
    let flags = r.u8()?;
    if flags & 1 != 0 {
        return Err(MALFORMED_FLAGS);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 3).ok_or(MqttCodecError::Malformed("will QoS 3"))?;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(MqttCodecError::Malformed(
            "will QoS or retain without a will",
        ));
    }
    if version == Version::V4 && has_password && !has_username {
        return Err(MqttCodecError::Malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = props(r, version)?;
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = props(r, version)?;
        let topic = r.string()?;
        if !topic::valid_topic_name(&topic) {
            return Err(MqttCodecError::InvalidTopicName);
        }
        Some(LastWill {
            topic,
            payload: r.binary()?,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    end(r)?;
    Ok(Connect {
        version,
        client_id,
        clean_start,
        keep_alive,
        username,
        password,
        will,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::{reason, MqttFramer};
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    /// A CONNECT of `level` (keepalive 60) with raw connect flags,
    /// properties (MQTT 5; the length is prefixed here) and client id.
    fn connect_bytes(level: u8, flags: u8, props: &[u8], client_id: &[u8]) -> Vec<u8> {
        let mut body = b"\x00\x04MQTT".to_vec();
        body.extend([level, flags, 0x00, 0x3c]);
        if level == 5 {
            body.push(props.len() as u8);
            body.extend_from_slice(props);
        }
        body.extend([0x00, client_id.len() as u8]);
        body.extend_from_slice(client_id);
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend(body);
        packet
    }

    /// What a server framer makes of `bytes`: the error, the reason code
    /// and the version the framer then encodes in.
    fn refuse(bytes: &[u8]) -> (MqttCodecError, u8, Option<Version>) {
        let mut framer = MqttFramer::new(1024);
        let e = framer.decode(&mut BytesMut::from(bytes)).unwrap_err();
        let code = e.reason_code();
        (e, code, framer.version())
    }

    #[test]
    fn the_fixture_connect_is_well_formed() {
        let good = connect_bytes(5, 0x02, &[0x11, 0, 0, 0, 0x3c], b"d1");
        let mut framer = MqttFramer::new(1024);
        let Some(Packet::Connect(c)) = framer.decode(&mut BytesMut::from(&good[..])).unwrap()
        else {
            panic!("not a CONNECT");
        };
        assert_eq!(c.properties.session_expiry_interval(), Some(60));
    }

    #[test]
    fn a_bad_v5_connect_carries_its_level_and_reason() {
        let dup = [0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1];
        let cases: [(&str, Vec<u8>, u8); 6] = [
            (
                "reserved flag",
                connect_bytes(5, 0x03, &[], b"d1"),
                reason::MALFORMED_PACKET,
            ),
            (
                "unknown property",
                connect_bytes(5, 0x02, &[0x7f, 0x00], b"d1"),
                reason::MALFORMED_PACKET,
            ),
            (
                "client id not UTF-8",
                connect_bytes(5, 0x02, &[], b"\xc3\x28"),
                reason::MALFORMED_PACKET,
            ),
            (
                "will QoS 3",
                connect_bytes(5, 0x1e, &[], b"d1"),
                reason::MALFORMED_PACKET,
            ),
            (
                "duplicate property",
                connect_bytes(5, 0x02, &dup, b"d1"),
                reason::PROTOCOL_ERROR,
            ),
            (
                "fixed header flags",
                {
                    let mut b = connect_bytes(5, 0x02, &[], b"d1");
                    b[0] = 0x12;
                    b
                },
                reason::MALFORMED_PACKET,
            ),
        ];
        for (what, bytes, want) in cases {
            let (e, code, version) = refuse(&bytes);
            assert!(
                matches!(
                    e,
                    MqttCodecError::BadConnect {
                        version: Version::V5,
                        ..
                    }
                ),
                "{what}: {e}"
            );
            assert_eq!(code, want, "{what}: {e}");
            assert_eq!(version, Some(Version::V5), "{what}: CONNACK in MQTT 5 form");
        }
        // Trailing bytes after the last field.
        let mut b = connect_bytes(5, 0x02, &[], b"d1");
        b[1] += 1;
        b.push(0);
        assert_eq!(refuse(&b).1, reason::MALFORMED_PACKET);
    }

    #[test]
    fn a_bad_v4_connect_carries_level_4() {
        let (e, _, version) = refuse(&connect_bytes(4, 0x03, &[], b"d1"));
        assert!(
            matches!(
                e,
                MqttCodecError::BadConnect {
                    version: Version::V4,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(version, Some(Version::V4));
    }

    #[test]
    fn before_the_level_the_version_stays_unknown() {
        let mut b = connect_bytes(5, 0x03, &[], b"d1");
        b[6] = b'X'; // protocol name MQTX
        let (e, _, version) = refuse(&b);
        assert!(matches!(e, MqttCodecError::InvalidProtocolName), "{e}");
        assert_eq!(version, None);
    }

    #[test]
    fn publish_may_repeat_subscription_identifiers_subscribe_may_not() {
        // PUBLISH "a", QoS 0, subscription identifiers 1 and 2.
        let publish = [0x30, 0x08, 0x00, 0x01, b'a', 0x04, 0x0b, 0x01, 0x0b, 0x02];
        let mut f = MqttFramer::with_version(1024, Version::V5);
        let Some(Packet::Publish(p)) = f.decode(&mut BytesMut::from(&publish[..])).unwrap() else {
            panic!("not a PUBLISH");
        };
        assert_eq!(p.properties.subscription_identifiers(), [1, 2]);
        // SUBSCRIBE id 1, subscription identifiers 1 and 2, filter "a" QoS 0.
        let subscribe = [
            0x82, 0x0b, 0x00, 0x01, 0x04, 0x0b, 0x01, 0x0b, 0x02, 0x00, 0x01, b'a', 0x00,
        ];
        let e = f.decode(&mut BytesMut::from(&subscribe[..])).unwrap_err();
        assert!(matches!(e, MqttCodecError::DuplicateProperty(0x0b)), "{e}");
        assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
    }
}
