//! One bound XMPP session's state ([`Session`]) and its handlers. The
//! session driver runs it through the XMPP state machine
//! ([`super::protocol`]): what needs no store runs in the machine's
//! callbacks (deliveries, routed stanzas, SM acks and counting, pings,
//! plain messages into the window); what waits on the store (presence,
//! iq, SM enable and resumption, receipts, markers, corrections, ...)
//! runs as a driver task that owns the session while it runs. Either way
//! the handlers render into the session's [`Outbox`].
//!
//! Durability acks for the sender: with XEP-0198 enabled, the server's
//! `<a h>` counts a message only once the pipeline returned, i.e. after
//! the store made it durable. A rejected message gets a `type='error'`
//! reply instead. There is no server-made XEP-0184 receipt: a receipt
//! means "the recipient has it" and is forwarded from the recipient when
//! it sends one.
//!
//! Messages are pipelined: every `<message>` is one entry of the driver's
//! send window ([`Entry`]: a pipeline send, or an entry a handler built)
//! and is counted in `h` and answered (error reply) when it leaves the
//! window, oldest first — `h` always counts a prefix of the stanzas, in
//! stanza order.
//!
//! Delivery acks: a delivered message's id is its `messageUid`; the
//! recipient's XEP-0184 `<received id>` or an XEP-0198 `<a h>` covering it
//! acks it in the store. A client with neither gets unacked messages again
//! at its next login (at-least-once, DESIGN §3).
//!
//! When the session is dropped, however its connection ended, its
//! presence goes (to the user's other resources, contacts and rooms) and
//! its stream-management state is detached (kept for resumption unless
//! the client closed the stream).

use std::future::Future;
use std::sync::Arc;

use imgate_codecs::xmpp::{ns, DeliveryOptions, Element};
use imgate_core::pipeline::{Draft, Principal, SendAck, SendCommand};
use imgate_core::{now_ms, ImError, Message};

use super::errors::{error_element, error_reply};
use super::outbox::Outbox;
use super::router::{RouteHandle, Routed};
use super::stream_management::SmGuard;
use super::XmppContext;
use crate::sessions::driver::TaskFuture;
use crate::sessions::SessionCtx;

/// What an entry of the send window yields.
pub enum Sent {
    /// A client stanza is handled (counted in `h`), with the reply to
    /// write if any (an error, a room's reflection).
    Handled(Option<Element>),
    /// The client's SM ack was stored (not a stanza: not counted).
    Acked,
}

/// A `<message>`'s entry in the send window. Moved by value into the
/// window's one boxed future: boxing `Send` would cost an allocation per
/// message.
#[allow(clippy::large_enum_variant)]
pub enum Entry {
    /// Through the pipeline; [`ContentMeta`] renders the outcome.
    Send(SendCommand, ContentMeta),
    /// An entry a handler built (a recall, a reaction's send after its
    /// lookup, an answer that keeps its place).
    Push(TaskFuture<Sent>),
}

/// What a message's pipeline outcome needs: the stanza (for its error
/// reply) and what follows a stored one (the sender's receipt record, a
/// room's reflection).
pub struct ContentMeta {
    el: Element,
    /// A private message's recipient (its receipt goes back to the sender).
    recipient: Option<String>,
    /// A group message, reflected to the sending resource once stored.
    reflect: Option<Draft>,
    sender: String,
    jid: String,
    ctx: Arc<XmppContext>,
}

impl ContentMeta {
    /// The outcome, as the window yields it.
    pub fn sent(self, result: Result<SendAck, ImError>) -> Sent {
        Sent::Handled(match result {
            Ok(ack) => {
                if let Some(recipient) = self.recipient {
                    self.ctx.receipts.record(
                        ack.message_id,
                        &self.sender,
                        &recipient,
                        &ack.client_msg_id,
                    );
                }
                self.reflect
                    .map(|d| super::muc::reflection(&self.ctx, d, &ack, &self.jid))
            }
            Err(e) => Some(error_reply(&self.el, &self.jid, error_element(&e))),
        })
    }
}

pub struct Session {
    /// What the handlers write.
    pub(super) out: Outbox,
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
    /// The window entry a message handler made (one per message). Only
    /// used through `get_mut` (no locking): the mutex makes the session
    /// `Sync`, which the boxed futures are not, so its handlers may hold
    /// `&self` across an await.
    /// Boxed: an entry is as large as a send, and the session is kept for
    /// the connection's life (only the slow paths, run as tasks, use it).
    entry: std::sync::Mutex<Option<Box<Entry>>>,
    /// What this session may route to others (`routing`).
    pub(super) route_budget: super::routing::RouteBudget,
    /// The resource is bound (or the session resumed): stanzas and
    /// deliveries flow.
    pub(super) bound: bool,
    /// The client closed the stream: its SM state is not kept.
    pub(super) closed_by_client: bool,
}

impl Session {
    pub fn new(
        state: SessionCtx,
        ctx: Arc<XmppContext>,
        principal: Principal,
        websocket: bool,
    ) -> (Session, Routed) {
        let domain = ctx.normalizer.domain();
        let jid = format!("{}@{}/{}", principal.user_id, domain, principal.device_id);
        let (route, routed) = ctx
            .router
            .register(&principal.user_id, &principal.device_id);
        let session = Session {
            out: Outbox::bound(websocket),
            state,
            ctx,
            principal,
            jid,
            route,
            sm: None,
            started_ms: now_ms(),
            available: false,
            ping_counter: 0,
            entry: std::sync::Mutex::new(None),
            route_budget: Default::default(),
            bound: false,
            closed_by_client: false,
        };
        (session, routed)
    }

    pub(super) fn domain(&self) -> String {
        self.ctx.normalizer.domain().to_string()
    }

    /// A stream error; the session ends.
    pub(super) fn stream_error(&mut self, condition: &str, text: &str) {
        let domain = self.domain();
        self.out.stream_error(&domain, condition, text);
    }

    /// One more client stanza handled (a message: durable or refused).
    pub(super) fn count_handled(&mut self) {
        if let Some(sm) = self.sm.as_mut() {
            sm.h_in = sm.h_in.wrapping_add(1);
            // Resumable: the other nodes learn the count (batched).
            self.ctx.sm.handled(sm);
        }
    }

    /// An entry of the window left it: its reply, if any, then it counts
    /// as handled.
    pub(super) fn entry_done(&mut self, sent: Sent) {
        match sent {
            Sent::Handled(reply) => {
                if let Some(reply) = reply {
                    self.send_stanza(&reply, None);
                }
                self.count_handled();
            }
            Sent::Acked => {}
        }
    }

    /// Write a stanza (into the outbox), counting it for stream
    /// management. Always true, so a handler can answer and go on in one
    /// `return self.send_stanza(..)`: the write itself happens in the
    /// driver, which ends the session if the socket fails.
    pub(super) fn send_stanza(&mut self, el: &Element, message_id: Option<u64>) -> bool {
        self.out.push(el);
        if let Some(sm) = self.sm.as_mut() {
            sm.sent(message_id);
        }
        true
    }

    fn entry_slot(&mut self) -> &mut Option<Box<Entry>> {
        match self.entry.get_mut() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(super) fn set_entry(&mut self, entry: Entry) {
        *self.entry_slot() = Some(Box::new(entry));
    }

    /// The entry the last message handler (run as a task) made.
    pub(super) fn take_entry(&mut self) -> Option<Entry> {
        self.entry_slot().take().map(|e| *e)
    }

    /// The message's entry: an answer with no send behind it, in its turn.
    pub(super) fn push_entry(
        &mut self,
        reply: impl Future<Output = Option<Element>> + Send + 'static,
    ) {
        self.set_entry(reply_entry(reply));
    }

    /// The message's entry: `draft` through the pipeline (see
    /// [`Self::draft_entry`]).
    pub(super) fn send_draft(&mut self, el: Element, draft: Draft, follow_up: bool) {
        let entry = self.draft_entry(el, draft, follow_up);
        self.set_entry(entry);
    }

    /// `draft` through the pipeline, answered by its outcome (an error
    /// reply; with `follow_up`, as for a message with content, a receipt
    /// record for a private message and a reflection for a room's).
    pub(super) fn draft_entry(&self, el: Element, draft: Draft, follow_up: bool) -> Entry {
        let private = draft.conversation.kind == 0;
        let recipient = (follow_up && private).then(|| draft.conversation.target.clone());
        let reflect = (follow_up && !private).then(|| draft.clone());
        let meta = ContentMeta {
            el,
            recipient,
            reflect,
            sender: draft.sender.clone(),
            jid: self.jid.clone(),
            ctx: self.ctx.clone(),
        };
        let cmd = SendCommand {
            principal: self.principal.clone(),
            draft,
        };
        Entry::Send(cmd, meta)
    }

    /// Render one delivered message.
    pub(super) fn deliver(&mut self, msg: &Message) {
        let opts = DeliveryOptions {
            delayed: msg.server_ts < self.started_ms,
            request_receipt: !matches!(msg.conversation.kind, 1..=3),
        };
        let mut el =
            self.ctx
                .normalizer
                .message_to_stanza(msg, &self.principal.user_id, &self.jid, opts);
        super::muc::use_sender_nick(&self.ctx, msg, &mut el);
        self.send_stanza(&el, Some(msg.message_id));
    }

    /// After a row of deliveries: one SM ack request for all of them, so
    /// the store learns of the deliveries soon.
    pub(super) fn request_ack(&mut self) {
        if self.sm.is_some() {
            self.out.push(&Element::new("r", ns::SM));
        }
    }

    /// Whether the SM window of unacked deliveries is full, and since when.
    pub(super) fn stalled_since(&mut self) -> Option<std::time::Instant> {
        let max = self.max_unacked();
        self.sm.as_mut().and_then(|sm| sm.full_since(max))
    }

    pub(super) fn max_unacked(&self) -> usize {
        self.state.config.xmpp_sm_max_unacked.max(1)
    }

    pub(super) fn send_server_ping(&mut self) {
        self.ping_counter += 1;
        let ping = Element::new("iq", ns::CLIENT)
            .attr("type", "get")
            .attr("id", format!("srv-ping-{}", self.ping_counter))
            .attr("from", self.domain())
            .attr("to", self.jid.clone())
            .child(Element::new("ping", ns::PING));
        self.send_stanza(&ping, None);
    }

    /// The SM `<r/>`: how many stanzas are handled (the window is empty:
    /// every message before it is counted).
    pub(super) fn answer_ack_request(&mut self) {
        let h = self.sm.as_ref().map(|s| s.h_in).unwrap_or(0);
        self.out
            .push(&Element::new("a", ns::SM).attr("h", h.to_string()));
    }

    /// The client's SM `<a h>`: the message ids it acks (to store), or
    /// the stream error if `h` is bad.
    pub(super) fn client_ack(&mut self, el: &Element) -> Option<Vec<u64>> {
        let Some(h) = el.get_attr("h").and_then(|h| h.parse::<u32>().ok()) else {
            self.stream_error("undefined-condition", "2 <a/> needs a numeric h");
            return None;
        };
        let sm = self.sm.as_mut()?;
        match sm.acked(h) {
            Some(ids) => Some(ids),
            None => {
                self.stream_error(
                    "undefined-condition",
                    "2 h acknowledges more stanzas than were sent",
                );
                None
            }
        }
    }

    /// The stored acks of `ids`, as a window entry.
    pub(super) fn ack_entry(&self, ids: Vec<u64>) -> TaskFuture<Sent> {
        let (state, user, device) = (
            self.state.clone(),
            self.principal.user_id.clone(),
            self.principal.device_id.clone(),
        );
        Box::pin(async move {
            ack_ids(&state, &user, &device, &ids).await;
            Sent::Acked
        })
    }

    /// The resource is bound: the answer to the bind request.
    pub(super) fn bind(&mut self, id: Option<&str>) {
        let result = Element::new("iq", ns::CLIENT)
            .attr("type", "result")
            .attr_opt("id", id)
            .child(
                Element::new("bind", ns::BIND)
                    .child(Element::new("jid", ns::BIND).text(self.jid.clone())),
            );
        self.out.push(&result);
        self.bound = true;
    }

    /// A stanza handled after the messages before it (the window is
    /// empty): presence, iq (counted) or SM `<enable/>`. False ends the
    /// session.
    pub(super) async fn handle_stanza(&mut self, el: Element) -> bool {
        if el.is("enable", ns::SM) {
            return self.enable_sm(&el).await;
        }
        let ok = match el.name.as_str() {
            "presence" => self.handle_presence(&el).await,
            _ => self.handle_iq(&el).await,
        };
        self.count_handled();
        ok
    }

    /// A `<message>` that needs the store before it can go into the
    /// window (a receipt, a correction, a reaction, a retraction, a
    /// marker, a chat state): its [`Entry`] is left in `self.entry`.
    pub(super) async fn handle_message(&mut self, el: Element) {
        self.start_message(el).await;
        if self.entry_slot().is_none() {
            self.push_entry(async { None });
        }
    }

    /// XEP-0198 `<enable/>`.
    async fn enable_sm(&mut self, el: &Element) -> bool {
        if self.sm.is_some() {
            let failed = Element::new("failed", ns::SM)
                .child(Element::new("unexpected-request", ns::STANZA_ERRORS));
            self.out.push(&failed);
            return true;
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
        self.out.push(&enabled);
        true
    }

    pub(super) async fn ack_in_store(&self, ids: &[u64]) {
        ack_ids(
            &self.state,
            &self.principal.user_id,
            &self.principal.device_id,
            ids,
        )
        .await;
    }

    /// XEP-0198 `<resume previd h>` instead of binding: take over the
    /// detached SM session (this node's or, see `sm_cluster`, another's),
    /// ack what the client confirmed with `h`, answer `<resumed>`; the
    /// feed then resends the rest (it is still pending in the store). An
    /// unknown or expired id is answered `<failed>` (the client may bind).
    /// False ends the session.
    pub(super) async fn resume(&mut self, previd: &str, h: u32) -> bool {
        let found = self
            .ctx
            .sm
            .resume(
                previd,
                &self.principal.user_id,
                &self.principal.device_id,
                h,
            )
            .await;
        let Some(mut guard) = found else {
            let failed = Element::new("failed", ns::SM)
                .child(Element::new("item-not-found", ns::STANZA_ERRORS));
            self.out.push(&failed);
            return true;
        };
        let ids = match guard.acked(h) {
            Some(ids) => ids,
            None => {
                self.ctx.sm.detach(guard, false);
                self.stream_error(
                    "undefined-condition",
                    "2 h acknowledges more stanzas than were sent",
                );
                return false;
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
        self.bound = true;
        self.out.push(&resumed);
        true
    }
}

/// A window entry that answers with `reply` in its turn.
pub(super) fn reply_entry(reply: impl Future<Output = Option<Element>> + Send + 'static) -> Entry {
    Entry::Push(Box::pin(async move { Sent::Handled(reply.await) }))
}

impl Drop for Session {
    fn drop(&mut self) {
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
            // Lost, kicked or drained: resumable; closed by the client: not.
            self.ctx.sm.detach(guard, !self.closed_by_client);
        }
    }
}

/// Store the delivery acks of `ids` (an SM `<a h>` or a resumption's `h`).
async fn ack_ids(state: &SessionCtx, user: &str, device: &str, ids: &[u64]) {
    for id in ids {
        if let Err(e) = state.ack_delivery(user, device, *id).await {
            tracing::warn!(error = %e, "xmpp: storing a delivery ack failed; it will be redelivered");
        }
    }
}
