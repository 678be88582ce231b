//! The MQTT state machine without a socket: packets in, steps and packets
//! out (a real broker on a temporary directory).

use super::*;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use imgate_codecs::mqtt::{Publish, SubOptions, Subscribe, SubscribeFilter};
use imgate_core::pipeline::Principal;
use imgate_core::ErrorCode;
use tokio_util::codec::Decoder;

use crate::sessions::driver::Protocol as _;
use crate::sessions::Kick;

const MAX: usize = 1 << 20;

struct Harness {
    session: MqttSession,
    buf: BytesMut,
    enc: MqttFramer,
    version: Version,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(version: Version) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(dir.path(), 100, Default::default()).unwrap();
        Harness {
            session: MqttSession::new(broker, MAX),
            buf: BytesMut::new(),
            enc: MqttFramer::new(MAX),
            version,
            _dir: dir,
        }
    }

    fn call<R>(
        &mut self,
        in_flight: bool,
        f: impl FnOnce(&mut MqttSession, &mut MqttCx<'_>) -> R,
    ) -> R {
        let mut cx = Cx::new(&mut self.buf, &mut self.enc, in_flight);
        f(&mut self.session, &mut cx)
    }

    fn written(&mut self) -> Vec<Packet> {
        let mut dec = MqttFramer::with_version(MAX, self.version);
        let mut out = Vec::new();
        while let Some(p) = dec.decode(&mut self.buf).unwrap() {
            out.push(p);
        }
        assert!(self.buf.is_empty());
        out
    }

    /// CONNECT as alice/dev1, logged in, CONNACK written and read.
    fn connected(version: Version) -> Self {
        let mut h = Harness::new(version);
        let c = connect(version);
        assert!(matches!(
            h.call(false, |s, cx| s.on_login_frame(c, cx)),
            LoginStep::Check(_)
        ));
        assert!(matches!(
            h.call(false, |s, cx| s.on_login(Ok(principal()), cx)),
            LoginStep::LoggedIn(_)
        ));
        assert!(matches!(
            h.call(false, |s, cx| s.on_logged_in(true, cx)),
            Step::Continue
        ));
        match &h.written()[..] {
            [Packet::ConnAck(a)] => assert_eq!(a.code, reason::SUCCESS),
            other => panic!("a CONNACK, not {other:?}"),
        }
        h
    }
}

fn principal() -> Principal {
    Principal {
        user_id: "alice".into(),
        device_id: "dev1".into(),
        platform: imgate_core::model::Platform::Unknown,
        protocol: Protocol::Mqtt,
        admin: false,
    }
}

fn connect(version: Version) -> Packet {
    Packet::Connect(Connect {
        version,
        client_id: "dev1".into(),
        clean_start: true,
        keep_alive: 30,
        username: Some("alice".into()),
        password: Some(Bytes::from_static(b"tok")),
        will: None,
        properties: Properties::default(),
    })
}

fn im_send(pkid: u16, client_msg_id: &str) -> Packet {
    let body = format!(
        r#"{{"conv":{{"type":0,"target":"bob","line":0}},"payload":{{"type":1,"searchableContent":"hi"}},"clientMsgId":"{client_msg_id}"}}"#
    );
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "im/send".into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from(body),
    })
}

#[test]
fn connect_credentials_go_to_the_login_and_a_refusal_is_a_connack() {
    for (version, code) in [
        (Version::V5, reason::BAD_USER_NAME_OR_PASSWORD),
        (Version::V4, reason::V4_BAD_USER_NAME_OR_PASSWORD),
    ] {
        let mut h = Harness::new(version);
        let c = connect(version);
        let LoginStep::Check(creds) = h.call(false, |s, cx| s.on_login_frame(c, cx)) else {
            panic!("CONNECT asks for a login");
        };
        assert_eq!(
            (
                creds.user.as_str(),
                creds.credential.as_str(),
                creds.client_id.as_str()
            ),
            ("alice", "tok", "dev1")
        );
        let refused = ImError::new(ErrorCode::AuthFailure, "expired");
        assert!(matches!(
            h.call(false, |s, cx| s.on_login(Err(refused), cx)),
            LoginStep::Refused
        ));
        match &h.written()[..] {
            [Packet::ConnAck(a)] => assert_eq!(a.code, code),
            other => panic!("a CONNACK, not {other:?}"),
        }
    }
}

#[test]
fn a_first_packet_that_is_not_connect_closes_without_a_reply() {
    let mut h = Harness::new(Version::V4);
    assert!(matches!(
        h.call(false, |s, cx| s.on_login_frame(Packet::PingReq, cx)),
        LoginStep::Refused
    ));
    assert!(h.written().is_empty());
}

#[test]
fn im_sends_go_to_the_window_and_their_pubacks_follow_publish_order() {
    let mut h = Harness::connected(Version::V5);
    let mut metas = Vec::new();
    for (pkid, id) in [(1u16, "m1"), (2, "m2")] {
        let p = im_send(pkid, id);
        match h.call(pkid == 2, |s, cx| s.on_frame(p, cx)) {
            Step::Send(Ok(cmd), meta) => {
                assert_eq!(cmd.draft.client_msg_id, id);
                assert_eq!(cmd.principal.user_id, "alice");
                metas.push(meta);
            }
            _ => panic!("im/send goes to the window"),
        }
    }
    assert!(h.written().is_empty(), "no PUBACK before the store");
    let mut results = vec![
        Ok(SendAck {
            message_id: 10,
            server_ts: 1,
            client_msg_id: "m1".into(),
            duplicate: false,
        }),
        Err(ImError::new(ErrorCode::SensitiveWord, "no")),
    ]
    .into_iter();
    for meta in metas {
        let r = results.next().unwrap();
        h.call(false, |s, cx| s.on_send_done((meta, r), cx));
    }
    let acks: Vec<(u16, u8)> = h
        .written()
        .into_iter()
        .map(|p| match p {
            Packet::PubResp(r) => (r.pkid, r.reason),
            other => panic!("a PUBACK, not {other:?}"),
        })
        .collect();
    assert_eq!(
        acks,
        vec![
            (1, reason::SUCCESS),
            (2, reason::for_error_code(ErrorCode::SensitiveWord))
        ]
    );
}

#[test]
fn subscribe_behind_sends_waits_then_the_inbox_is_attached_before_the_suback() {
    let mut h = Harness::connected(Version::V5);
    let sub = Packet::Subscribe(Subscribe {
        pkid: 7,
        filters: vec![SubscribeFilter {
            filter: "im/inbox/alice".into(),
            options: SubOptions {
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        }],
        properties: Properties::default(),
    });
    assert!(matches!(
        h.call(true, |s, cx| s.on_frame(sub, cx)),
        Step::Wait
    ));
    assert!(h.written().is_empty());
    assert!(matches!(
        h.call(false, |s, cx| s.on_sends_answered(cx)),
        Step::AttachFeed
    ));
    assert!(
        h.written().is_empty(),
        "the SUBACK waits for the device's registration"
    );
    assert!(matches!(
        h.call(false, |s, cx| s.on_attached(true, cx)),
        Step::Continue
    ));
    match &h.written()[..] {
        [Packet::SubAck(a)] => assert_eq!((a.pkid, a.reasons.clone()), (7, vec![1])),
        other => panic!("a SUBACK, not {other:?}"),
    }
    // PINGREQ needs no order: answered with sends in flight.
    h.call(true, |s, cx| s.on_frame(Packet::PingReq, cx));
    assert!(matches!(&h.written()[..], [Packet::PingResp]));
}

#[test]
fn kick_drain_and_a_closed_feed_are_disconnect_reasons_in_v5_and_a_close_in_3_1_1() {
    let endings = || {
        [
            (
                Ending::Kicked(Kick {
                    code: ErrorCode::KickedOff,
                    reason: "k".into(),
                }),
                reason::SESSION_TAKEN_OVER,
            ),
            (Ending::Draining, reason::SERVER_SHUTTING_DOWN),
            (Ending::FeedClosed, reason::SERVER_UNAVAILABLE),
        ]
    };
    for (why, code) in endings() {
        let mut h = Harness::connected(Version::V5);
        h.call(false, |s, cx| s.on_ending(why, cx));
        match &h.written()[..] {
            [Packet::Disconnect(d)] => assert_eq!(d.reason, code),
            other => panic!("a DISCONNECT, not {other:?}"),
        }
    }
    assert_eq!(reason::SERVER_UNAVAILABLE, 0x88);
    for (why, _) in endings() {
        let mut h = Harness::connected(Version::V4);
        h.call(false, |s, cx| s.on_ending(why, cx));
        assert!(
            h.written().is_empty(),
            "3.1.1 has no DISCONNECT from the server"
        );
    }
}

#[test]
fn a_client_disconnect_is_clean_and_keepalive_silence_is_0x8d() {
    let mut h = Harness::connected(Version::V5);
    let d = Packet::Disconnect(Disconnect {
        reason: reason::SUCCESS,
        properties: Properties::default(),
    });
    assert!(matches!(
        h.call(false, |s, cx| s.on_frame(d, cx)),
        Step::Close
    ));
    assert!(h.session.clean, "no will after DISCONNECT 0x00");
    let mut h = Harness::connected(Version::V5);
    assert!(matches!(h.call(false, |s, cx| s.on_idle(cx)), Step::Close));
    match &h.written()[..] {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, reason::KEEP_ALIVE_TIMEOUT),
        other => panic!("a DISCONNECT, not {other:?}"),
    }
    assert!(!h.session.clean);
}

#[test]
fn a_long_broker_queue_is_written_in_bounded_steps_with_a_wake_up_between() {
    use super::super::broker::OverQuota;
    let mut h = Harness::connected(Version::V5);
    let sub = Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter {
            filter: "t/#".into(),
            options: SubOptions {
                qos: QoS::AtMostOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        }],
        properties: Properties::default(),
    });
    h.call(false, |s, cx| s.on_frame(sub, cx));
    assert!(matches!(&h.written()[..], [Packet::SubAck(_)]));
    let count = 100;
    for i in 0..count {
        let msg = AppMessage {
            topic: format!("t/{i}"),
            payload: Bytes::from(vec![b'x'; 500]),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
            expires_at_ms: None,
            owner: Some("bob".into()),
        };
        h.session
            .broker
            .publish_forwarded(None, msg, OverQuota::Unretain)
            .unwrap();
    }
    let notify = h
        .session
        .wake_source()
        .expect("the broker wakes the session");
    let mut got = 0;
    let mut steps = 0;
    loop {
        h.call(false, |s, cx| s.on_wake(cx));
        assert!(
            h.buf.len() < PUMP_FLUSH_AT + 600,
            "one step writes a bounded amount: {}",
            h.buf.len()
        );
        let n = h.written().len();
        got += n;
        steps += 1;
        if got == count {
            break;
        }
        assert!(n > 0 && steps < count, "every step makes progress");
        // The rest is announced again for after the flush.
        assert!(
            notify.notified().now_or_never().is_some(),
            "woken again for the rest"
        );
    }
    assert!(
        steps > 1,
        "{count} messages of 500 bytes take more than one step"
    );
}
