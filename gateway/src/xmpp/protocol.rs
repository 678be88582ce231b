//! [`Xmpp`]: the XMPP state machine the session driver runs (DESIGN §5.4),
//! sans I/O — frames in ([`XmppIn`]), steps and rendered XML out.
//!
//! - Login ([`super::login`]): headers, STARTTLS, SASL, bind or resume.
//! - Messages go into the driver's send window: a plain one straight
//!   through the pipeline ([`Step::Send`]); one that needs the store
//!   first (a receipt, a correction, a reaction, a marker, ...) runs as a
//!   task that leaves its window entry ([`Step::Push`]). A message naming
//!   an earlier one waits until those are stored.
//! - Every other stanza (presence, iq) and the SM `<enable/>` and `<r/>`
//!   wait until the window is empty ([`Step::Wait`]; reading stops
//!   meanwhile): a stanza is counted after the messages before it, an iq
//!   (MAM query) sees them stored, and the `<a h>` answering an `<r/>`
//!   covers every message sent before it (clients rely on that to know
//!   their messages are durable). Presence and iq run as tasks (they read
//!   and write the store). The client's `<a/>` (delivery acks) needs no
//!   order: its store acks are a window entry that is not counted.
//! - A task owns the [`Session`] while it runs; window entries that finish
//!   meanwhile are kept and applied when it comes back.
//! - Deliveries are rendered in rows with one SM `<r/>` per row; routed
//!   stanzas (presence, receipts, IQs of other sessions) wake the session
//!   through the router's [`Notify`] and are written in batches.
//! - Heartbeat: after `heartbeat_secs` of silence the server pings; after
//!   [`MAX_SILENT_INTERVALS`] silent intervals the stream ends with
//!   `connection-timeout`. Whitespace keepalives count as traffic.
//! - XEP-0198 bound: with `xmpp_sm_max_unacked` deliveries unacked no
//!   more are delivered; a client that does not ack within the write
//!   timeout is closed with `policy-violation`.
//! - Kick (`conflict`), drain (`system-shutdown`) and a closed device feed
//!   (`undefined-condition`) are stream errors; the SM state stays
//!   resumable. The client's `</stream:stream>` is answered after the
//!   messages in flight, and its SM state is let go.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgate_codecs::xmpp::extensions::{classify, Classified};
use imgate_codecs::xmpp::{ns, Element, XmppCodecError, XmppEvent};
use imgate_core::pipeline::{Principal, Protocol, SendAck};
use imgate_core::{ImError, Message};
use tokio::sync::Notify;

use super::login::{unbound_element, BindRequest, Features, Login, Unbound};
use super::outbox::{Outbox, XmppEncoder};
use super::reader::{XmppIn, XmppReader};
use super::router::Routed;
use super::session::{ContentMeta, Entry, Sent, Session};
use super::XmppContext;
use crate::sessions::driver::{self, Cx, Ending, LoginStep, Step, TaskFuture};
use crate::sessions::SessionCtx;

/// Silent heartbeat intervals (each answered by a server ping) before the
/// connection is considered dead.
pub const MAX_SILENT_INTERVALS: u32 = 3;
/// Most routed stanzas written in one batch.
const ROUTED_BATCH: usize = 64;

type XmppCx<'a> = Cx<'a, XmppEncoder>;
type Flow = Step<Xmpp>;

/// One XMPP connection's state machine.
pub struct Xmpp {
    pub(super) state: SessionCtx,
    pub(super) ctx: Arc<XmppContext>,
    websocket: bool,
    /// Login-phase writes (and what is written while no session exists).
    pub(super) out: Outbox,
    pub(super) login: Login,
    /// Authenticated, until the login ends.
    pub(super) principal: Option<Principal>,
    /// The request that ended the login.
    pub(super) request: Option<BindRequest>,
    /// The framer must expect a new stream header.
    restart_framer: bool,
    /// The framer's full stanza limit applies (SASL succeeded).
    pub(super) authenticated: bool,
    /// The bound session; `None` while a task owns it.
    session: Option<Box<Session>>,
    routed: Option<Routed>,
    /// What waits for the window to empty.
    held: Option<Held>,
    /// Window entries done while a task owned the session.
    deferred: VecDeque<Sent>,
    /// Heartbeat intervals without traffic.
    silent: u32,
    heartbeat: Duration,
    /// How long a client may leave the SM window full.
    ack_wait: Duration,
    /// Since when the SM window is full (no deliveries meanwhile).
    stalled_since: Option<Instant>,
}

/// What waits until the window is empty.
enum Held {
    Stanza(Element),
    /// The client's `</stream:stream>`.
    Close,
}

/// A handler that needs the store, run by the driver with the session.
pub struct XmppTask {
    session: Box<Session>,
    job: Job,
}

enum Job {
    /// Presence, iq, SM `<enable/>`.
    Stanza(Element),
    /// A message whose window entry needs a lookup first.
    Message(Element),
    Resume {
        previd: String,
        h: u32,
    },
}

impl Xmpp {
    /// `starttls`: the connection is plain TCP and a certificate is
    /// configured (TLS is offered first and required).
    pub fn new(state: SessionCtx, ctx: Arc<XmppContext>, websocket: bool, starttls: bool) -> Xmpp {
        let heartbeat = Duration::from_secs(state.config.heartbeat_secs.max(1));
        let ack_wait = Duration::from_secs(state.config.write_timeout_secs.max(1));
        let first = if starttls {
            Features::StartTls
        } else {
            Features::Sasl
        };
        Xmpp {
            state,
            ctx,
            websocket,
            out: Outbox::new(websocket),
            login: Login::Header(first),
            principal: None,
            request: None,
            restart_framer: false,
            authenticated: false,
            session: None,
            routed: None,
            held: None,
            deferred: VecDeque::new(),
            silent: 0,
            heartbeat,
            ack_wait,
            stalled_since: None,
        }
    }

    pub(super) fn domain(&self) -> String {
        self.ctx.normalizer.domain().to_string()
    }

    /// A new stream follows: a header from the client, ours again.
    pub(super) fn restart(&mut self) {
        self.restart_framer = true;
        self.out.restart();
    }

    /// Where writes go now: the session's outbox, or the connection's.
    fn out(&mut self) -> &mut Outbox {
        match self.session.as_mut() {
            Some(s) => &mut s.out,
            None => &mut self.out,
        }
    }

    fn closed(&self) -> bool {
        self.out.is_closed() || self.session.as_ref().is_some_and(|s| s.out.is_closed())
    }

    /// Hand what was rendered to the driver; the step, or `Close` once
    /// the stream was ended.
    fn settle(&mut self, step: Flow, cx: &mut XmppCx<'_>) -> Flow {
        self.out.drain_into(|r| cx.write(r));
        if let Some(s) = self.session.as_mut() {
            s.out.drain_into(|r| cx.write(r));
            self.stalled_since = s.stalled_since();
        }
        if self.closed() {
            return Step::Close;
        }
        step
    }

    fn settle_login(&mut self, step: LoginStep, cx: &mut XmppCx<'_>) -> LoginStep {
        self.out.drain_into(|r| cx.write(r));
        step
    }

    fn task(&mut self, job: Job) -> Flow {
        match self.session.take() {
            Some(session) => Step::Task(XmppTask { session, job }),
            None => Step::Close,
        }
    }

    fn entry_step(entry: Entry) -> Flow {
        match entry {
            Entry::Send(cmd, meta) => Step::Send(Ok(cmd), meta),
            Entry::Push(f) => Step::Push(f),
        }
    }

    /// A client element of the bound session.
    fn stanza(&mut self, el: Element, in_flight: bool) -> Flow {
        let Some(session) = self.session.as_mut() else {
            return Step::Close;
        };
        if !session.bound {
            return self.unbound(el);
        }
        if el.is("a", ns::SM) {
            return match session.client_ack(&el) {
                Some(ids) if !ids.is_empty() => Step::Push(session.ack_entry(ids)),
                _ => Step::Continue,
            };
        }
        if el.is("message", ns::CLIENT) {
            if in_flight && super::references::refers_to_earlier(&el) {
                self.held = Some(Held::Stanza(el));
                return Step::Wait;
            }
            let plain = el.get_child("received", ns::RECEIPTS).is_none()
                && matches!(classify(&el), Classified::Content { replaces: None });
            if !plain {
                return self.task(Job::Message(el));
            }
            return Self::entry_step(session.plain_content_entry(el));
        }
        if in_flight {
            self.held = Some(Held::Stanza(el));
            return Step::Wait;
        }
        if el.ns == ns::SM {
            return match el.name.as_str() {
                "r" => {
                    session.answer_ack_request();
                    Step::Continue
                }
                "enable" => self.task(Job::Stanza(el)),
                _ => Step::Continue,
            };
        }
        match (el.ns.as_str(), el.name.as_str()) {
            (ns::CLIENT, "presence" | "iq") => self.task(Job::Stanza(el)),
            _ => {
                let text = format!("2 unexpected <{}>", el.name);
                session.stream_error("unsupported-stanza-type", &text);
                Step::Close
            }
        }
    }

    /// An element before the resource is bound (after a failed resume).
    fn unbound(&mut self, el: Element) -> Flow {
        let Some(session) = self.session.as_mut() else {
            return Step::Close;
        };
        match unbound_element(&el) {
            Unbound::Request(BindRequest::Bind(id)) => {
                session.bind(id.as_deref());
                self.wake_routed();
                Step::Continue
            }
            Unbound::Request(BindRequest::Resume { previd, h }) => {
                self.task(Job::Resume { previd, h })
            }
            Unbound::Answered(answer) => {
                session.out.push(&answer);
                Step::Continue
            }
            Unbound::Refused => {
                session.stream_error("not-authorized", "244 bind a resource first");
                Step::Close
            }
        }
    }

    /// The client's `</stream:stream>` (the window is empty).
    fn closed_by_client(&mut self) -> Flow {
        if let Some(s) = self.session.as_mut() {
            s.closed_by_client = true;
        }
        self.out().close();
        Step::Close
    }

    fn wake_routed(&self) {
        if let Some(r) = self.routed.as_ref() {
            r.wake.notify_one();
        }
    }

    fn apply_deferred(&mut self) {
        if let Some(session) = self.session.as_mut() {
            while let Some(sent) = self.deferred.pop_front() {
                session.entry_done(sent);
            }
        }
    }
}

impl driver::Protocol for Xmpp {
    const PROTOCOL: Protocol = Protocol::Xmpp;
    type Framer = XmppReader;
    type Frame = XmppIn;
    type FrameError = XmppCodecError;
    type Encoder = XmppEncoder;
    type SendMeta = ContentMeta;
    type Sent = Sent;
    type Task = XmppTask;
    type TaskOut = (Box<Session>, bool);

    fn idle_limit(&self) -> Duration {
        match self.stalled_since {
            Some(t) => self
                .heartbeat
                .min((t + self.ack_wait).saturating_duration_since(Instant::now())),
            None => self.heartbeat,
        }
    }

    fn may_deliver(&self) -> bool {
        self.stalled_since.is_none() && self.session.as_ref().is_some_and(|s| s.bound)
    }

    fn sent(meta: ContentMeta, result: Result<SendAck, ImError>) -> Sent {
        meta.sent(result)
    }

    fn on_login_frame(&mut self, frame: XmppIn, cx: &mut XmppCx<'_>) -> LoginStep {
        let step = self.login_frame(frame);
        self.settle_login(step, cx)
    }

    fn on_login(&mut self, checked: Result<Principal, ImError>, cx: &mut XmppCx<'_>) -> LoginStep {
        let step = self.plain_checked(checked);
        self.settle_login(step, cx)
    }

    fn on_login_timeout(&mut self, cx: &mut XmppCx<'_>) {
        let domain = self.domain();
        self.out
            .stream_error(&domain, "connection-timeout", "249 log in faster");
        self.out.drain_into(|r| cx.write(r));
    }

    fn tune_framer(&mut self, framer: &mut XmppReader) {
        if std::mem::take(&mut self.restart_framer) {
            framer.restart();
        }
        if self.authenticated {
            framer.authenticated();
        }
    }

    fn on_logged_in(&mut self, attached: bool, cx: &mut XmppCx<'_>) -> Flow {
        if !attached {
            let domain = self.domain();
            self.out
                .stream_error(&domain, "internal-server-error", "4 store unavailable");
            return self.settle(Step::Close, cx);
        }
        let (Some(request), Some(principal)) = (self.request.take(), self.principal.take()) else {
            return Step::Close;
        };
        let (session, routed) = Session::new(
            self.state.clone(),
            self.ctx.clone(),
            principal,
            self.websocket,
        );
        self.session = Some(Box::new(session));
        self.routed = Some(routed);
        let step = match request {
            BindRequest::Bind(id) => {
                if let Some(s) = self.session.as_mut() {
                    s.bind(id.as_deref());
                }
                Step::Continue
            }
            BindRequest::Resume { previd, h } => self.task(Job::Resume { previd, h }),
        };
        self.settle(step, cx)
    }

    fn on_frame(&mut self, frame: XmppIn, cx: &mut XmppCx<'_>) -> Flow {
        self.silent = 0;
        let step = match frame {
            XmppIn::Keepalive => Step::Continue,
            XmppIn::Event(XmppEvent::Stanza(el)) => self.stanza(el, cx.sends_in_flight()),
            XmppIn::Event(XmppEvent::StreamClose) if cx.sends_in_flight() => {
                self.held = Some(Held::Close);
                Step::Wait
            }
            XmppIn::Event(XmppEvent::StreamClose) => self.closed_by_client(),
            XmppIn::Event(XmppEvent::StreamOpen(_)) => {
                let domain = self.domain();
                self.out()
                    .stream_error(&domain, "bad-format", "2 stream already open");
                Step::Close
            }
        };
        self.settle(step, cx)
    }

    fn on_bad_frame(&mut self, error: XmppCodecError, cx: &mut XmppCx<'_>) {
        if !matches!(error, XmppCodecError::Io(_)) {
            let domain = self.domain();
            let text = format!("2 {error}");
            self.out()
                .stream_error(&domain, error.stream_condition(), &text);
        }
        self.settle(Step::Close, cx);
    }

    fn on_sends_answered(&mut self, cx: &mut XmppCx<'_>) -> Flow {
        let step = match self.held.take() {
            Some(Held::Stanza(el)) => self.stanza(el, false),
            Some(Held::Close) => self.closed_by_client(),
            None => Step::Continue,
        };
        self.settle(step, cx)
    }

    fn on_send_done(&mut self, sent: Sent, cx: &mut XmppCx<'_>) -> Flow {
        match self.session.as_mut() {
            Some(session) => session.entry_done(sent),
            None => self.deferred.push_back(sent),
        }
        self.settle(Step::Continue, cx)
    }

    fn on_ack_refused(&mut self, _tag: u32, _message_id: u64, _cx: &mut XmppCx<'_>) -> Flow {
        // Receipts are checked by their handler (a stanza error), not
        // through `Step::Ack`.
        Step::Continue
    }

    fn on_delivery(&mut self, msg: Arc<Message>, cx: &mut XmppCx<'_>) -> Flow {
        if let Some(session) = self.session.as_mut() {
            session.deliver(&msg);
            cx.delivered();
        }
        self.settle(Step::Continue, cx)
    }

    fn on_deliveries_written(&mut self, cx: &mut XmppCx<'_>) {
        if let Some(session) = self.session.as_mut() {
            session.request_ack();
        }
        self.settle(Step::Continue, cx);
    }

    fn run_task(
        task: XmppTask,
        _ctx: &SessionCtx,
        _principal: &Principal,
    ) -> TaskFuture<(Box<Session>, bool)> {
        Box::pin(async move {
            let XmppTask { mut session, job } = task;
            let ok = match job {
                Job::Stanza(el) => session.handle_stanza(el).await,
                Job::Message(el) => {
                    session.handle_message(el).await;
                    true
                }
                Job::Resume { previd, h } => session.resume(&previd, h).await,
            };
            (session, ok)
        })
    }

    fn on_task_done(&mut self, (session, ok): (Box<Session>, bool), cx: &mut XmppCx<'_>) -> Flow {
        let resumed = session.bound;
        self.session = Some(session);
        if resumed {
            // Routed stanzas that came while it ran (or before binding).
            self.wake_routed();
        }
        self.apply_deferred();
        let entry = self.session.as_mut().and_then(|s| s.take_entry());
        let step = match entry {
            _ if !ok => Step::Close,
            Some(entry) => Self::entry_step(entry),
            None => Step::Continue,
        };
        self.settle(step, cx)
    }

    fn on_idle(&mut self, cx: &mut XmppCx<'_>) -> Flow {
        let Some(session) = self.session.as_mut() else {
            return Step::Close;
        };
        if let Some(t) = self.stalled_since {
            if t.elapsed() >= self.ack_wait {
                let max = session.max_unacked();
                tracing::debug!(max, "xmpp: too many unacked deliveries; stream closed");
                let text = format!("2 more than {max} stanzas unacked");
                session.stream_error("policy-violation", &text);
                return self.settle(Step::Close, cx);
            }
        }
        self.silent += 1;
        if self.silent >= MAX_SILENT_INTERVALS {
            session.stream_error("connection-timeout", "249 no traffic");
            return self.settle(Step::Close, cx);
        }
        session.send_server_ping();
        self.settle(Step::Continue, cx)
    }

    fn on_ending(&mut self, why: Ending, cx: &mut XmppCx<'_>) {
        let (condition, text) = match why {
            Ending::Kicked(kick) => (
                "conflict",
                format!("{} {}", kick.code.as_i32(), kick.reason),
            ),
            Ending::Draining => (
                "system-shutdown",
                "4 server shutting down; reconnect".to_string(),
            ),
            // Replaced by a newer session of this device, or too slow:
            // the client reconnects (or resumes) and gets what is
            // pending, told so as PB and MQTT clients are.
            Ending::FeedClosed => (
                "undefined-condition",
                "4 deliveries stopped; reconnect".to_string(),
            ),
        };
        let domain = self.domain();
        self.out().stream_error(&domain, condition, &text);
        self.settle(Step::Close, cx);
    }

    fn wake_source(&self) -> Option<Arc<Notify>> {
        self.routed.as_ref().map(|r| r.wake.clone())
    }

    fn on_wake(&mut self, cx: &mut XmppCx<'_>) -> Flow {
        let (Some(session), Some(routed)) = (self.session.as_mut(), self.routed.as_mut()) else {
            return Step::Continue;
        };
        if !session.bound {
            // Kept until the resource is bound (`wake_routed`).
            return Step::Continue;
        }
        let mut count = 0;
        while count < ROUTED_BATCH {
            let Ok(el) = routed.rx.try_recv() else { break };
            session.send_stanza(&el, None);
            count += 1;
        }
        if count == ROUTED_BATCH {
            // More may be queued: come back for them.
            routed.wake.notify_one();
        }
        self.settle(Step::Continue, cx)
    }

    fn finish(&mut self) {
        // Dropping the session lets its presence and SM state go.
        self.session = None;
        self.routed = None;
    }
}
