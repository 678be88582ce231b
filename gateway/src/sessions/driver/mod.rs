//! The one session driver: runs every protocol's session on any transport
//! ([`ClientStream`]: TCP, TLS, WebSocket, WSS).
//!
//! The driver owns the connection and everything with a clock or a queue:
//! - the login deadline (`SessionCtx::login_timeout`), then the login
//!   itself (`sessions::login`), the registry (kick rule) and the device
//!   feed;
//! - the idle limit (the protocol's heartbeat or keepalive), the write
//!   deadline of every flush (`write_deadline`) and buffers that an idle
//!   connection does not hold (`idle_buffers`);
//! - the window of sends in flight ([`SendWindow`], whose appends keep the
//!   send order, `OrderedAppends`), answered in the client's order;
//!   backpressure: the socket is not read while the window is full, a
//!   request waits for it ([`Step::Wait`]) or a query runs;
//! - kick, drain and a closed feed: the sends in flight are answered
//!   (within [`DRAIN_LIMIT`]), then the protocol renders the notice;
//! - metrics (deliveries) and one tracing span per session.
//!
//! A protocol is a state machine behind [`Protocol`] ([`protocol`]): it
//! never sees the socket, it writes frames into the driver's write buffer
//! and returns [`Step`]s. On the hot path nothing is allocated for the
//! driver beyond what the protocol's frames need: a send is one boxed
//! future in the window, a delivery is encoded straight into the write
//! buffer.

pub mod protocol;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use imgate_core::pipeline::Principal;
use imgate_core::store::DeviceFeed;
use imgate_core::{ErrorCode, ImError, Message};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;
use tracing::Instrument;

pub use protocol::{Credentials, Cx, Ending, LoginStep, Protocol, Step, TaskFuture};

use super::{idle_buffers, write_deadline, Kick, SendWindow, SessionCtx, SessionHandle};
use crate::transport::ClientStream;

/// How long a kicked or draining session waits for its sends in flight
/// to be answered before it closes (what is left unanswered the client
/// resends, and the resend is deduplicated).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Most deliveries rendered for one write.
const DELIVERY_ROW: usize = 64;
/// A row of deliveries stops once this much is waiting to be written.
const DELIVERY_ROW_BYTES: usize = 64 * 1024;

/// Run one connection of protocol `P` to its end.
///
/// Not an `async fn`: the connection and the protocol are boxed before the
/// future exists, so the future (every session's task, for its whole life)
/// holds a pointer to them, not their bytes (an `async fn` keeps its
/// arguments' space even after moving them out).
pub fn run<P: Protocol>(
    stream: ClientStream,
    peer: SocketAddr,
    ctx: SessionCtx,
    proto: P,
    framer: P::Framer,
    encoder: P::Encoder,
) -> impl std::future::Future<Output = ()> + Send {
    let span = tracing::debug_span!(
        "session",
        protocol = ?P::PROTOCOL,
        %peer,
        user = tracing::field::Empty,
        device = tracing::field::Empty
    );
    let conn = Box::new(Conn {
        framed: idle_buffers::framed(stream, framer),
        encoder,
        proto,
        failed_encoding: false,
    });
    async move {
        // Boxed: the login's state is not kept for the session's life (an
        // idle connection's memory is mostly its task's state).
        let Some(live) = Box::pin(open(conn, &ctx).instrument(span.clone())).await else {
            return;
        };
        live.run(ctx).instrument(span).await;
    }
}

/// The connection and the protocol's state.
struct Conn<P: Protocol> {
    framed: Framed<ClientStream, P::Framer>,
    encoder: P::Encoder,
    proto: P,
    /// A frame could not be encoded: the session ends.
    failed_encoding: bool,
}

impl<P: Protocol> Conn<P> {
    /// Call the protocol with a [`Cx`] on the write buffer.
    fn with_cx<R>(
        &mut self,
        in_flight: bool,
        f: impl FnOnce(&mut P, &mut Cx<'_, P::Encoder>) -> R,
    ) -> (R, u32, bool) {
        let mut cx = Cx::new(self.framed.write_buffer_mut(), &mut self.encoder, in_flight);
        let r = f(&mut self.proto, &mut cx);
        let failed = cx.failed();
        self.failed_encoding |= failed;
        (r, cx.delivered_count(), failed)
    }

    /// Write what is buffered and end the stream (TLS `close_notify`, the
    /// WebSocket Close), within the write deadline.
    async fn close(&mut self) {
        if self.flush().await {
            let _ = write_deadline::bounded(self.framed.get_mut().shutdown()).await;
        }
    }

    /// Write what is buffered, within the write deadline; false if the
    /// peer is gone or did not read in time.
    async fn flush(&mut self) -> bool {
        if self.framed.write_buffer().is_empty() {
            return true;
        }
        let mut buf = std::mem::take(self.framed.write_buffer_mut());
        let stream = self.framed.get_mut();
        let written = write_deadline::bounded(async {
            stream.write_all_buf(&mut buf).await?;
            stream.flush().await
        })
        .await
        .is_ok();
        buf.clear();
        *self.framed.write_buffer_mut() = buf;
        written
    }
}

/// The login phase, within the login deadline: read its frames, check the
/// credentials, register, attach, answer.
async fn open<P: Protocol>(mut conn: Box<Conn<P>>, ctx: &SessionCtx) -> Option<Box<Live<P>>> {
    let deadline = tokio::time::Instant::now() + ctx.login_timeout();
    let mut step = LoginStep::Next;
    let principal = loop {
        step = match step {
            LoginStep::LoggedIn(principal) => break principal,
            LoginStep::Refused => {
                conn.close().await;
                return None;
            }
            LoginStep::Next => {
                let next =
                    tokio::time::timeout_at(deadline, idle_buffers::next_frame(&mut conn.framed))
                        .await;
                match next {
                    Ok(Some(Ok(frame))) => {
                        conn.with_cx(false, |p, cx| p.on_login_frame(frame, cx)).0
                    }
                    Ok(Some(Err(e))) => {
                        conn.with_cx(false, |p, cx| p.on_bad_frame(e, cx));
                        conn.close().await;
                        return None;
                    }
                    Ok(None) => return None,
                    Err(_) => {
                        conn.with_cx(false, |p, cx| p.on_login_timeout(cx));
                        conn.close().await;
                        return None;
                    }
                }
            }
            LoginStep::StartTls => {
                // What was written (the protocol's go-ahead) went out in
                // plain text at the end of the last step.
                let Some(acceptor) = ctx.tls.as_ref() else {
                    tracing::debug!("STARTTLS asked for without a certificate");
                    return None;
                };
                conn.framed.read_buffer_mut().clear();
                let limit = deadline.saturating_duration_since(tokio::time::Instant::now());
                if conn
                    .framed
                    .get_mut()
                    .upgrade(acceptor, limit)
                    .await
                    .is_err()
                {
                    tracing::debug!("STARTTLS handshake failed");
                    return None;
                }
                LoginStep::Next
            }
            LoginStep::Check(creds) => {
                let checked = super::login(
                    ctx,
                    P::PROTOCOL,
                    &creds.user,
                    &creds.credential,
                    &creds.client_id,
                );
                conn.with_cx(false, |p, cx| p.on_login(checked, cx)).0
            }
        };
        conn.proto.tune_framer(conn.framed.codec_mut());
        if conn.failed_encoding || !conn.flush().await {
            return None;
        }
    };
    let span = tracing::Span::current();
    span.record("user", principal.user_id.as_str());
    span.record("device", principal.device_id.as_str());
    // "pb login" in the session's span (its peer): operators grep for it.
    tracing::debug!(
        tls = conn.framed.get_ref().is_tls(),
        "{} login",
        P::PROTOCOL.name()
    );
    // Register first (kicks what this login replaces), then attach to the
    // store (pending deliveries first, then live).
    let handle = ctx.sessions.register(&principal);
    let mut feed = None;
    let mut attached = true;
    if conn.proto.attach_at_login() {
        match ctx
            .store
            .attach_device(&principal.user_id, &principal.device_id)
            .await
        {
            Ok(f) => feed = Some(f),
            Err(e) => {
                tracing::warn!(error = %e, "cannot attach the device to the store");
                attached = false;
            }
        }
    }
    let (step, _, failed) = conn.with_cx(false, |p, cx| p.on_logged_in(attached, cx));
    if !attached || failed || !conn.flush().await {
        conn.proto.finish();
        conn.close().await;
        return None;
    }
    let window = SendWindow::new(ctx.config.send_window);
    let wake = conn.proto.wake_source();
    let mut live = Box::new(Live {
        wake,
        conn: *conn,
        principal,
        handle,
        feed,
        window,
        waiting: false,
        task: None,
    });
    if !live.apply(step, ctx).await {
        live.finish();
        live.conn.close().await;
        return None;
    }
    Some(live)
}

/// A logged-in session and what the loop selects on.
struct Live<P: Protocol> {
    conn: Conn<P>,
    principal: Principal,
    handle: SessionHandle,
    feed: Option<DeviceFeed>,
    window: SendWindow<P::Sent>,
    /// Reading stopped until the window is empty ([`Step::Wait`]).
    waiting: bool,
    /// A query in flight ([`Step::Task`]).
    task: Option<TaskFuture<P::TaskOut>>,
    /// [`Protocol::wake_source`].
    wake: Option<Arc<tokio::sync::Notify>>,
}

/// What is left to do after a step's frames are flushed.
enum Next<P: Protocol> {
    Continue,
    Close,
    /// The feed closed in the middle of a row of deliveries.
    FeedClosed,
    Ack {
        message_id: u64,
        claimed: bool,
        tag: u32,
    },
    Apply(Box<Step<P>>),
}

/// What woke the loop.
enum Wake<P: Protocol> {
    Kicked(Kick),
    Draining,
    Sent(P::Sent),
    TaskDone(P::TaskOut),
    Idle,
    Eof,
    BadFrame(P::FrameError),
    Frame(P::Frame),
    Delivery(Arc<Message>),
    FeedClosed,
    Woken,
}

impl<P: Protocol> Live<P> {
    async fn run(mut self: Box<Self>, ctx: SessionCtx) {
        loop {
            let reading = !self.waiting && self.task.is_none() && !self.window.is_full();
            let delivering =
                self.task.is_none() && self.feed.is_some() && self.conn.proto.may_deliver();
            let idle = self.conn.proto.idle_limit();
            let wake: Wake<P> = tokio::select! {
                biased;
                kick = &mut self.handle.kicked => Wake::Kicked(kick.unwrap_or(Kick {
                    code: ErrorCode::KickedOff,
                    reason: "kicked".into(),
                })),
                _ = ctx.draining() => Wake::Draining,
                out = next_task(&mut self.task) => Wake::TaskDone(out),
                sent = self.window.next() => Wake::Sent(sent),
                next = tokio::time::timeout(idle, idle_buffers::next_frame(&mut self.conn.framed)), if reading => match next {
                    Err(_) => Wake::Idle,
                    Ok(None) => Wake::Eof,
                    Ok(Some(Err(e))) => Wake::BadFrame(e),
                    Ok(Some(Ok(frame))) => Wake::Frame(frame),
                },
                _ = woken(&self.wake), if self.task.is_none() => Wake::Woken,
                msg = next_delivery(&mut self.feed), if delivering => match msg {
                    Some(m) => Wake::Delivery(m),
                    None => Wake::FeedClosed,
                },
            };
            // Not boxed: deliveries and answers (the hot path) cost no
            // allocation here; the rare slow paths box themselves.
            if !self.handle_wake(wake, &ctx).await {
                self.finish();
                self.conn.close().await;
                return;
            }
        }
    }

    fn finish(&mut self) {
        self.feed = None;
        self.conn.proto.finish();
    }

    /// React to one wake-up; false ends the session.
    ///
    /// Steps are handled in [`Self::react`], a plain function: a `Step` is
    /// as large as a send, and whatever this async function holds at an
    /// await is part of every session's task, idle or not. Across the
    /// flush only a [`Next`] is kept (a rare step boxed).
    async fn handle_wake(&mut self, wake: Wake<P>, ctx: &SessionCtx) -> bool {
        let (next, failed) = match wake {
            Wake::Kicked(kick) => return Box::pin(self.end(Ending::Kicked(kick))).await,
            Wake::Draining => return Box::pin(self.end(Ending::Draining)).await,
            Wake::FeedClosed => return Box::pin(self.end(Ending::FeedClosed)).await,
            Wake::Eof => return false,
            Wake::BadFrame(e) => {
                Box::pin(self.answer_in_flight()).await;
                self.conn.with_cx(false, |p, cx| p.on_bad_frame(e, cx));
                self.conn.flush().await;
                return false;
            }
            other => self.react(other, ctx),
        };
        if failed || !self.conn.flush().await {
            return false;
        }
        match next {
            Next::Continue => true,
            Next::Close => false,
            Next::FeedClosed => Box::pin(self.end(Ending::FeedClosed)).await,
            Next::Ack {
                message_id,
                claimed,
                tag,
            } => {
                let ack = Step::Ack {
                    message_id,
                    claimed,
                    tag,
                };
                Box::pin(self.apply(ack, ctx)).await
            }
            Next::Apply(step) => Box::pin(self.apply(*step, ctx)).await,
        }
    }

    /// The protocol's answer to a wake-up that needs no await: frames in
    /// the write buffer, a send into the window (it is polled only after
    /// the flush), and what is left to do; true if an encoding failed.
    fn react(&mut self, wake: Wake<P>, ctx: &SessionCtx) -> (Next<P>, bool) {
        let in_flight = !self.window.is_empty();
        let (step, delivered, failed) = match wake {
            Wake::Idle => {
                tracing::debug!("idle timeout");
                self.conn.with_cx(in_flight, |p, cx| p.on_idle(cx))
            }
            Wake::TaskDone(out) => {
                self.task = None;
                self.conn
                    .with_cx(in_flight, |p, cx| p.on_task_done(out, cx))
            }
            Wake::Sent(sent) => {
                let r = self
                    .conn
                    .with_cx(!self.window.is_empty(), |p, cx| p.on_send_done(sent, cx));
                if !matches!(r.0, Step::Continue) || r.2 {
                    r
                } else if self.waiting && self.window.is_empty() {
                    self.waiting = false;
                    // Written together with the last send's answer.
                    self.conn.with_cx(false, |p, cx| p.on_sends_answered(cx))
                } else {
                    r
                }
            }
            Wake::Frame(frame) => self.conn.with_cx(in_flight, |p, cx| p.on_frame(frame, cx)),
            Wake::Delivery(msg) => match self.deliver_ready(msg, in_flight) {
                Some(r) => r,
                None => return (Next::FeedClosed, false),
            },
            Wake::Woken => self.conn.with_cx(in_flight, |p, cx| p.on_wake(cx)),
            // Handled by `handle_wake`.
            Wake::Kicked(_) | Wake::Draining | Wake::FeedClosed | Wake::Eof | Wake::BadFrame(_) => {
                return (Next::Close, false)
            }
        };
        for _ in 0..delivered {
            ctx.metrics.message_out(P::PROTOCOL);
        }
        let next = match step {
            Step::Continue => Next::Continue,
            Step::Close => Next::Close,
            Step::Send(cmd, meta) => {
                self.push_send(cmd, meta, ctx);
                Next::Continue
            }
            Step::Push(entry) => {
                self.window.push(entry);
                Next::Continue
            }
            // A delivery ack (MQTT PUBACK, PB DeliverAck) is the hot path:
            // carried without a box of its own.
            Step::Ack {
                message_id,
                claimed,
                tag,
            } => Next::Ack {
                message_id,
                claimed,
                tag,
            },
            other => Next::Apply(Box::new(other)),
        };
        (next, failed)
    }

    /// A send into the window: one boxed future (the window's).
    fn push_send(
        &mut self,
        cmd: Result<imgate_core::pipeline::SendCommand, ImError>,
        meta: P::SendMeta,
        ctx: &SessionCtx,
    ) {
        let pipelined = cmd.map(|cmd| ctx.send_owned(cmd));
        self.window.push(async move {
            let result = match pipelined {
                Ok(send) => send.await,
                Err(e) => Err(e),
            };
            P::sent(meta, result)
        });
    }

    /// `first` and what else the feed has ready (while the protocol may
    /// deliver, up to [`DELIVERY_ROW`] messages or [`DELIVERY_ROW_BYTES`]
    /// written), rendered for one write. None: the feed closed.
    fn deliver_ready(
        &mut self,
        first: Arc<Message>,
        in_flight: bool,
    ) -> Option<(Step<P>, u32, bool)> {
        let (mut step, mut delivered, mut failed) = self
            .conn
            .with_cx(in_flight, |p, cx| p.on_delivery(first, cx));
        let mut closed = false;
        let mut rendered = 1;
        while matches!(step, Step::Continue)
            && !failed
            && rendered < DELIVERY_ROW
            && self.conn.framed.write_buffer().len() < DELIVERY_ROW_BYTES
            && self.conn.proto.may_deliver()
        {
            let Some(feed) = self.feed.as_mut() else {
                break;
            };
            // Cancel-safe: the feed is polled in the loop's `select!` too.
            match feed.next().now_or_never() {
                Some(Some(msg)) => {
                    let r = self.conn.with_cx(in_flight, |p, cx| p.on_delivery(msg, cx));
                    (step, delivered, failed) = (r.0, delivered + r.1, r.2);
                    rendered += 1;
                }
                Some(None) => {
                    closed = true;
                    break;
                }
                None => break,
            }
        }
        let (_, more, end_failed) = self
            .conn
            .with_cx(in_flight, |p, cx| p.on_deliveries_written(cx));
        if closed {
            return None;
        }
        Some((step, delivered + more, failed || end_failed))
    }

    /// Carry out a step (and the steps it leads to); false ends the
    /// session.
    async fn apply(&mut self, mut step: Step<P>, ctx: &SessionCtx) -> bool {
        loop {
            step = match step {
                Step::Continue => return true,
                Step::Close => return false,
                Step::Wait => {
                    if self.window.is_empty() {
                        let (next, _, failed) =
                            self.conn.with_cx(false, |p, cx| p.on_sends_answered(cx));
                        if failed || !self.conn.flush().await {
                            return false;
                        }
                        next
                    } else {
                        self.waiting = true;
                        return true;
                    }
                }
                Step::Send(cmd, meta) => {
                    self.push_send(cmd, meta, ctx);
                    return true;
                }
                Step::Push(entry) => {
                    self.window.push(entry);
                    return true;
                }
                Step::DetachFeed => {
                    self.feed = None;
                    return true;
                }
                Step::AttachFeed => {
                    let (user, device) = (&self.principal.user_id, &self.principal.device_id);
                    let attached = match ctx.store.attach_device(user, device).await {
                        Ok(f) => {
                            self.feed = Some(f);
                            true
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot attach the device to the store");
                            false
                        }
                    };
                    let in_flight = !self.window.is_empty();
                    let (next, _, failed) = self
                        .conn
                        .with_cx(in_flight, |p, cx| p.on_attached(attached, cx));
                    if !attached || failed || !self.conn.flush().await {
                        return false;
                    }
                    next
                }
                Step::Task(task) => {
                    self.task = Some(P::run_task(task, ctx, &self.principal));
                    return true;
                }
                Step::Ack {
                    message_id,
                    claimed,
                    tag,
                } => {
                    let (user, device) = (&self.principal.user_id, &self.principal.device_id);
                    let acked = if claimed {
                        ctx.ack_claimed(user, device, message_id).await
                    } else {
                        ctx.ack_delivery(user, device, message_id)
                            .await
                            .map(|()| true)
                    };
                    match acked {
                        Ok(true) => return true,
                        Ok(false) => {
                            tracing::debug!(
                                message_id,
                                "ack of a message not delivered to this user refused"
                            );
                            let in_flight = !self.window.is_empty();
                            let (next, _, failed) = self
                                .conn
                                .with_cx(in_flight, |p, cx| p.on_ack_refused(tag, message_id, cx));
                            if failed || !self.conn.flush().await {
                                return false;
                            }
                            next
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "storing a delivery ack failed; it will be redelivered");
                            return true;
                        }
                    }
                }
            }
        }
    }

    /// Answer the sends in flight (within [`DRAIN_LIMIT`]), then let the
    /// protocol render why the session ends.
    async fn end(&mut self, why: Ending) -> bool {
        self.finish_task().await;
        self.answer_in_flight().await;
        self.conn.with_cx(false, |p, cx| p.on_ending(why, cx));
        self.conn.flush().await;
        false
    }

    /// A query in flight is answered (within [`DRAIN_LIMIT`]) before the
    /// session ends: the protocol gets its state back and the client its
    /// answer.
    async fn finish_task(&mut self) {
        let Some(task) = self.task.take() else { return };
        let Ok(out) = tokio::time::timeout(DRAIN_LIMIT, task).await else {
            return;
        };
        let in_flight = !self.window.is_empty();
        let (_, _, failed) = self.conn.with_cx(in_flight, |p, cx| {
            // Steps are not carried out while ending: the session closes.
            let _ = p.on_task_done(out, cx);
        });
        if !failed {
            self.conn.flush().await;
        }
    }

    async fn answer_in_flight(&mut self) {
        let limit = tokio::time::Instant::now() + DRAIN_LIMIT;
        while !self.window.is_empty() {
            let Ok(sent) = tokio::time::timeout_at(limit, self.window.next()).await else {
                return;
            };
            let (_, _, failed) = self.conn.with_cx(!self.window.is_empty(), |p, cx| {
                // Steps are not carried out while ending: the session closes.
                let _ = p.on_send_done(sent, cx);
            });
            if failed || !self.conn.flush().await {
                return;
            }
        }
    }
}

async fn next_task<T>(task: &mut Option<TaskFuture<T>>) -> T {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

async fn woken(wake: &Option<Arc<tokio::sync::Notify>>) {
    match wake {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

async fn next_delivery(feed: &mut Option<DeviceFeed>) -> Option<Arc<Message>> {
    match feed {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}
