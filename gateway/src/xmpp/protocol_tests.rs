//! The XMPP state machine without a socket: client XML in (through the
//! real framer), steps and server XML out, tasks run against a real
//! embedded store — as the session driver does it.

use std::sync::Arc;

use base64::Engine;
use bytes::BytesMut;
use imgate_core::model::{Conversation, Message, MessagePayload, Platform};
use imgate_core::pipeline::{Principal, Protocol};
use imgate_core::{ErrorCode, ImError};
use tokio_util::codec::Decoder;

use super::outbox::XmppEncoder;
use super::protocol::Xmpp;
use super::reader::{XmppIn, XmppReader};
use super::XmppContext;
use crate::config::Config;
use crate::sessions::driver::{Cx, Ending, LoginStep, Protocol as _, Step};
use crate::sessions::{Kick, SessionCtx};

const SECRET: &str = "protocol-tests-secret";
const HEADER: &str = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
const WS_OPEN: &str =
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>";

struct Harness {
    proto: Xmpp,
    reader: XmppReader,
    buf: BytesMut,
    enc: XmppEncoder,
    ctx: SessionCtx,
    _shutdown: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn principal(user: &str, device: &str) -> Principal {
    Principal {
        user_id: user.into(),
        device_id: device.into(),
        platform: Platform::Unknown,
        protocol: Protocol::Xmpp,
        admin: false,
    }
}

impl Harness {
    async fn new(websocket: bool, starttls: bool, tune: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            xmpp_domain: "localhost".into(),
            ..Config::default()
        };
        tune(&mut config);
        let (ctx, shutdown) = crate::sessions::ctx::for_tests(config, SECRET).await;
        let xmpp = XmppContext::new(&ctx);
        Harness {
            proto: Xmpp::new(ctx.clone(), xmpp, websocket, starttls),
            reader: XmppReader::new(websocket, 1 << 16, 32, 16 << 10),
            buf: BytesMut::new(),
            enc: XmppEncoder,
            ctx,
            _shutdown: shutdown,
            _dir: dir,
        }
    }

    fn call<R>(
        &mut self,
        in_flight: bool,
        f: impl FnOnce(&mut Xmpp, &mut Cx<'_, XmppEncoder>) -> R,
    ) -> R {
        let mut cx = Cx::new(&mut self.buf, &mut self.enc, in_flight);
        f(&mut self.proto, &mut cx)
    }

    /// What the server wrote so far (drained).
    fn written(&mut self) -> String {
        let out = String::from_utf8(self.buf.to_vec()).expect("UTF-8");
        self.buf.clear();
        out
    }

    /// The client's XML as the framer yields it.
    fn frames(&mut self, xml: &str) -> Vec<XmppIn> {
        let mut bytes = BytesMut::from(xml);
        let mut out = Vec::new();
        while let Some(f) = self.reader.decode(&mut bytes).expect("well-formed") {
            out.push(f);
        }
        assert!(bytes.is_empty(), "whole items only");
        out
    }

    /// One login-phase element, as the driver feeds it (framer tuned after).
    fn login(&mut self, xml: &str) -> LoginStep {
        let mut frames = self.frames(xml);
        assert_eq!(frames.len(), 1, "{xml}");
        let frame = frames.remove(0);
        let step = self.call(false, |p, cx| p.on_login_frame(frame, cx));
        self.proto.tune_framer(&mut self.reader);
        step
    }

    /// One element of the logged-in session.
    fn stanza(&mut self, xml: &str, in_flight: bool) -> Step<Xmpp> {
        let mut frames = self.frames(xml);
        assert_eq!(frames.len(), 1, "{xml}");
        let frame = frames.remove(0);
        self.call(in_flight, |p, cx| p.on_frame(frame, cx))
    }

    /// Run a task the way the driver does and hand its outcome back.
    async fn run(&mut self, step: Step<Xmpp>) -> Step<Xmpp> {
        let Step::Task(task) = step else {
            panic!("expected a task");
        };
        let p = principal("alice", "phone");
        let out = Xmpp::run_task(task, &self.ctx, &p).await;
        self.call(false, |x, cx| x.on_task_done(out, cx))
    }

    fn plain_auth(user: &str, token: &str) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{token}"));
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{b64}</auth>")
    }

    /// SASL PLAIN with a real token, stream restart, bind: as alice/phone.
    async fn logged_in(tune: impl FnOnce(&mut Config)) -> Harness {
        let mut h = Harness::new(false, false, tune).await;
        assert!(matches!(h.login(HEADER), LoginStep::Next));
        let features = h.written();
        assert!(
            features.contains("<mechanism>PLAIN</mechanism>"),
            "{features}"
        );
        let token = h
            .ctx
            .tokens
            .issue("alice", "phone", 0, imgate_core::now_ms());
        let LoginStep::Check(creds) = h.login(&Harness::plain_auth("alice", &token)) else {
            panic!("PLAIN asks for a credential check");
        };
        assert_eq!(
            (creds.user.as_str(), creds.credential.as_str()),
            ("alice", token.as_str())
        );
        let checked = crate::sessions::login(
            &h.ctx,
            Protocol::Xmpp,
            &creds.user,
            &creds.credential,
            &creds.client_id,
        );
        let step = h.call(false, |p, cx| p.on_login(checked, cx));
        h.proto.tune_framer(&mut h.reader);
        assert!(matches!(step, LoginStep::Next));
        assert_eq!(
            h.written(),
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
        );
        // The stream restarts: a new header, the bound features.
        assert!(matches!(h.login(HEADER), LoginStep::Next));
        let features = h.written();
        assert!(
            features.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
            "{features}"
        );
        assert!(
            features.contains("<sm xmlns='urn:xmpp:sm:3'/>"),
            "{features}"
        );
        let bind = "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>other</resource></bind></iq>";
        let LoginStep::LoggedIn(p) = h.login(bind) else {
            panic!("binding ends the login");
        };
        assert_eq!(
            (p.user_id.as_str(), p.device_id.as_str()),
            ("alice", "phone")
        );
        assert!(
            !h.proto.may_deliver(),
            "nothing is delivered before the bind is answered"
        );
        let step = h.call(false, |x, cx| x.on_logged_in(true, cx));
        assert!(matches!(step, Step::Continue));
        let bound = h.written();
        assert!(
            bound.contains("id='b1'") && bound.contains("<jid>alice@localhost/phone</jid>"),
            "{bound}"
        );
        assert!(h.proto.may_deliver());
        h
    }

    async fn with_sm(tune: impl FnOnce(&mut Config)) -> Harness {
        let mut h = Harness::logged_in(tune).await;
        let step = h.stanza("<enable xmlns='urn:xmpp:sm:3' resume='true'/>", false);
        let step = h.run(step).await;
        assert!(matches!(step, Step::Continue));
        let enabled = h.written();
        assert!(
            enabled.starts_with("<enabled xmlns='urn:xmpp:sm:3'")
                && enabled.contains("resume='true'"),
            "{enabled}"
        );
        h
    }
}

fn message(id: u64) -> Arc<Message> {
    Arc::new(Message {
        message_id: id,
        sender: "bob".into(),
        conversation: Conversation::private("alice"),
        payload: MessagePayload::text("hi"),
        server_ts: imgate_core::now_ms(),
        client_msg_id: format!("b{id}"),
        to_users: vec![],
    })
}

#[tokio::test]
async fn login_negotiates_sasl_plain_then_binds_the_tokens_device() {
    Harness::logged_in(|_| {}).await;
}

#[tokio::test]
async fn a_bad_token_fails_and_three_failures_end_the_stream() {
    let mut h = Harness::new(false, false, |_| {}).await;
    h.login(HEADER);
    h.written();
    for attempt in 1..=3 {
        let LoginStep::Check(_) = h.login(&Harness::plain_auth("alice", "forged")) else {
            panic!("a check");
        };
        let refused = ImError::new(ErrorCode::AuthFailure, "bad token");
        let step = h.call(false, |p, cx| p.on_login(Err(refused), cx));
        let out = h.written();
        assert!(
            out.contains("<not-authorized/>") && out.contains("244 bad token"),
            "{out}"
        );
        if attempt < 3 {
            assert!(matches!(step, LoginStep::Next));
        } else {
            assert!(matches!(step, LoginStep::Refused));
            assert!(
                out.contains("<policy-violation") && out.ends_with("</stream:stream>"),
                "{out}"
            );
        }
    }
}

#[tokio::test]
async fn starttls_comes_first_when_offered_and_auth_before_it_is_refused() {
    let mut h = Harness::new(false, true, |_| {}).await;
    h.login(HEADER);
    let features = h.written();
    assert!(
        features
            .contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"),
        "{features}"
    );
    assert!(!features.contains("mechanism"), "{features}");
    let step = h.login("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert!(matches!(step, LoginStep::StartTls));
    assert_eq!(
        h.written(),
        "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    );
    // Over TLS the client opens a new stream: the SASL features.
    assert!(matches!(h.login(HEADER), LoginStep::Next));
    assert!(h.written().contains("<mechanism>PLAIN</mechanism>"));

    let mut h = Harness::new(false, true, |_| {}).await;
    h.login(HEADER);
    h.written();
    let step = h.login(&Harness::plain_auth("alice", "t"));
    assert!(matches!(step, LoginStep::Refused));
    let out = h.written();
    assert!(
        out.contains("<encryption-required/>") && out.contains("<policy-violation"),
        "{out}"
    );
}

#[tokio::test]
async fn anything_but_auth_before_authentication_is_a_stream_error() {
    let mut h = Harness::new(false, false, |_| {}).await;
    h.login(HEADER);
    h.written();
    let step = h.login("<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(matches!(step, LoginStep::Refused));
    let out = h.written();
    assert!(
        out.contains("<not-authorized") && out.ends_with("</stream:stream>"),
        "{out}"
    );
    // A header naming another server.
    let mut h = Harness::new(false, false, |_| {}).await;
    let step = h.login(&HEADER.replace("to='localhost'", "to='elsewhere.org'"));
    assert!(matches!(step, LoginStep::Refused));
    assert!(h.written().contains("<host-unknown"));
}

#[tokio::test]
async fn messages_are_pipelined_and_an_ack_request_waits_for_them() {
    let mut h = Harness::with_sm(|_| {}).await;
    let step = h.stanza(
        "<message to='bob@localhost' type='chat' id='m1'><body>one</body></message>",
        false,
    );
    let Step::Send(Ok(cmd), meta1) = step else {
        panic!("a plain message goes straight into the window");
    };
    assert_eq!(cmd.draft.conversation.target, "bob");
    assert_eq!(cmd.draft.client_msg_id, "m1");
    let Step::Send(Ok(_), meta2) = h.stanza(
        "<message to='bob@localhost' type='chat' id='m2'><body>two</body></message>",
        true,
    ) else {
        panic!("pipelined");
    };
    // The ack request must cover both: it waits, nothing is written.
    assert!(matches!(
        h.stanza("<r xmlns='urn:xmpp:sm:3'/>", true),
        Step::Wait
    ));
    assert_eq!(h.written(), "");
    let ack = imgate_core::pipeline::SendAck {
        message_id: 7,
        server_ts: 1,
        client_msg_id: "m1".into(),
        duplicate: false,
    };
    let done = Xmpp::sent(meta1, Ok(ack));
    h.call(true, |p, cx| p.on_send_done(done, cx));
    // The second one was refused: its error reply, in its place.
    let done = Xmpp::sent(meta2, Err(ImError::new(ErrorCode::SensitiveWord, "no")));
    h.call(false, |p, cx| p.on_send_done(done, cx));
    let out = h.written();
    assert!(
        out.contains("type='error'") && out.contains("id='m2'"),
        "{out}"
    );
    assert!(
        !out.contains("id='m1'"),
        "a stored message has no reply: {out}"
    );
    let step = h.call(false, |p, cx| p.on_sends_answered(cx));
    assert!(matches!(step, Step::Continue));
    assert_eq!(h.written(), "<a xmlns='urn:xmpp:sm:3' h='2'/>");
}

#[tokio::test]
async fn presence_and_iq_wait_for_the_window_then_run_as_tasks() {
    let mut h = Harness::logged_in(|_| {}).await;
    let ping = "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>";
    assert!(matches!(h.stanza(ping, true), Step::Wait));
    let step = h.call(false, |p, cx| p.on_sends_answered(cx));
    let step = h.run(step).await;
    assert!(matches!(step, Step::Continue));
    let out = h.written();
    assert!(
        out.contains("type='result'") && out.contains("id='p1'"),
        "{out}"
    );
    // A message naming an earlier one waits for those to be stored.
    let correction = "<message to='bob@localhost' id='m3'><body>fixed</body><replace xmlns='urn:xmpp:message-correct:0' id='m1'/></message>";
    assert!(matches!(h.stanza(correction, true), Step::Wait));
}

#[tokio::test]
async fn deliveries_ask_one_ack_per_row_and_stop_at_the_unacked_limit() {
    let mut h = Harness::with_sm(|c| c.xmpp_sm_max_unacked = 2).await;
    for id in [11, 12] {
        h.call(false, |p, cx| {
            p.on_delivery(message(id), cx);
            assert_eq!(cx.delivered_count(), 1);
        });
    }
    h.call(false, |p, cx| p.on_deliveries_written(cx));
    let out = h.written();
    assert_eq!(out.matches("<message").count(), 2, "{out}");
    assert!(out.contains("uid='11'") || out.contains("11"), "{out}");
    assert_eq!(
        out.matches("<r xmlns='urn:xmpp:sm:3'/>").count(),
        1,
        "{out}"
    );
    assert!(!h.proto.may_deliver(), "the SM window is full");
    assert!(h.proto.idle_limit() <= std::time::Duration::from_secs(30));
    // The client acks both: room again, and the acks go to the store.
    let step = h.stanza("<a xmlns='urn:xmpp:sm:3' h='2'/>", false);
    let Step::Push(acks) = step else {
        panic!("the store acks are a window entry");
    };
    let sent = acks.await;
    h.call(false, |p, cx| p.on_send_done(sent, cx));
    assert!(h.proto.may_deliver());
    assert_eq!(h.written(), "", "store acks are not counted or answered");
}

#[tokio::test]
async fn an_ack_for_more_than_was_sent_is_a_stream_error() {
    let mut h = Harness::with_sm(|_| {}).await;
    let step = h.stanza("<a xmlns='urn:xmpp:sm:3' h='5'/>", false);
    assert!(matches!(step, Step::Close));
    let out = h.written();
    assert!(
        out.contains("<undefined-condition") && out.ends_with("</stream:stream>"),
        "{out}"
    );
}

#[tokio::test]
async fn silence_gets_server_pings_then_a_connection_timeout() {
    let mut h = Harness::logged_in(|_| {}).await;
    for _ in 0..2 {
        assert!(matches!(
            h.call(false, |p, cx| p.on_idle(cx)),
            Step::Continue
        ));
        assert!(h.written().contains("<ping xmlns='urn:xmpp:ping'/>"));
    }
    // Whitespace is traffic: the count starts over.
    let frames = h.frames(" ");
    assert!(matches!(frames[..], [XmppIn::Keepalive]));
    for f in frames {
        h.call(false, |p, cx| p.on_frame(f, cx));
    }
    for _ in 0..2 {
        assert!(matches!(
            h.call(false, |p, cx| p.on_idle(cx)),
            Step::Continue
        ));
    }
    assert!(matches!(h.call(false, |p, cx| p.on_idle(cx)), Step::Close));
    let out = h.written();
    assert!(
        out.contains("<connection-timeout") && out.contains("249 no traffic"),
        "{out}"
    );
}

#[tokio::test]
async fn kicks_are_conflicts_and_a_client_close_waits_for_its_messages() {
    let mut h = Harness::logged_in(|_| {}).await;
    let kick = Kick {
        code: ErrorCode::KickedOff,
        reason: "logged in elsewhere".into(),
    };
    h.call(false, |p, cx| p.on_ending(Ending::Kicked(kick), cx));
    let out = h.written();
    assert!(
        out.contains("<conflict") && out.contains("logged in elsewhere"),
        "{out}"
    );

    let mut h = Harness::logged_in(|_| {}).await;
    let close = h.frames("</stream:stream>");
    let mut close = close.into_iter();
    let frame = close.next().expect("the close");
    assert!(matches!(
        h.call(true, |p, cx| p.on_frame(frame, cx)),
        Step::Wait
    ));
    assert_eq!(h.written(), "");
    assert!(matches!(
        h.call(false, |p, cx| p.on_sends_answered(cx)),
        Step::Close
    ));
    assert_eq!(h.written(), "</stream:stream>");
}

#[tokio::test]
async fn on_a_websocket_every_element_is_its_own_marked_unit() {
    let mut h = Harness::new(true, false, |_| {}).await;
    assert!(matches!(h.login(WS_OPEN), LoginStep::Next));
    let out = h.written();
    let units: Vec<&str> = out.split('\0').filter(|u| !u.is_empty()).collect();
    assert_eq!(units.len(), 2, "{out}");
    assert!(
        units[0].starts_with("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'"),
        "{out}"
    );
    assert!(
        units[1].starts_with("<stream:features xmlns:stream="),
        "{out}"
    );
    h.call(false, |p, cx| p.on_ending(Ending::Draining, cx));
    let out = h.written();
    let units: Vec<&str> = out.split('\0').filter(|u| !u.is_empty()).collect();
    assert_eq!(units.len(), 2, "{out}");
    assert!(units[0].contains("<system-shutdown"), "{out}");
    assert_eq!(
        units[1],
        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
    );
}

/// What an idle connection costs is mostly its task: the driver's future
/// is allocated at its largest. It must not carry a `Step` (as large as a
/// send) across an await (`driver::Live::react`); this keeps it so.
#[tokio::test]
async fn a_session_task_stays_small() {
    let h = Harness::new(false, false, |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _clients = (
        tokio::net::TcpStream::connect(addr).await.expect("connect"),
        tokio::net::TcpStream::connect(addr).await.expect("connect"),
    );
    let (xmpp_stream, peer) = listener.accept().await.expect("accept");
    let proto = Xmpp::new(h.ctx.clone(), XmppContext::new(&h.ctx), false, false);
    let xmpp = crate::sessions::driver::run(
        crate::transport::ClientStream::Plain(xmpp_stream),
        peer,
        h.ctx.clone(),
        proto,
        XmppReader::new(false, 1 << 16, 32, 1 << 14),
        XmppEncoder,
    );
    let (pb_stream, peer) = listener.accept().await.expect("accept");
    let pb = crate::pb::handle_connection(
        crate::transport::ClientStream::Plain(pb_stream),
        peer,
        h.ctx.clone(),
    );
    let (xmpp_size, pb_size) = (std::mem::size_of_val(&xmpp), std::mem::size_of_val(&pb));
    // 3,024 and 1,824 bytes while steps were kept across the flush and
    // the arguments of `run` stayed in the task; about 1,100 since.
    assert!(
        xmpp_size <= 1536,
        "the XMPP session task is {xmpp_size} bytes"
    );
    assert!(pb_size <= 1536, "the PB session task is {pb_size} bytes");
}
