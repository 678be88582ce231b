//! The contract between the session driver and a protocol: a protocol is
//! a state machine ([`Protocol`]) that turns decoded frames into
//! [`Step`]s (commands for the driver: send, ack, wait for the sends in
//! flight, run a query, close) and renders outcomes, deliveries, kicks and
//! drain notices into frames written to a [`Cx`] (an output buffer, never
//! the socket). The driver owns the socket, the timers, the device feed,
//! the window of sends in flight and the registry handle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use imgate_core::pipeline::{Principal, SendAck, SendCommand};
use imgate_core::{ImError, Message};
use tokio::sync::Notify;
use tokio_util::codec::{Decoder, Encoder};

use crate::sessions::{Kick, SessionCtx};

/// A protocol-specific query the driver runs off the hot path (sync,
/// history, roster, ...): its outcome comes back through
/// [`Protocol::on_task_done`].
pub type TaskFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a protocol asks the driver to do next. Returned by value and
/// consumed at once; `Send` is large, and boxing it would cost an
/// allocation per message.
#[allow(clippy::large_enum_variant)]
pub enum Step<P: Protocol> {
    /// Nothing: keep going.
    Continue,
    /// Put a send into the window (an `Err` is answered in its turn, as a
    /// failed send); its outcome ([`Protocol::sent`]) comes back in
    /// [`Protocol::on_send_done`], in the order the sends were made.
    Send(Result<SendCommand, ImError>, P::SendMeta),
    /// Put an entry the protocol built into the window (a send with its
    /// own lookups or follow-up, a recall, an answer that must keep its
    /// place among the sends): answered in its turn like a send.
    Push(TaskFuture<P::Sent>),
    /// Record a delivery ack of the logged-in device. `claimed`: an id of
    /// the client's choosing, honoured only for a recipient of the message
    /// (`SessionCtx::ack_claimed`); a refused one comes back in
    /// [`Protocol::on_ack_refused`] with `tag`.
    Ack {
        message_id: u64,
        claimed: bool,
        tag: u32,
    },
    /// Attach the device feed (deliveries start), then call
    /// [`Protocol::on_attached`].
    AttachFeed,
    /// Detach the device feed (no more deliveries).
    DetachFeed,
    /// Stop reading until every send in flight is answered, then call
    /// [`Protocol::on_sends_answered`] (the protocol keeps what waits).
    Wait,
    /// Run a query ([`Protocol::run_task`]); reading and deliveries pause
    /// until [`Protocol::on_task_done`].
    Task(P::Task),
    /// End the session (after what was written is flushed).
    Close,
}

/// Credentials a protocol read from its login frame.
pub struct Credentials {
    pub user: String,
    pub credential: String,
    pub client_id: String,
}

/// What the login phase asks of the driver. The phase lasts until
/// [`LoginStep::LoggedIn`], within one login deadline however many frames
/// it takes (XMPP: stream headers, STARTTLS, SASL, binding).
pub enum LoginStep {
    /// Check these credentials (`sessions::login`), then call
    /// [`Protocol::on_login`].
    Check(Credentials),
    /// Read the next frame of the login ([`Protocol::on_login_frame`]).
    Next,
    /// Run the TLS handshake on this connection (STARTTLS: what was
    /// written so far is flushed in plain text first, what was read and
    /// not framed yet is discarded), then read on.
    StartTls,
    /// Logged in as this principal: register, attach, then
    /// [`Protocol::on_logged_in`].
    LoggedIn(Principal),
    /// Refused (the refusal is rendered): close.
    Refused,
}

/// Why the driver ends a session on its own.
pub enum Ending {
    /// A newer login replaced this one (or an admin kick).
    Kicked(Kick),
    /// The gateway drains.
    Draining,
    /// The store closed the device feed (replaced or too slow).
    FeedClosed,
}

/// Where a protocol writes its frames: the connection's write buffer,
/// flushed by the driver (within the write deadline) after every step.
pub struct Cx<'a, E> {
    buf: &'a mut BytesMut,
    encoder: &'a mut E,
    in_flight: bool,
    delivered: u32,
    failed: bool,
}

impl<'a, E> Cx<'a, E> {
    pub fn new(buf: &'a mut BytesMut, encoder: &'a mut E, in_flight: bool) -> Self {
        Cx {
            buf,
            encoder,
            in_flight,
            delivered: 0,
            failed: false,
        }
    }

    /// Encode one frame into the write buffer. An encoding failure (a
    /// frame above the protocol's limit) ends the session.
    pub fn write<T>(&mut self, frame: T)
    where
        E: Encoder<T>,
        <E as Encoder<T>>::Error: std::fmt::Display,
    {
        if let Err(e) = self.encoder.encode(frame, self.buf) {
            tracing::debug!(error = %e, "a frame could not be encoded; closing");
            self.failed = true;
        }
    }

    /// Bytes written and not flushed yet (a protocol writing a batch stops
    /// at a bound and asks to be woken again, so the buffer stays bounded).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Some sends are in the window (a request that must see them, or be
    /// answered after them, waits: [`Step::Wait`]).
    pub fn sends_in_flight(&self) -> bool {
        self.in_flight
    }

    /// Count a message delivered to the device (the driver's metrics).
    pub fn delivered(&mut self) {
        self.delivered += 1;
    }

    /// Messages counted by [`Self::delivered`].
    pub fn delivered_count(&self) -> u32 {
        self.delivered
    }

    /// The encoder (a protocol whose framing depends on the login, as
    /// MQTT's version, sets it up).
    pub fn encoder(&mut self) -> &mut E {
        self.encoder
    }

    /// An encoding failed: the driver closes the session.
    pub fn failed(&self) -> bool {
        self.failed
    }
}

/// A protocol's session state machine, run by [`super::run`].
///
/// Every method is synchronous: it reads the state, writes frames into
/// the [`Cx`] and returns what the driver does next. Async work is the
/// driver's: sends and acks (the hot path, no allocation of the
/// protocol's), and [`Self::run_task`] for queries.
pub trait Protocol: Send + Sized + 'static {
    /// For metrics, the login and the tracing span.
    const PROTOCOL: imgate_core::pipeline::Protocol;
    /// The framer the driver reads with (from `codecs/`).
    type Framer: Decoder<Item = Self::Frame, Error = Self::FrameError> + Send;
    type Frame: Send;
    type FrameError: std::fmt::Display + From<std::io::Error> + Send;
    /// What encodes this protocol's frames into the write buffer.
    type Encoder: Send;
    /// What a send's outcome needs to be rendered (its seq, packet id, ...).
    type SendMeta: Send + 'static;
    /// What an entry of the window yields ([`Self::sent`] for a send).
    type Sent: Send + 'static;
    type Task: Send;
    type TaskOut: Send + 'static;

    /// How long the peer may stay silent.
    fn idle_limit(&self) -> Duration;

    /// Whether the driver may hand over the next delivery now (flow
    /// control of the protocol: receive maximum, unacked window).
    fn may_deliver(&self) -> bool {
        true
    }

    /// A send's outcome as the window yields it (runs in the send's
    /// future, when the pipeline answered).
    fn sent(meta: Self::SendMeta, result: Result<SendAck, ImError>) -> Self::Sent;

    /// A frame of the login phase: the login (or a refusal the protocol
    /// rendered), or one step of a longer negotiation.
    fn on_login_frame(&mut self, frame: Self::Frame, cx: &mut Cx<'_, Self::Encoder>) -> LoginStep;

    /// The outcome of the credential check, before the session is
    /// registered: the protocol may adjust the principal
    /// ([`LoginStep::LoggedIn`]), go on negotiating, or render the
    /// refusal.
    fn on_login(
        &mut self,
        checked: Result<Principal, ImError>,
        cx: &mut Cx<'_, Self::Encoder>,
    ) -> LoginStep;

    /// The login deadline passed (render it if the protocol tells
    /// clients; the driver closes).
    fn on_login_timeout(&mut self, _cx: &mut Cx<'_, Self::Encoder>) {}

    /// After every call of the login phase: adjust the framer (a stream
    /// restart, a stanza limit raised once authenticated).
    fn tune_framer(&mut self, _framer: &mut Self::Framer) {}

    /// Whether the device feed is attached at login (else the protocol
    /// asks for it later).
    fn attach_at_login(&self) -> bool {
        true
    }

    /// Registered and attached: answer the login (`attached` false: the
    /// store could not attach the device; render it, the driver closes).
    fn on_logged_in(&mut self, attached: bool, cx: &mut Cx<'_, Self::Encoder>) -> Step<Self>;

    /// One frame of the logged-in session.
    fn on_frame(&mut self, frame: Self::Frame, cx: &mut Cx<'_, Self::Encoder>) -> Step<Self>;

    /// An undecodable frame or a read error (the sends in flight are
    /// answered first); the driver closes after rendering.
    fn on_bad_frame(&mut self, error: Self::FrameError, cx: &mut Cx<'_, Self::Encoder>);

    /// The window is empty after [`Step::Wait`].
    fn on_sends_answered(&mut self, cx: &mut Cx<'_, Self::Encoder>) -> Step<Self>;

    /// The oldest entry of the window is done.
    fn on_send_done(&mut self, sent: Self::Sent, cx: &mut Cx<'_, Self::Encoder>) -> Step<Self>;

    /// A claimed ack ([`Step::Ack`]) was refused.
    fn on_ack_refused(
        &mut self,
        tag: u32,
        message_id: u64,
        cx: &mut Cx<'_, Self::Encoder>,
    ) -> Step<Self>;

    /// A message for the device. What the feed has ready is handed over
    /// in a row (while [`Self::may_deliver`], up to a bound) and written
    /// together.
    fn on_delivery(&mut self, msg: Arc<Message>, cx: &mut Cx<'_, Self::Encoder>) -> Step<Self>;

    /// After a row of deliveries, before they are written (XMPP asks for
    /// one stream-management ack for all of them).
    fn on_deliveries_written(&mut self, _cx: &mut Cx<'_, Self::Encoder>) {}

    /// Start a query: a future owning what it needs.
    fn run_task(
        task: Self::Task,
        ctx: &SessionCtx,
        principal: &Principal,
    ) -> TaskFuture<Self::TaskOut>;

    /// A query's outcome.
    fn on_task_done(&mut self, out: Self::TaskOut, cx: &mut Cx<'_, Self::Encoder>) -> Step<Self>;

    /// The peer was silent for [`Self::idle_limit`].
    fn on_idle(&mut self, cx: &mut Cx<'_, Self::Encoder>) -> Step<Self>;

    /// The driver ends the session (sends in flight answered first).
    fn on_ending(&mut self, why: Ending, cx: &mut Cx<'_, Self::Encoder>);

    /// The feed asked for with [`Step::AttachFeed`] is attached (`false`:
    /// the store could not attach it; render it, the driver closes).
    fn on_attached(&mut self, _attached: bool, _cx: &mut Cx<'_, Self::Encoder>) -> Step<Self> {
        Step::Continue
    }

    /// Something outside the connection has work for the session (a
    /// broker queue, routed stanzas), announced through this [`Notify`];
    /// the driver calls [`Self::on_wake`] (not while a task runs).
    fn wake_source(&self) -> Option<Arc<Notify>> {
        None
    }

    fn on_wake(&mut self, _cx: &mut Cx<'_, Self::Encoder>) -> Step<Self> {
        Step::Continue
    }

    /// The session is over (after login), however it ended.
    fn finish(&mut self) {}
}
