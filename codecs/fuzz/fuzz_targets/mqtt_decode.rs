//! Fuzz target `mqtt_decode`: arbitrary bytes through the MQTT inbound
//! path — the server framer (CONNECT first, version learned from it) and a
//! framer of a fixed version, fed in chunks as a socket would — then the
//! IM normalizer on every PUBLISH payload, and the encoder.
//!
//! Properties beyond "no panic": a decoded packet re-encodes to bytes that
//! decode to the same packet (the encoder writes the shortest form).
#![no_main]

use bytes::BytesMut;
use imgate_codecs::mqtt::{encode::encode_packet, MqttFramer, MqttNormalizer, Packet, Version};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn run(mut framer: MqttFramer, chunk: usize, data: &[u8]) {
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(packet)) => {
                    let version = framer.version().unwrap_or(Version::V4);
                    if let Packet::Publish(p) = &packet {
                        let ct = p.properties.content_type();
                        let _ = MqttNormalizer::send_body_to_draft(&p.payload, ct.as_deref(), "u");
                    }
                    let mut out = BytesMut::new();
                    encode_packet(&packet, version, &mut out);
                    let mut again = MqttFramer::with_version(usize::MAX, version);
                    let back = again.decode(&mut out).expect("re-encoded packet decodes");
                    assert_eq!(back.as_ref(), Some(&packet));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (first, rest) = match data.split_first() {
        Some((c, rest)) => (*c, rest),
        None => return,
    };
    let chunk = usize::from(first % 32) + 1;
    run(MqttFramer::new(8 * 1024), chunk, rest);
    let version = if first & 0x80 == 0 { Version::V4 } else { Version::V5 };
    run(MqttFramer::with_version(8 * 1024, version), chunk, rest);
});
