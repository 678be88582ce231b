//! One XMPP connection after negotiation: stanzas in (messages through the
//! pipeline, receipts and SM acks to the store, presence, iq) and
//! deliveries out, until the client leaves, idles out, is kicked, or the
//! gateway drains. The structure mirrors the PB session: a `select!` over
//! the socket, the device feed, the kick signal, draining and routed
//! stanzas.
//!
//! Durability acks for the sender: with XEP-0198 enabled, the server's
//! `<a h>` counts a message only once the pipeline returned, i.e. after
//! the store made it durable. A rejected message gets a `type='error'`
//! reply instead. There is no server-made XEP-0184 receipt: a receipt
//! means "the recipient has it" and is forwarded from the recipient when
//! it sends one.
//!
//! Messages are pipelined: every `<message>` goes into the session's
//! [`SendWindow`] (`send_window` in the config; with it full the socket is
//! not read) and is counted in `h` and answered (error reply) when it
//! leaves the window, oldest first — `h` always counts a prefix of the
//! stanzas, in stanza order. Every other stanza (presence, iq) and the SM
//! `<enable/>` and `<r/>` wait until the window is empty (reading stops
//! meanwhile): a stanza is counted after the messages before it, an iq
//! (MAM query) sees them stored, and the `<a h>` answering an `<r/>`
//! covers every message sent before it (clients rely on that to know
//! their messages are durable). The client's `<a/>` (delivery acks) needs
//! no order and is handled at once. On kick, drain or stream close the
//! messages in flight are answered first, within [`DRAIN_LIMIT`].
//!
//! Memory: the handlers the loop awaits are boxed (`Box::pin(..).await`),
//! so the task's long-lived state, what an idle connection costs, holds
//! only the `select!` branches; the read buffer is released while idle
//! (`XmppConnection::read_event`) and routed stanzas queue boxed.
//!
//! Delivery acks: a delivered message's id is its `messageUid`; the
//! recipient's XEP-0184 `<received id>` or an XEP-0198 `<a h>` covering it
//! acks it in the store. A client with neither gets unacked messages again
//! at its next login (at-least-once, DESIGN §3).

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use imgate_codecs::xmpp::{ns, DeliveryOptions, Element, XmppEvent};
use imgate_core::pipeline::Principal;
use imgate_core::store::DeviceFeed;
use imgate_core::{now_ms, ErrorCode, Message};
use tokio::sync::mpsc;

use super::connection::{OutBatch, ReadEnd, XmppConnection};
use super::negotiation::Negotiated;
use super::router::RouteHandle;
use super::stream_management::SmGuard;
use super::XmppContext;
use crate::sessions::SessionCtx;
use crate::sessions::{Kick, SendWindow};

/// Silent heartbeat intervals (each answered by a server ping) before the
/// connection is considered dead.
const MAX_SILENT_INTERVALS: u32 = 3;
/// How long a closing session waits for its messages in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Most stanzas (deliveries, routed stanzas) rendered into one socket write.
const WRITE_BATCH: usize = 64;

/// A pipelined `<message>`'s outcome: the error reply to write, if any.
pub(super) type MessageDone = Option<Element>;

pub struct Session {
    pub(super) conn: XmppConnection,
    pub(super) state: SessionCtx,
    pub(super) ctx: Arc<XmppContext>,
    pub(super) principal: Principal,
    /// `user@domain/device`.
    pub(super) jid: String,
    pub(super) route: RouteHandle,
    pub(super) sm: Option<SmGuard>,
    /// Messages older than this are marked delayed (offline delivery).
    pub(super) started_ms: i64,
    pub(super) available: bool,
    pub(super) ping_counter: u64,
    /// Messages waiting for the pipeline, oldest first.
    pub(super) window: SendWindow<MessageDone>,
    /// A stanza waiting until `window` is empty.
    pub(super) held: Option<Element>,
    /// What this session may route to others (`routing`).
    pub(super) route_budget: super::routing::RouteBudget,
}

/// How the loop ended, for stream management.
enum End {
    /// The connection was lost or broken: keep SM state resumable.
    Lost,
    /// The client closed, was kicked, or the server drains.
    Closed,
}

/// A bound session ready to run, with what its loop selects on (boxed by
/// [`start`] so the task keeps one pointer to it, not the setup's state).
pub struct Live {
    session: Session,
    handle: crate::sessions::registry::SessionHandle,
    feed: DeviceFeed,
    routed: mpsc::Receiver<Box<Element>>,
}

/// Build the session after negotiation (and resume it if asked); None if
/// the connection already ended.
pub async fn start(
    conn: XmppConnection,
    state: SessionCtx,
    ctx: Arc<XmppContext>,
    negotiated: Negotiated,
) -> Option<Box<Live>> {
    let Negotiated {
        principal,
        handle,
        feed,
        resumed,
    } = negotiated;
    let domain = ctx.normalizer.domain().to_string();
    let jid = format!("{}@{}/{}", principal.user_id, domain, principal.device_id);
    let (route, routed) = ctx
        .router
        .register(&principal.user_id, &principal.device_id);
    let mut session = Session {
        conn,
        state: state.clone(),
        ctx: ctx.clone(),
        principal,
        jid,
        route,
        sm: None,
        started_ms: now_ms(),
        available: false,
        ping_counter: 0,
        window: SendWindow::new(state.config.send_window),
        held: None,
        route_budget: Default::default(),
    };
    if let Some((guard, h)) = resumed {
        if !Box::pin(session.resume(guard, h)).await {
            return None;
        }
    }
    Some(Box::new(Live {
        session,
        handle,
        feed,
        routed,
    }))
}

/// Run the session's loop until the connection ends.
pub async fn run(mut live: Box<Live>) {
    let Live {
        session,
        handle,
        feed,
        routed,
    } = &mut *live;
    let end = session.run_loop(handle, feed, routed).await;
    live.session.finish(end);
}

impl Session {
    pub(super) fn domain(&self) -> String {
        self.ctx.normalizer.domain().to_string()
    }

    async fn run_loop(
        &mut self,
        handle: &mut crate::sessions::registry::SessionHandle,
        feed: &mut DeviceFeed,
        routed: &mut mpsc::Receiver<Box<Element>>,
    ) -> End {
        let heartbeat = Duration::from_secs(self.state.config.heartbeat_secs.max(1));
        let max_unacked = self.max_unacked();
        let ack_wait = Duration::from_secs(self.state.config.write_timeout_secs.max(1));
        let mut silent = 0u32;
        let domain = self.domain();
        loop {
            let reading = self.held.is_none() && !self.window.is_full();
            // SM window full: no deliveries until an ack (stream_management).
            let stalled = self.sm.as_mut().and_then(|sm| sm.full_since(max_unacked));
            let ack_deadline = stalled.map(|t| tokio::time::Instant::from_std(t + ack_wait));
            tokio::select! {
                biased;
                kick = &mut handle.kicked => {
                    let kick = kick.unwrap_or(Kick { code: ErrorCode::KickedOff, reason: "kicked".into() });
                    let text = format!("{} {}", kick.code.as_i32(), kick.reason);
                    Box::pin(self.answer_in_flight()).await;
                    Box::pin(self.conn.stream_error(&domain, "conflict", &text)).await;
                    // The newer session may resume this one's SM state.
                    return End::Lost;
                }
                _ = self.state.draining() => {
                    Box::pin(self.answer_in_flight()).await;
                    Box::pin(self.conn.stream_error(&domain, "system-shutdown", "4 server shutting down; reconnect")).await;
                    return End::Lost;
                }
                done = self.window.next() => {
                    if !Box::pin(self.message_done(done)).await {
                        return End::Lost;
                    }
                    if self.window.is_empty() {
                        if let Some(el) = self.held.take() {
                            if !Box::pin(self.handle_element(el)).await {
                                return End::Lost;
                            }
                        }
                    }
                }
                next = tokio::time::timeout(heartbeat, self.conn.read_event()), if reading => {
                    match next {
                        Err(_) => {
                            if self.conn.take_activity() {
                                silent = 0;
                                continue;
                            }
                            silent += 1;
                            if silent >= MAX_SILENT_INTERVALS {
                                Box::pin(self.conn.stream_error(&domain, "connection-timeout", "249 no traffic")).await;
                                return End::Lost;
                            }
                            if !Box::pin(self.send_server_ping()).await {
                                return End::Lost;
                            }
                        }
                        Ok(Err(ReadEnd::Eof)) => return End::Lost,
                        Ok(Err(ReadEnd::Codec(e))) => {
                            Box::pin(self.conn.stream_error(&domain, e.stream_condition(), &format!("2 {e}"))).await;
                            return End::Lost;
                        }
                        Ok(Ok(XmppEvent::StreamClose)) => {
                            Box::pin(self.answer_in_flight()).await;
                            Box::pin(self.conn.close()).await;
                            return End::Closed;
                        }
                        Ok(Ok(XmppEvent::StreamOpen(_))) => {
                            Box::pin(self.conn.stream_error(&domain, "bad-format", "2 stream already open")).await;
                            return End::Lost;
                        }
                        Ok(Ok(XmppEvent::Stanza(el))) => {
                            silent = 0;
                            self.conn.take_activity();
                            if !Box::pin(self.handle_element(el)).await {
                                return End::Lost;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(ack_deadline.unwrap_or_else(tokio::time::Instant::now)), if ack_deadline.is_some() => {
                    tracing::debug!(user = %self.principal.user_id, device = %self.principal.device_id, max_unacked, "xmpp: too many unacked deliveries; stream closed");
                    let text = format!("2 more than {max_unacked} stanzas unacked");
                    Box::pin(self.conn.stream_error(&domain, "policy-violation", &text)).await;
                    return End::Lost;
                }
                msg = feed.next(), if stalled.is_none() => {
                    // None: replaced by a newer session of this device, or
                    // too slow; the client reconnects (or resumes) and gets
                    // what is pending — told so, as PB and MQTT clients are.
                    let Some(msg) = msg else {
                        let domain = self.domain();
                        Box::pin(self.conn.stream_error(&domain, "undefined-condition", "4 deliveries stopped; reconnect")).await;
                        return End::Lost;
                    };
                    if !Box::pin(self.deliver(msg, feed)).await {
                        return End::Lost;
                    }
                }
                Some(el) = routed.recv() => {
                    if !Box::pin(self.send_routed(el, routed)).await {
                        return End::Lost;
                    }
                }
            }
        }
    }

    fn finish(mut self, end: End) {
        if self.available {
            self.broadcast_presence(false);
            super::roster::spawn_gone(&self.state, &self.ctx, &self.principal.user_id, &self.jid);
        }
        super::muc_occupants::session_ended(
            self.state.store.clone(),
            &self.ctx,
            &self.principal.user_id,
            &self.principal.device_id,
        );
        if let Some(guard) = self.sm.take() {
            self.ctx.sm.detach(guard, matches!(end, End::Lost));
        }
    }

    /// One element from the client; false closes the connection. Messages
    /// go into the window, an SM `<a/>` is handled at once, and anything
    /// else waits for the window to drain (module doc).
    async fn handle_element(&mut self, el: Element) -> bool {
        if el.ns == ns::SM && el.name == "a" {
            return self.handle_sm(&el).await;
        }
        if el.ns == ns::CLIENT && el.name == "message" {
            // One naming an earlier message waits until those are stored
            // (`references`).
            if self.window.is_empty() || !super::references::refers_to_earlier(&el) {
                self.start_message(el).await;
            } else {
                self.held = Some(el);
            }
            return true;
        }
        if !self.window.is_empty() {
            self.held = Some(el);
            return true;
        }
        if el.ns == ns::SM {
            return self.handle_sm(&el).await;
        }
        if el.ns != ns::CLIENT {
            let domain = self.domain();
            self.conn
                .stream_error(
                    &domain,
                    "unsupported-stanza-type",
                    &format!("2 unexpected <{}>", el.name),
                )
                .await;
            return false;
        }
        let ok = match el.name.as_str() {
            "presence" => self.handle_presence(&el).await,
            "iq" => self.handle_iq(&el).await,
            other => {
                let domain = self.domain();
                self.conn
                    .stream_error(
                        &domain,
                        "unsupported-stanza-type",
                        &format!("2 unexpected <{other}>"),
                    )
                    .await;
                return false;
            }
        };
        self.count_handled();
        ok
    }

    /// One more client stanza handled (a message: durable or refused).
    fn count_handled(&mut self) {
        if let Some(sm) = self.sm.as_mut() {
            sm.h_in = sm.h_in.wrapping_add(1);
            // Resumable: the other nodes learn the count (batched).
            self.ctx.sm.handled(sm);
        }
    }

    /// The oldest message left the window: its error reply, if any, then
    /// it counts as handled.
    async fn message_done(&mut self, done: MessageDone) -> bool {
        if let Some(reply) = done {
            if !self.send_stanza(&reply, None).await {
                return false;
            }
        }
        self.count_handled();
        true
    }

    /// Before the session ends: answer the messages in flight (within
    /// [`DRAIN_LIMIT`]; an unanswered one is resent by the client and
    /// deduplicated by its id).
    async fn answer_in_flight(&mut self) {
        let limit = tokio::time::Instant::now() + DRAIN_LIMIT;
        while !self.window.is_empty() {
            match tokio::time::timeout_at(limit, self.window.next()).await {
                Ok(done) => {
                    if !self.message_done(done).await {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// Write a stanza, counting it for stream management.
    pub(super) async fn send_stanza(&mut self, el: &Element, message_id: Option<u64>) -> bool {
        if !self.conn.write_element(el).await {
            return false;
        }
        if let Some(sm) = self.sm.as_mut() {
            sm.sent(message_id);
        }
        true
    }

    /// Deliver `first` and whatever else the feed has ready (up to
    /// [`WRITE_BATCH`]) in one socket write, with one SM `<r/>` for all of
    /// them: a flood costs one write per batch instead of two per message.
    async fn deliver(&mut self, first: Arc<Message>, feed: &mut DeviceFeed) -> bool {
        let mut out = self.conn.batch();
        // No more than the SM window has room for (at least `first`: the
        // loop delivers only with room).
        let batch = match self.sm.as_ref() {
            Some(sm) => sm.room(self.max_unacked()).clamp(1, WRITE_BATCH),
            None => WRITE_BATCH,
        };
        let mut ids = Vec::with_capacity(batch);
        let mut next = Some(first);
        let mut feed_open = true;
        while let Some(msg) = next.take() {
            self.render_delivery(&msg, &mut out);
            ids.push(msg.message_id);
            if ids.len() >= batch {
                break;
            }
            // Cancel-safe (the feed is polled in `select!` too).
            match feed.next().now_or_never() {
                Some(Some(m)) => next = Some(m),
                Some(None) => feed_open = false,
                None => {}
            }
        }
        // Ask for an SM ack right away so the store learns of the deliveries.
        if self.sm.is_some() {
            out.push(&Element::new("r", ns::SM));
        }
        if !self.conn.write_batch(out).await {
            return false;
        }
        for id in ids {
            if let Some(sm) = self.sm.as_mut() {
                sm.sent(Some(id));
            }
            self.state
                .metrics
                .message_out(imgate_core::pipeline::Protocol::Xmpp);
        }
        feed_open
    }

    fn max_unacked(&self) -> usize {
        self.state.config.xmpp_sm_max_unacked.max(1)
    }

    /// One delivered message's stanza, appended to `out`.
    fn render_delivery(&self, msg: &Message, out: &mut OutBatch) {
        let opts = DeliveryOptions {
            delayed: msg.server_ts < self.started_ms,
            request_receipt: !matches!(msg.conversation.kind, 1..=3),
        };
        let mut el =
            self.ctx
                .normalizer
                .message_to_stanza(msg, &self.principal.user_id, &self.jid, opts);
        super::muc::use_sender_nick(&self.ctx, msg, &mut el);
        out.push(&el);
    }

    /// Routed stanzas (presence, receipts) ready at once, in one write.
    async fn send_routed(
        &mut self,
        first: Box<Element>,
        routed: &mut mpsc::Receiver<Box<Element>>,
    ) -> bool {
        let mut out = self.conn.batch();
        out.push(&first);
        let mut count = 1u32;
        while (count as usize) < WRITE_BATCH {
            let Ok(el) = routed.try_recv() else { break };
            out.push(&el);
            count += 1;
        }
        if !self.conn.write_batch(out).await {
            return false;
        }
        if let Some(sm) = self.sm.as_mut() {
            for _ in 0..count {
                sm.sent(None);
            }
        }
        true
    }

    async fn send_server_ping(&mut self) -> bool {
        self.ping_counter += 1;
        let ping = Element::new("iq", ns::CLIENT)
            .attr("type", "get")
            .attr("id", format!("srv-ping-{}", self.ping_counter))
            .attr("from", self.domain())
            .attr("to", self.jid.clone())
            .child(Element::new("ping", ns::PING));
        self.send_stanza(&ping, None).await
    }

    /// XEP-0198 elements: enable, ack requests and acks.
    async fn handle_sm(&mut self, el: &Element) -> bool {
        match el.name.as_str() {
            "enable" => {
                if self.sm.is_some() {
                    let failed = Element::new("failed", ns::SM)
                        .child(Element::new("unexpected-request", ns::STANZA_ERRORS));
                    return self.conn.write_element(&failed).await;
                }
                let resumable = matches!(el.get_attr("resume"), Some("true") | Some("1"));
                let guard = self
                    .ctx
                    .sm
                    .enable(
                        &self.principal.user_id,
                        &self.principal.device_id,
                        resumable,
                    )
                    .await;
                let mut enabled = Element::new("enabled", ns::SM).attr("id", guard.id.clone());
                if resumable {
                    enabled = enabled.attr("resume", "true").attr(
                        "max",
                        super::stream_management::RESUME_TIMEOUT
                            .as_secs()
                            .to_string(),
                    );
                }
                self.sm = Some(guard);
                self.conn.write_element(&enabled).await
            }
            "r" => {
                let h = self.sm.as_ref().map(|s| s.h_in).unwrap_or(0);
                let a = Element::new("a", ns::SM).attr("h", h.to_string());
                self.conn.write_element(&a).await
            }
            "a" => {
                let Some(h) = el.get_attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                    return self.sm_protocol_error("2 <a/> needs a numeric h").await;
                };
                let Some(sm) = self.sm.as_mut() else {
                    return true;
                };
                match sm.acked(h) {
                    Some(ids) => {
                        self.ack_in_store(&ids).await;
                        true
                    }
                    None => {
                        self.sm_protocol_error("2 h acknowledges more stanzas than were sent")
                            .await
                    }
                }
            }
            _ => true,
        }
    }

    async fn sm_protocol_error(&mut self, text: &str) -> bool {
        let domain = self.domain();
        self.conn
            .stream_error(&domain, "undefined-condition", text)
            .await;
        false
    }

    pub(super) async fn ack_in_store(&self, ids: &[u64]) {
        for id in ids {
            if let Err(e) = self
                .state
                .ack_delivery(&self.principal.user_id, &self.principal.device_id, *id)
                .await
            {
                tracing::warn!(error = %e, "xmpp: storing a delivery ack failed; it will be redelivered");
            }
        }
    }

    /// Take over a detached SM session (this node's or, see
    /// `sm_cluster`, another's): ack what the client confirmed with `h`,
    /// answer `<resumed>`; the feed then resends the rest (it is still
    /// pending in the store).
    async fn resume(&mut self, mut guard: SmGuard, h: u32) -> bool {
        let ids = match guard.acked(h) {
            Some(ids) => ids,
            None => {
                self.ctx.sm.detach(guard, false);
                return self
                    .sm_protocol_error("2 h acknowledges more stanzas than were sent")
                    .await;
            }
        };
        self.ack_in_store(&ids).await;
        guard.h_out = h;
        guard.unacked.clear();
        let resumed = Element::new("resumed", ns::SM)
            .attr("previd", guard.id.clone())
            .attr("h", guard.h_in.to_string());
        self.sm = Some(guard);
        // A resumed session keeps its presence.
        self.available = true;
        self.ctx.router.set_available(&self.route, true);
        // Resent messages are not "offline" ones.
        self.started_ms = 0;
        self.conn.write_element(&resumed).await
    }
}
