//! Hostile MQTT bytes: errors (with their DISCONNECT reason), never
//! panics; the size limit applies from the fixed header alone.

use bytes::BytesMut;
use imgate_codecs::mqtt::{reason, MqttCodecError, MqttFramer, Version};
use tokio_util::codec::Decoder;

fn decode(
    framer: &mut MqttFramer,
    bytes: &[u8],
) -> Result<Option<imgate_codecs::mqtt::Packet>, MqttCodecError> {
    framer.decode(&mut BytesMut::from(bytes))
}

#[test]
fn size_is_checked_from_the_fixed_header() {
    let mut f = MqttFramer::with_version(100, Version::V5);
    // Only four header bytes: announces 1 MiB.
    let e = decode(&mut f, &[0x30, 0x80, 0x80, 0x40]).unwrap_err();
    assert_eq!(e.reason_code(), reason::PACKET_TOO_LARGE);
}

#[test]
fn malformed_inputs_are_errors() {
    let v5 = || MqttFramer::with_version(1 << 20, Version::V5);
    let cases: &[(&[u8], u8)] = &[
        (
            &[0x10, 0xff, 0xff, 0xff, 0xff, 0x01],
            reason::MALFORMED_PACKET,
        ),
        (
            &[0x30, 0x05, 0x00, 0x02, 0xc3, 0x28, 0x00],
            reason::MALFORMED_PACKET,
        ),
        (
            &[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'+', 0x00],
            reason::TOPIC_NAME_INVALID,
        ),
        (&[0x36, 0x03, 0x00, 0x01, b'a'], reason::MALFORMED_PACKET), // QoS 3
        (&[0x82, 0x03, 0x00, 0x01, 0x00], reason::MALFORMED_PACKET), // no filters
        (&[0x40, 0x02, 0x00, 0x00], reason::MALFORMED_PACKET),       // packet id 0
        (
            &[0x30, 0x04, 0x00, 0x01, b'a', 0x05],
            reason::MALFORMED_PACKET,
        ), // props overrun
        (
            &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x7f, 0x00],
            reason::MALFORMED_PACKET,
        ), // unknown prop
        (&[0x00, 0x00], reason::MALFORMED_PACKET),
    ];
    for (bytes, want) in cases {
        let e = decode(&mut v5(), bytes).unwrap_err();
        assert_eq!(e.reason_code(), *want, "{bytes:02x?}: {e}");
    }
    // The first packet of a server connection must be CONNECT.
    let e = decode(&mut MqttFramer::new(1024), &[0xc0, 0x00]).unwrap_err();
    assert!(matches!(e, MqttCodecError::NotConnected));
    let e = decode(
        &mut MqttFramer::new(1024),
        b"\x10\x0e\x00\x04MQTT\x07\x02\x00\x3c\x00\x02d1",
    )
    .unwrap_err();
    assert!(matches!(e, MqttCodecError::UnsupportedProtocolLevel(7)));
}

#[test]
fn partial_input_needs_more_bytes() {
    let whole = b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02d1";
    for cut in 0..whole.len() {
        let mut f = MqttFramer::new(1024);
        let mut buf = BytesMut::from(&whole[..cut]);
        assert!(f.decode(&mut buf).unwrap().is_none(), "cut at {cut}");
        buf.extend_from_slice(&whole[cut..]);
        assert!(f.decode(&mut buf).unwrap().is_some());
    }
}
