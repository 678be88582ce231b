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
        1 => {
            if flags != 0 {
                return Err(MALFORMED_FLAGS);
            }
            Packet::Connect(connect(&mut r)?)
        }
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
    let properties = props(r, v)?;
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

fn connect(r: &mut Reader<'_>) -> Result<Connect, MqttCodecError> {
    let name = r.binary()?;
    if name.as_ref() != b"MQTT" {
        return Err(MqttCodecError::InvalidProtocolName);
    }
    let version = match r.u8()? {
        4 => Version::V4,
        5 => Version::V5,
        other => return Err(MqttCodecError::UnsupportedProtocolLevel(other)),
    };
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
