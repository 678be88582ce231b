//! Criterion micro-benchmarks of every codec, decode and encode, on one
//! typical 1:1 text message (a 256-byte body):
//!
//! - `pb`: a SendRequest frame → `PbFramer` → `PbRequest` → `Draft`, and a
//!   `Message` → Deliver push frame → bytes (DESIGN §5.2).
//! - `mqtt_v4` / `mqtt_v5`: an `im/send` PUBLISH → `Packet` → `Draft` (the
//!   JSON send body), and an `im/inbox` delivery `Message` → PUBLISH bytes
//!   (§5.3).
//! - `xmpp`: a `<message type='chat'>` in an open stream → `Element` →
//!   `Draft`, and a `Message` → stanza XML (§5.4).
//! - `json`: the send request body of §5.5 → `Draft`, and a `Message` →
//!   the JSON message.
//!
//! `cargo bench -p imgate-bench --bench codecs` (add `-- --quick` for a
//! short run). Throughput is in elements (messages) per second.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use imgate_codecs::mqtt::{
    encode::encode_packet, MqttFramer, MqttNormalizer, Packet, Properties, Publish, QoS, Version,
};
use imgate_codecs::pb::{commands, proto, PbFrame, PbFramer, PbNormalizer, PbRequest};
use imgate_codecs::xmpp::normalizer::DeliveryOptions;
use imgate_codecs::xmpp::{XmppEvent, XmppFramer, XmppNormalizer};
use imgate_core::model::{Conversation, Message, MessagePayload};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of text per benchmarked message.
const TEXT_LEN: usize = 256;
const DOMAIN: &str = "localhost";
const STREAM_HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

fn text() -> String {
    "x".repeat(TEXT_LEN)
}

fn message() -> Message {
    Message {
        message_id: 7_234_567_890_123,
        sender: "alice".into(),
        conversation: Conversation::private("bob"),
        payload: MessagePayload {
            content_type: 1,
            searchable_content: text(),
            ..Default::default()
        },
        server_ts: 1_764_000_000_000,
        client_msg_id: "c-1".into(),
        to_users: vec![],
    }
}

fn json_send_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "conv": {"type": 0, "target": "bob", "line": 0},
        "payload": {"type": 1, "searchableContent": text()},
        "clientMsgId": "c-1",
    }))
    .unwrap_or_default()
}

fn pb(c: &mut Criterion) {
    let mut g = c.benchmark_group("pb");
    g.throughput(Throughput::Elements(1));
    let mut framer = PbFramer::new(1 << 20);
    let send = proto::SendRequest {
        client_msg_id: "c-1".into(),
        conversation: Some(proto::Conversation {
            r#type: 0,
            target: "bob".into(),
            line: 0,
        }),
        payload: Some(proto::MessagePayload {
            r#type: 1,
            searchable_content: text(),
            ..Default::default()
        }),
        to_users: vec![],
    };
    let mut wire = BytesMut::new();
    if let Err(e) = framer.encode(PbRequest::Send(send).to_frame(1), &mut wire) {
        panic!("encoding the fixture: {e}");
    }
    let wire = wire.freeze();
    g.bench_function("decode_send_to_draft", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let Ok(Some(frame)) = framer.decode(&mut buf) else {
                panic!("a whole frame")
            };
            let Ok(PbRequest::Send(req)) = PbRequest::decode(&frame) else {
                panic!("a SendRequest")
            };
            black_box(PbNormalizer::send_request_to_draft(req, "alice"))
        })
    });
    let msg = message();
    let mut out = BytesMut::with_capacity(1024);
    g.bench_function("encode_deliver", |b| {
        b.iter(|| {
            out.clear();
            let frame = PbFrame::push(commands::DELIVER, &PbNormalizer::deliver(black_box(&msg)));
            if let Err(e) = framer.encode(frame, &mut out) {
                panic!("encode: {e}");
            }
            black_box(out.len())
        })
    });
    g.finish();
}

fn mqtt(c: &mut Criterion, version: Version, name: &str) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    let mut framer = MqttFramer::with_version(1 << 20, version);
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "im/send".into(),
        pkid: 42,
        properties: Properties::default(),
        payload: Bytes::from(json_send_body()),
    });
    let mut wire = BytesMut::new();
    encode_packet(&publish, version, &mut wire);
    let wire = wire.freeze();
    g.bench_function("decode_im_send_to_draft", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let Ok(Some(Packet::Publish(p))) = framer.decode(&mut buf) else {
                panic!("a PUBLISH")
            };
            black_box(MqttNormalizer::send_body_to_draft(&p.payload, None, "alice").is_ok())
        })
    });
    let msg = message();
    let mut out = BytesMut::with_capacity(1024);
    g.bench_function("encode_inbox_publish", |b| {
        b.iter(|| {
            out.clear();
            let p = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: MqttNormalizer::inbox_topic("bob"),
                pkid: 7,
                properties: Properties::default(),
                payload: Bytes::from(MqttNormalizer::message_payload(black_box(&msg))),
            });
            encode_packet(&p, version, &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

fn mqtt_v4(c: &mut Criterion) {
    mqtt(c, Version::V4, "mqtt_v4");
}

fn mqtt_v5(c: &mut Criterion) {
    mqtt(c, Version::V5, "mqtt_v5");
}

fn xmpp(c: &mut Criterion) {
    let mut g = c.benchmark_group("xmpp");
    g.throughput(Throughput::Elements(1));
    let normalizer = XmppNormalizer::new(DOMAIN);
    let stanza = format!(
        "<message to='bob@localhost' type='chat' id='c-1'><body>{}</body></message>",
        text()
    );
    // One framer whose stream is open, as in a session after login.
    let mut framer = XmppFramer::new(1 << 20, 64);
    let mut buf = BytesMut::from(STREAM_HEADER);
    let Ok(Some(XmppEvent::StreamOpen(_))) = framer.decode(&mut buf) else {
        panic!("the stream header")
    };
    g.bench_function("decode_message_to_draft", |b| {
        b.iter(|| {
            buf.extend_from_slice(stanza.as_bytes());
            let Ok(Some(XmppEvent::Stanza(el))) = framer.decode(&mut buf) else {
                panic!("a stanza")
            };
            black_box(normalizer.message_to_draft(&el, "alice").is_ok())
        })
    });
    let msg = message();
    g.bench_function("encode_message_stanza", |b| {
        b.iter(|| {
            let el = normalizer.message_to_stanza(
                black_box(&msg),
                "bob",
                "bob@localhost/phone",
                DeliveryOptions::default(),
            );
            black_box(el.to_xml().len())
        })
    });
    g.finish();
}

fn json(c: &mut Criterion) {
    let mut g = c.benchmark_group("json");
    g.throughput(Throughput::Elements(1));
    let body = json_send_body();
    g.bench_function("decode_send_body_to_draft", |b| {
        b.iter(|| {
            black_box(MqttNormalizer::send_body_to_draft(black_box(&body), None, "alice").is_ok())
        })
    });
    let msg = message();
    g.bench_function("encode_message", |b| {
        b.iter(|| black_box(MqttNormalizer::message_payload(black_box(&msg)).len()))
    });
    g.finish();
}

criterion_group!(benches, pb, mqtt_v4, mqtt_v5, xmpp, json);
criterion_main!(benches);
