//! What `mqtt.redb` holds as a persistent session changes: one record per
//! queued message (never the whole session rewritten), in-flight marks
//! and acks that survive a restart, the whole-session JSON of earlier
//! versions converted, and a failed write refusing the publish.

use std::sync::Arc;

use bytes::Bytes;
use imgate_codecs::mqtt::{Properties, QoS, SubOptions};
use imgate_core::pipeline::RateLimitConfig;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{session_key, AppMessage, Broker, Inflight};

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUED: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queued");
const INFLIGHT: TableDefinition<(&str, u64), (u16, bool)> = TableDefinition::new("inflight");

fn opts(qos: QoS) -> SubOptions {
    SubOptions {
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
    }
}

fn msg(topic: &str, qos: QoS, payload: Bytes) -> AppMessage {
    AppMessage {
        topic: topic.into(),
        payload,
        qos,
        retain: false,
        properties: Properties::default(),
        expires_at_ms: None,
        owner: Some("pub".into()),
    }
}

/// (session row bytes, queued rows and their total bytes, in-flight rows).
fn rows(dir: &std::path::Path, key: &str) -> (usize, usize, usize, Vec<(u64, u16, bool)>) {
    let db = Database::open(dir.join("mqtt.redb")).unwrap();
    let tx = db.begin_read().unwrap();
    let session = tx
        .open_table(SESSIONS)
        .unwrap()
        .get(key)
        .unwrap()
        .map_or(0, |v| v.value().len());
    let queued = tx.open_table(QUEUED).unwrap();
    let n = queued.len().unwrap() as usize;
    let bytes = queued
        .iter()
        .unwrap()
        .map(|r| r.unwrap().1.value().len())
        .sum();
    let inflight = tx
        .open_table(INFLIGHT)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            let (pkid, released) = v.value();
            (k.value().1, pkid, released)
        })
        .collect();
    (session, n, bytes, inflight)
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_messages_are_records_appended_not_session_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(dir.path(), 1000, RateLimitConfig::default()).unwrap();
    let key = session_key("u", "d");
    let a = b.connect("u", "d", true, 3600);
    b.subscribe(&key, "t/#", opts(QoS::AtLeastOnce), None);
    b.disconnect(&key, a.generation, None);
    let payload = Bytes::from(vec![0xA5u8; 60_000]);
    for i in 0..40 {
        b.publish(
            None,
            msg(&format!("t/{i}"), QoS::AtLeastOnce, payload.clone()),
        );
    }
    drop(b);
    let (session, n, bytes, inflight) = rows(dir.path(), &key);
    assert!(
        session < 1024,
        "the session row holds settings only ({session} bytes)"
    );
    assert_eq!(n, 40, "one record per queued message");
    // Payloads as bytes: about 60 KB each, not ~200 KB of JSON numbers.
    assert!(bytes < 40 * 60_200, "queued records are {bytes} bytes");
    assert!(inflight.is_empty());
    // And they come back in order.
    let b = Broker::open(dir.path(), 1000, RateLimitConfig::default()).unwrap();
    let a = b.connect("u", "d", false, 3600);
    assert!(a.session_present);
    let out = b.take_outgoing(&key, a.generation, 100, true);
    let topics: Vec<String> = out.iter().map(|p| p.topic.clone()).collect();
    let want: Vec<String> = (0..40).map(|i| format!("t/{i}")).collect();
    assert_eq!(topics, want);
    assert!(out.iter().all(|p| p.payload == payload));
}

#[tokio::test(flavor = "multi_thread")]
async fn acks_and_inflight_marks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = session_key("u", "d");
    let (acked, released, sent) = {
        let b = Broker::open(dir.path(), 1000, RateLimitConfig::default()).unwrap();
        let a = b.connect("u", "d", true, 3600);
        b.subscribe(&key, "t/#", opts(QoS::ExactlyOnce), None);
        for i in 0..4 {
            b.publish(
                None,
                msg(
                    &format!("t/{i}"),
                    QoS::ExactlyOnce,
                    Bytes::from_static(b"p"),
                ),
            );
        }
        let out = b.take_outgoing(&key, a.generation, 3, true);
        assert_eq!(out.len(), 3);
        let acked = out[0].pkid;
        assert!(matches!(
            b.complete(&key, acked),
            Some(Inflight::Generic { .. })
        ));
        let released = out[1].pkid;
        assert!(b.released(&key, released));
        b.disconnect(&key, a.generation, None);
        (acked, released, out[2].pkid)
    };
    let (_, n, _, mut inflight) = rows(dir.path(), &key);
    assert_eq!(n, 3, "the acked message's record is gone");
    inflight.sort();
    let marks: Vec<(u16, bool)> = inflight.iter().map(|(_, p, r)| (*p, *r)).collect();
    assert_eq!(marks, vec![(released, true), (sent, false)]);

    let b = Broker::open(dir.path(), 1000, RateLimitConfig::default()).unwrap();
    let a = b.connect("u", "d", false, 3600);
    let resend = b.resend_inflight(&key, true);
    use imgate_codecs::mqtt::{Packet, PubRespKind};
    let mut got: Vec<String> = resend
        .iter()
        .map(|p| match p {
            Packet::PubResp(r) if r.kind == PubRespKind::PubRel => format!("rel {}", r.pkid),
            Packet::Publish(p) => format!("dup={} {} {}", p.dup, p.pkid, p.topic),
            other => format!("{other:?}"),
        })
        .collect();
    got.sort();
    let mut want = vec![format!("rel {released}"), format!("dup=true {sent} t/2")];
    want.sort();
    assert_eq!(got, want, "acked {acked} is not resent");
    let rest = b.take_outgoing(&key, a.generation, 10, true);
    assert_eq!(
        rest.iter().map(|p| p.topic.as_str()).collect::<Vec<_>>(),
        vec!["t/3"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn whole_session_json_of_earlier_versions_is_converted() {
    let dir = tempfile::tempdir().unwrap();
    let key = session_key("u", "d");
    {
        let db = Database::create(dir.path().join("mqtt.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(SESSIONS).unwrap();
            let d = |topic: &str| {
                serde_json::json!({
                    "topic": topic, "payload": [104, 105], "msg_qos": 1, "qos": 1,
                    "retain": false, "msg_retain": false, "properties": [0],
                    "expires_at_ms": null, "subscription_ids": []
                })
            };
            let v = serde_json::json!({
                "user": "u", "device": "d", "expiry_secs": 3600,
                "subs": [{"filter": "t/#", "qos": 1, "no_local": false,
                          "retain_as_published": false, "subscription_id": null}],
                "im_inbox": null, "im_ack": null,
                "queue": [d("t/q1"), d("t/q2")],
                "inflight": [[9, d("t/f"), false]]
            });
            t.insert(key.as_str(), serde_json::to_vec(&v).unwrap().as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let b = Broker::open(dir.path(), 1000, RateLimitConfig::default()).unwrap();
    drop(b);
    let (session, n, _, inflight) = rows(dir.path(), &key);
    assert!(session > 0 && session < 1024);
    assert_eq!(n, 3);
    assert_eq!(inflight.len(), 1);
    let b = Broker::open(dir.path(), 1000, RateLimitConfig::default()).unwrap();
    let a = b.connect("u", "d", false, 3600);
    assert!(a.session_present);
    let resend = b.resend_inflight(&key, true);
    assert_eq!(resend.len(), 1);
    let out = b.take_outgoing(&key, a.generation, 10, true);
    let topics: Vec<&str> = out.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, vec!["t/q1", "t/q2"]);
    assert!(out.iter().all(|p| &p.payload[..] == b"hi"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_refuses_the_publish() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Broker::open(dir.path(), 1000, RateLimitConfig::default()).unwrap();
    let key = session_key("u", "d");
    let a = b.connect("u", "d", true, 3600);
    b.subscribe(&key, "t/#", opts(QoS::AtLeastOnce), None);
    b.disconnect(&key, a.generation, None);
    let m = || msg("t/1", QoS::AtLeastOnce, Bytes::from_static(b"p"));
    assert!(b
        .publish_forwarded(None, m(), super::OverQuota::Refuse)
        .is_ok());
    Arc::get_mut(&mut b).unwrap().db = super::persist::Writer::stopped();
    assert!(
        b.publish_forwarded(None, m(), super::OverQuota::Refuse)
            .is_err(),
        "a publish that could not be saved for a persistent session is not accepted"
    );
    // No persistent subscriber, nothing to save: still accepted.
    assert!(b
        .publish_forwarded(
            None,
            msg("other/1", QoS::AtLeastOnce, Bytes::new()),
            super::OverQuota::Refuse
        )
        .is_ok());
}
