//! The PB state machine without a socket: frames in, steps and frames out.

use super::*;
use bytes::BytesMut;
use imgate_core::model::{Conversation, MessagePayload};
use imgate_core::pipeline::Principal;
use tokio_util::codec::Decoder;

use crate::sessions::driver::Protocol as _;
use crate::sessions::Kick;

const MAX: usize = 1 << 20;

/// Drives a [`PbSession`] with a write buffer, as the driver does.
struct Harness {
    session: PbSession,
    buf: BytesMut,
    enc: PbFramer,
}

impl Harness {
    fn new() -> Self {
        Harness {
            session: PbSession::new(Duration::from_secs(90)),
            buf: BytesMut::new(),
            enc: PbFramer::new(MAX),
        }
    }

    fn call<R>(
        &mut self,
        in_flight: bool,
        f: impl FnOnce(&mut PbSession, &mut PbCx<'_>) -> R,
    ) -> R {
        let mut cx = Cx::new(&mut self.buf, &mut self.enc, in_flight);
        f(&mut self.session, &mut cx)
    }

    /// The frames written so far (drained).
    fn written(&mut self) -> Vec<PbFrame> {
        let mut dec = PbFramer::new(MAX);
        let mut out = Vec::new();
        while let Some(frame) = dec.decode(&mut self.buf).unwrap() {
            out.push(frame);
        }
        assert!(self.buf.is_empty(), "only whole frames are written");
        out
    }

    /// Logged in as alice/phone.
    fn logged_in() -> Self {
        let mut h = Harness::new();
        let login = login_frame(1);
        let step = h.call(false, |s, cx| s.on_login_frame(login, cx));
        assert!(matches!(step, LoginStep::Check(_)));
        let p = h.call(false, |s, cx| s.on_login(Ok(principal()), cx));
        assert!(matches!(p, LoginStep::LoggedIn(_)));
        let step = h.call(false, |s, cx| s.on_logged_in(true, cx));
        assert!(matches!(step, Step::Task(PbTask::LoginOk { seq: 1 })));
        assert!(h.written().is_empty(), "the login is answered by its task");
        h
    }
}

fn principal() -> Principal {
    Principal {
        user_id: "alice".into(),
        device_id: "phone".into(),
        platform: Platform::Unknown,
        protocol: Protocol::Pb,
        admin: false,
    }
}

fn login_frame(seq: u16) -> PbFrame {
    let req = proto::LoginRequest {
        user_id: "alice".into(),
        token: "tok".into(),
        client_id: "phone".into(),
        platform: 2,
    };
    PbFrame::response(commands::LOGIN_REQUEST, seq, &req)
}

fn send_frame(seq: u16, client_msg_id: &str) -> PbFrame {
    let req = proto::SendRequest {
        client_msg_id: client_msg_id.into(),
        conversation: Some(proto::Conversation {
            r#type: 0,
            target: "bob".into(),
            line: 0,
        }),
        payload: Some(proto::MessagePayload {
            r#type: 1,
            searchable_content: "hi".into(),
            ..Default::default()
        }),
        to_users: vec![],
    };
    PbFrame::response(commands::SEND_REQUEST, seq, &req)
}

fn decode<M: prost::Message + Default>(frame: &PbFrame) -> M {
    M::decode(frame.body.clone()).unwrap()
}

#[test]
fn login_is_checked_with_the_frames_credentials_and_a_refusal_is_rendered() {
    let mut h = Harness::new();
    let login = login_frame(7);
    let LoginStep::Check(creds) = h.call(false, |s, cx| s.on_login_frame(login, cx)) else {
        panic!("a login frame asks for a check");
    };
    assert_eq!(
        (
            creds.user.as_str(),
            creds.credential.as_str(),
            creds.client_id.as_str()
        ),
        ("alice", "tok", "phone")
    );
    let refused = ImError::new(ErrorCode::AuthFailure, "bad token");
    assert!(matches!(
        h.call(false, |s, cx| s.on_login(Err(refused), cx)),
        LoginStep::Refused
    ));
    let out = h.written();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].command, out[0].seq), (commands::LOGIN_RESPONSE, 7));
    let resp: proto::LoginResponse = decode(&out[0]);
    assert_eq!(resp.code, ErrorCode::AuthFailure.as_i32());
}

#[test]
fn login_takes_the_frames_platform_when_the_token_has_none() {
    let mut h = Harness::new();
    let login = login_frame(1);
    h.call(false, |s, cx| s.on_login_frame(login, cx));
    let LoginStep::LoggedIn(p) = h.call(false, |s, cx| s.on_login(Ok(principal()), cx)) else {
        panic!("logged in");
    };
    assert_eq!(p.platform, Platform::from_i32(2));
}

#[test]
fn anything_before_login_is_refused_with_244() {
    let mut h = Harness::new();
    let step = h.call(false, |s, cx| s.on_login_frame(PbFrame::heartbeat(3), cx));
    assert!(matches!(step, LoginStep::Refused));
    let out = h.written();
    assert_eq!((out[0].command, out[0].seq), (commands::ERROR, 3));
    let err: proto::Error = decode(&out[0]);
    assert_eq!(err.code, ErrorCode::AuthFailure.as_i32());
}

#[test]
fn a_store_that_cannot_attach_the_device_ends_the_login() {
    let mut h = Harness::new();
    let login = login_frame(1);
    h.call(false, |s, cx| s.on_login_frame(login, cx));
    h.call(false, |s, cx| s.on_login(Ok(principal()), cx));
    assert!(matches!(
        h.call(false, |s, cx| s.on_logged_in(false, cx)),
        Step::Close
    ));
    let err: proto::Error = decode(&h.written()[0]);
    assert_eq!(err.code, ErrorCode::ServerError.as_i32());
}

#[test]
fn sends_go_to_the_window_and_are_answered_in_their_order() {
    let mut h = Harness::logged_in();
    let mut metas = Vec::new();
    for (seq, id) in [(5u16, "c5"), (6, "c6")] {
        let frame = send_frame(seq, id);
        match h.call(seq == 6, |s, cx| s.on_frame(frame, cx)) {
            Step::Send(Ok(cmd), meta) => {
                assert_eq!(cmd.principal.user_id, "alice");
                assert_eq!(cmd.draft.client_msg_id, id);
                assert_eq!(cmd.draft.conversation, Conversation::private("bob"));
                metas.push(meta);
            }
            _ => panic!("a send goes to the window"),
        }
    }
    assert!(
        h.written().is_empty(),
        "nothing is answered before the store"
    );
    let mut ids = 100u64..;
    for meta in metas {
        let ack = SendAck {
            message_id: ids.next().unwrap(),
            server_ts: 1,
            client_msg_id: meta.client_msg_id.clone(),
            duplicate: false,
        };
        h.call(false, |s, cx| s.on_send_done((meta, Ok(ack)), cx));
    }
    let refused = SendMeta {
        seq: 9,
        client_msg_id: "c9".into(),
    };
    h.call(false, |s, cx| {
        s.on_send_done(
            (refused, Err(ImError::new(ErrorCode::SensitiveWord, "no"))),
            cx,
        )
    });
    let out = h.written();
    let got: Vec<(u16, u64, i32, String)> = out
        .iter()
        .map(|f| {
            assert_eq!(f.command, commands::SEND_RESPONSE);
            let r: proto::SendResponse = decode(f);
            (f.seq, r.message_id, r.code, r.client_msg_id)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (5, 100, 0, "c5".into()),
            (6, 101, 0, "c6".into()),
            (9, 0, ErrorCode::SensitiveWord.as_i32(), "c9".into())
        ]
    );
}

#[test]
fn a_sync_behind_sends_waits_for_them_and_heartbeats_do_not() {
    let mut h = Harness::logged_in();
    let sync = PbFrame::response(
        commands::SYNC_REQUEST,
        11,
        &proto::SyncRequest {
            since: 0,
            limit: 10,
        },
    );
    assert!(matches!(
        h.call(true, |s, cx| s.on_frame(sync, cx)),
        Step::Wait
    ));
    assert!(h.written().is_empty());
    // A heartbeat is answered at once, sends in flight or not.
    assert!(matches!(
        h.call(true, |s, cx| s.on_frame(PbFrame::heartbeat(12), cx)),
        Step::Continue
    ));
    let out = h.written();
    assert_eq!((out[0].command, out[0].seq), (commands::HEARTBEAT, 12));
    // Once the window is empty the sync runs.
    match h.call(false, |s, cx| s.on_sends_answered(cx)) {
        Step::Task(PbTask::Sync { seq: 11, req }) => assert_eq!(req.limit, 10),
        _ => panic!("the held sync runs once the sends are answered"),
    }
    assert!(matches!(
        h.call(false, |s, cx| s.on_sends_answered(cx)),
        Step::Continue
    ));
}

#[test]
fn a_sync_with_nothing_in_flight_runs_at_once() {
    let mut h = Harness::logged_in();
    let recall = PbFrame::response(
        commands::RECALL_REQUEST,
        4,
        &proto::RecallRequest { message_id: 77 },
    );
    assert!(matches!(
        h.call(false, |s, cx| s.on_frame(recall, cx)),
        Step::Task(PbTask::Recall { seq: 4, .. })
    ));
}

#[test]
fn a_deliver_ack_is_plain_for_what_was_delivered_and_a_claim_otherwise() {
    let mut h = Harness::logged_in();
    let msg = Arc::new(Message {
        message_id: 42,
        sender: "bob".into(),
        conversation: Conversation::private("alice"),
        payload: MessagePayload::text("hi"),
        server_ts: 1,
        client_msg_id: "b1".into(),
        to_users: vec![],
    });
    h.call(false, |s, cx| {
        s.on_delivery(msg, cx);
        assert_eq!(cx.delivered_count(), 1);
    });
    let out = h.written();
    assert_eq!(out[0].command, commands::DELIVER);
    let ack = |id| {
        PbFrame::response(
            commands::DELIVER_ACK,
            8,
            &proto::DeliverAck { message_id: id },
        )
    };
    let a = ack(42);
    assert!(matches!(
        h.call(false, |s, cx| s.on_frame(a, cx)),
        Step::Ack {
            message_id: 42,
            claimed: false,
            ..
        }
    ));
    let b = ack(43);
    assert!(matches!(
        h.call(true, |s, cx| s.on_frame(b, cx)),
        Step::Ack {
            message_id: 43,
            claimed: true,
            tag: 8
        }
    ));
    h.call(false, |s, cx| s.on_ack_refused(8, 43, cx));
    let out = h.written();
    assert_eq!((out[0].command, out[0].seq), (commands::ERROR, 8));
    let err: proto::Error = decode(&out[0]);
    assert_eq!(err.code, ErrorCode::NotExist.as_i32());
}

#[test]
fn kick_drain_and_a_closed_feed_are_kick_frames() {
    let cases = [
        (
            Ending::Kicked(Kick {
                code: ErrorCode::KickedOff,
                reason: "other device".into(),
            }),
            ErrorCode::KickedOff,
        ),
        (Ending::Draining, ErrorCode::ServerError),
        (Ending::FeedClosed, ErrorCode::ServerError),
    ];
    for (why, code) in cases {
        let mut h = Harness::logged_in();
        h.call(false, |s, cx| s.on_ending(why, cx));
        let out = h.written();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].command, commands::KICK);
        let kick: proto::Kick = decode(&out[0]);
        assert_eq!(kick.code, code.as_i32());
    }
}

#[test]
fn a_second_login_is_refused_and_an_idle_peer_is_closed() {
    let mut h = Harness::logged_in();
    let again = login_frame(2);
    assert!(matches!(
        h.call(false, |s, cx| s.on_frame(again, cx)),
        Step::Continue
    ));
    let err: proto::Error = decode(&h.written()[0]);
    assert_eq!(err.code, ErrorCode::InvalidData.as_i32());
    assert!(matches!(h.call(false, |s, cx| s.on_idle(cx)), Step::Close));
}
