//! Bad MQTT input closes only the offending connection, with an MQTT 5
//! DISCONNECT reason where the client speaks MQTT 5 (DESIGN §3.6), and a
//! CONNACK reason for a bad CONNECT that declares MQTT 5 (MQTT 5 §4.13).

use imgate_codecs::mqtt::{reason, Connect, Packet, Properties, Property, Publish, QoS, Version};
use imgate_conformance::mqtt::{MqttAgent, RawMqtt};
use imgate_conformance::{unique, Gateway};
use serde_json::json;

fn connect_packet(user: &str, token: &str, version: Version) -> Packet {
    Packet::Connect(Connect {
        version,
        client_id: "raw".into(),
        clean_start: true,
        keep_alive: 30,
        username: Some(user.into()),
        password: Some(token.to_owned().into()),
        will: None,
        properties: Properties::default(),
    })
}

/// A raw MQTT 5 client past CONNACK.
fn logged_in(g: &Gateway, user: &str) -> RawMqtt {
    let token = g.admin().token(user, "raw", 1);
    let mut raw = RawMqtt::connect(g.addr("mqtt"), Version::V5);
    raw.send(&connect_packet(user, &token, Version::V5), Version::V5);
    match raw.recv() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    raw
}

fn disconnect_reason(raw: &mut RawMqtt) -> Option<u8> {
    raw.until_closed().into_iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    })
}

#[test]
fn bad_input_closes_only_the_offender() {
    let g = Gateway::start_with(&[("IMGATE_MQTT_MAX_PACKET", "4096")]);
    let t = unique("bystander");
    let healthy_user = unique("healthy");
    let token = g.admin().token(&healthy_user, "h", 1);
    let mut healthy = MqttAgent::start(g.addr("mqtt"));
    assert_eq!(
        healthy
            .connect(json!({"version": 5, "client_id": "h", "user": healthy_user, "token": token}))
            ["rc"],
        0
    );
    healthy.subscribe(&format!("{t}/#"), 1);

    // Not CONNECT first: closed without a reply.
    let mut raw = RawMqtt::connect(g.addr("mqtt"), Version::V4);
    raw.send_bytes(&[0xc0, 0x00]);
    assert!(raw.until_closed().is_empty());
    // Malformed remaining length (five bytes).
    let mut raw = RawMqtt::connect(g.addr("mqtt"), Version::V4);
    raw.send_bytes(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(raw.until_closed().is_empty());
    // Bad protocol name: CONNACK 0x01 and close.
    let mut raw = RawMqtt::connect(g.addr("mqtt"), Version::V4);
    raw.send_bytes(b"\x10\x0e\x00\x04MQTX\x04\x02\x00\x3c\x00\x02d1");
    match raw.until_closed().first() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, reason::V4_UNACCEPTABLE_PROTOCOL_VERSION),
        other => panic!("{other:?}"),
    }

    let user = unique("bad");
    // Oversized packet, refused from the fixed header alone.
    let mut raw = logged_in(&g, &user);
    raw.send_bytes(&[0x30, 0x80, 0x80, 0x40]);
    assert_eq!(disconnect_reason(&mut raw), Some(reason::PACKET_TOO_LARGE));
    // Invalid UTF-8 topic.
    let mut raw = logged_in(&g, &user);
    raw.send_bytes(&[0x30, 0x05, 0x00, 0x02, 0xc3, 0x28, 0x00]);
    assert_eq!(disconnect_reason(&mut raw), Some(reason::MALFORMED_PACKET));
    // Wildcards in a PUBLISH topic.
    let mut raw = logged_in(&g, &user);
    raw.send_bytes(&[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'#', 0x00]);
    assert_eq!(
        disconnect_reason(&mut raw),
        Some(reason::TOPIC_NAME_INVALID)
    );
    // A second CONNECT.
    let mut raw = logged_in(&g, &user);
    raw.send(&connect_packet(&user, "x", Version::V5), Version::V5);
    assert_eq!(disconnect_reason(&mut raw), Some(reason::PROTOCOL_ERROR));
    // QoS 2 packet id reused before PUBREL (without DUP).
    let mut raw = logged_in(&g, &user);
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: format!("{t}/q2"),
        pkid: 9,
        properties: Properties::default(),
        payload: "x".into(),
    });
    raw.send(&publish, Version::V5);
    assert!(matches!(raw.recv(), Some(Packet::PubResp(_))));
    raw.send(&publish, Version::V5);
    assert_eq!(disconnect_reason(&mut raw), Some(reason::PROTOCOL_ERROR));
    assert_eq!(
        healthy.message(&format!("{t}/q2"))["payload"],
        "x",
        "delivered once"
    );

    // The bystander still works.
    assert_eq!(
        healthy.publish(json!({"topic": format!("{t}/after"), "payload": "ok", "qos": 1})),
        0
    );
    assert_eq!(healthy.message(&format!("{t}/after"))["payload"], "ok");
}

/// A CONNECT of `level` with raw connect flags, properties (MQTT 5; the
/// length is prefixed here) and client id bytes; keepalive 60.
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

/// Send a raw CONNECT; the packets before the close.
fn refused_connect(g: &Gateway, version: Version, bytes: &[u8]) -> Vec<Packet> {
    let mut raw = RawMqtt::connect(g.addr("mqtt"), version);
    raw.send_bytes(bytes);
    raw.until_closed()
}

/// The reason of the MQTT 5 CONNACK that answered a raw CONNECT (the
/// connection closed after it).
fn v5_connack_reason(g: &Gateway, bytes: &[u8]) -> u8 {
    match refused_connect(g, Version::V5, bytes).as_slice() {
        [Packet::ConnAck(a)] => a.code,
        other => panic!("expected one MQTT 5 CONNACK then the close, got {other:?}"),
    }
}

#[test]
fn v5_connect_with_a_reserved_flag_gets_connack_malformed() {
    let g = Gateway::start();
    // Bit 0 of the connect flags is reserved [MQTT-3.1.2-3].
    assert_eq!(
        v5_connack_reason(&g, &connect_bytes(5, 0x03, &[], b"d1")),
        reason::MALFORMED_PACKET
    );
    // MQTT 3.1.1 has no such reply: closed without one.
    assert!(refused_connect(&g, Version::V4, &connect_bytes(4, 0x03, &[], b"d1")).is_empty());
}

#[test]
fn v5_connect_with_an_unknown_property_gets_connack_malformed() {
    let g = Gateway::start();
    assert_eq!(
        v5_connack_reason(&g, &connect_bytes(5, 0x02, &[0x7f, 0x00], b"d1")),
        reason::MALFORMED_PACKET
    );
}

#[test]
fn v5_connect_with_a_non_utf8_client_id_gets_connack_malformed() {
    let g = Gateway::start();
    assert_eq!(
        v5_connack_reason(&g, &connect_bytes(5, 0x02, &[], b"\xc3\x28")),
        reason::MALFORMED_PACKET
    );
    assert!(refused_connect(&g, Version::V4, &connect_bytes(4, 0x02, &[], b"\xc3\x28")).is_empty());
}

#[test]
fn v5_connect_with_a_repeated_property_gets_connack_protocol_error() {
    let g = Gateway::start();
    // Session Expiry Interval twice: "a Protocol Error" (MQTT 5 §3.1.2.11.2).
    let props = [0x11, 0, 0, 0, 0x3c, 0x11, 0, 0, 0, 0x3c];
    assert_eq!(
        v5_connack_reason(&g, &connect_bytes(5, 0x02, &props, b"d1")),
        reason::PROTOCOL_ERROR
    );
}

/// A QoS 1 PUBLISH to a fresh generic topic with these properties.
fn publish_with(properties: Vec<Property>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: unique("refused"),
        pkid: 1,
        properties: Properties(properties),
        payload: "x".into(),
    })
}

#[test]
fn publish_with_a_subscription_identifier_gets_disconnect_protocol_error() {
    let g = Gateway::start();
    let mut raw = logged_in(&g, &unique("subid"));
    // [MQTT-3.3.4-6]: only the server puts one in a PUBLISH.
    raw.send(
        &publish_with(vec![Property::SubscriptionIdentifier(7)]),
        Version::V5,
    );
    assert_eq!(disconnect_reason(&mut raw), Some(reason::PROTOCOL_ERROR));
}

#[test]
fn publish_with_a_wildcard_response_topic_gets_disconnect_protocol_error() {
    let g = Gateway::start();
    let mut raw = logged_in(&g, &unique("resp"));
    // [MQTT-3.3.2-14]: no wildcards in a Response Topic.
    raw.send(
        &publish_with(vec![Property::ResponseTopic("replies/+".into())]),
        Version::V5,
    );
    assert_eq!(disconnect_reason(&mut raw), Some(reason::PROTOCOL_ERROR));
}

#[test]
fn publish_with_a_repeated_property_gets_disconnect_protocol_error() {
    let g = Gateway::start();
    let mut raw = logged_in(&g, &unique("dup"));
    raw.send(
        &publish_with(vec![
            Property::MessageExpiryInterval(60),
            Property::MessageExpiryInterval(60),
        ]),
        Version::V5,
    );
    assert_eq!(disconnect_reason(&mut raw), Some(reason::PROTOCOL_ERROR));
}
