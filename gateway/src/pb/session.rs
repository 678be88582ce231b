//! One PB connection: login first, then requests (send, deliver ack, sync,
//! recall, heartbeat) and server pushes (deliveries, kick), until the peer
//! leaves, idles out, is kicked, or the gateway drains.
//!
//! The session never decides policy: sends go through the pipeline and the
//! result is rendered as a `SendResponse` (echoing the request's seq) only
//! after the store made the message durable.
//!
//! Sends are pipelined ([`SendWindow`], `send_window` in the config): the
//! session keeps reading while earlier sends wait for the store, and
//! answers them in arrival order. Order rules per request:
//! - `SendRequest`: into the window (ids in arrival order, DESIGN §3.4);
//!   with the window full the session stops reading.
//! - `Heartbeat`, `DeliverAck`: answered / applied at once; they need no
//!   order relative to sends (a response is matched by its seq). A
//!   `DeliverAck` counts only for a message of the user's (delivered by
//!   this session, see `delivered`, or one the store lists the user as a
//!   recipient of); any other is refused with Error 253, so that nobody
//!   can tell a sender they got a message they never had.
//! - `SyncRequest`, `RecallRequest`, `ConversationsRequest`,
//!   `MarkReadRequest` (`conversations.rs`), a second `LoginRequest` and
//!   undecodable frames: held (reading stops) until every earlier send is
//!   answered, so a sync or recall right after a send sees it.
//!
//! On kick or drain the sends in flight are answered first (bounded by
//! [`DRAIN_LIMIT`]), then the kick is sent.
//!
//! Memory: the handlers the loop awaits are boxed (`Box::pin(..).await`),
//! so the task's long-lived state, what an idle connection costs, holds
//! only the `select!` branches; the buffers are released while idle
//! (`sessions::idle_buffers`).

use std::net::SocketAddr;
use std::time::Duration;

use super::delivered::DeliveredIds;
use crate::transport::ClientStream;
use futures_util::SinkExt;
use imgate_codecs::pb::{
    commands, proto, PbCodecError, PbFrame, PbFramer, PbNormalizer, PbRequest,
};
use imgate_core::pipeline::{self, Principal, Protocol, SendAck, SendCommand};
use imgate_core::store::DeviceFeed;
use imgate_core::{now_ms, ErrorCode, ImError};
use tokio_util::codec::Framed;

use crate::sessions::{self, idle_buffers, write_deadline, Kick, SendWindow, SessionHandle};
use crate::state::AppState;

type Conn = Framed<ClientStream, PbFramer>;

/// Largest sync page a client may ask for.
const MAX_SYNC_PAGE: usize = 200;
/// How long a kicked or draining session waits for its sends in flight
/// to be answered before it closes.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// A pipelined send's outcome with what its `SendResponse` echoes.
struct SendDone {
    seq: u16,
    client_msg_id: String,
    result: Result<SendAck, ImError>,
}

type Window = SendWindow<SendDone>;

pub async fn handle_connection(stream: ClientStream, peer: SocketAddr, state: AppState) {
    let mut conn = idle_buffers::framed(stream, PbFramer::new(state.config.pb_max_frame));
    let Some((principal, login_seq)) = Box::pin(login_phase(&mut conn, &state)).await else {
        return;
    };
    tracing::debug!(%peer, user = %principal.user_id, device = %principal.device_id, "pb login");
    let Some(live) = Box::pin(open_session(conn, principal, login_seq, &state)).await else {
        return;
    };
    run_session(live, state).await;
}

/// Write one frame; false if the peer is gone or did not read it within
/// the write deadline ([`write_deadline`]).
async fn send(conn: &mut Conn, frame: PbFrame) -> bool {
    write_deadline::bounded(conn.send(frame)).await.is_ok()
}

/// The first frame must be a valid Login; anything else gets Error 244.
/// Returns the principal and the login request's seq.
async fn login_phase(conn: &mut Conn, state: &AppState) -> Option<(Principal, u16)> {
    let timeout = state.login_timeout();
    let first = match tokio::time::timeout(timeout, idle_buffers::next_frame(conn)).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => {
            let _ = send(conn, PbFrame::error(0, e.code(), e.to_string())).await;
            return None;
        }
        Ok(None) | Err(_) => return None,
    };
    let req = match PbRequest::decode(&first) {
        Ok(PbRequest::Login(req)) => req,
        Ok(_) => {
            let _ = send(
                conn,
                PbFrame::error(first.seq, ErrorCode::AuthFailure, "login first"),
            )
            .await;
            return None;
        }
        Err(e) => {
            let _ = send(
                conn,
                PbFrame::error(
                    first.seq,
                    ErrorCode::AuthFailure,
                    format!("login first: {e}"),
                ),
            )
            .await;
            return None;
        }
    };
    match sessions::login(
        state,
        Protocol::Pb,
        &req.user_id,
        &req.token,
        &req.client_id,
    ) {
        Ok(mut p) => {
            // The token's platform wins unless it left it unset.
            if p.platform == imgate_core::model::Platform::Unknown {
                p.platform = imgate_core::model::Platform::from_i32(req.platform);
            }
            Some((p, first.seq))
        }
        Err(e) => {
            let resp = proto::LoginResponse {
                code: e.code.as_i32(),
                server_time: now_ms(),
                last_message_id: 0,
            };
            let _ = send(
                conn,
                PbFrame::response(commands::LOGIN_RESPONSE, first.seq, &resp),
            )
            .await;
            None
        }
    }
}

/// A logged-in connection and what its loop selects on.
struct Live {
    conn: Conn,
    principal: Principal,
    handle: SessionHandle,
    feed: DeviceFeed,
}

/// Register, attach to the store, answer the login; None if that failed
/// (boxed by the caller: its state is not kept for the session's life).
async fn open_session(
    mut conn: Conn,
    principal: Principal,
    login_seq: u16,
    state: &AppState,
) -> Option<Box<Live>> {
    // Register first (kicks what this login replaces), then attach to the
    // store (pending deliveries first, then live).
    let handle = state.sessions.register(&principal);
    let feed = match state
        .store
        .attach_device(&principal.user_id, &principal.device_id)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "pb: cannot attach device");
            let _ = send(
                &mut conn,
                PbFrame::error(0, ErrorCode::ServerError, "store unavailable"),
            )
            .await;
            return None;
        }
    };
    let last = state
        .store
        .last_message_id(&principal.user_id)
        .await
        .unwrap_or(0);
    let ok = proto::LoginResponse {
        code: 0,
        server_time: now_ms(),
        last_message_id: last,
    };
    if !send(
        &mut conn,
        PbFrame::response(commands::LOGIN_RESPONSE, login_seq, &ok),
    )
    .await
    {
        return None;
    }
    Some(Box::new(Live {
        conn,
        principal,
        handle,
        feed,
    }))
}

async fn run_session(live: Box<Live>, state: AppState) {
    let Live {
        mut conn,
        principal,
        mut handle,
        mut feed,
    } = *live;
    let (user, device) = (&principal.user_id, &principal.device_id);
    let idle = Duration::from_secs(state.config.heartbeat_secs.max(1) * 3);
    let mut window = Window::new(state.config.send_window);
    // A request that must wait until the window is drained.
    let mut held: Option<PbFrame> = None;
    let mut delivered = DeliveredIds::default();
    loop {
        let reading = held.is_none() && !window.is_full();
        tokio::select! {
            biased;
            kick = &mut handle.kicked => {
                let kick = kick.unwrap_or(Kick { code: ErrorCode::KickedOff, reason: "kicked".into() });
                Box::pin(answer_in_flight(&mut conn, &mut window)).await;
                let _ = send(&mut conn, PbFrame::kick(kick.code, kick.reason)).await;
                return;
            }
            _ = state.draining() => {
                Box::pin(answer_in_flight(&mut conn, &mut window)).await;
                let _ = send(&mut conn, PbFrame::kick(ErrorCode::ServerError, "server shutting down; reconnect")).await;
                return;
            }
            done = window.next() => {
                if !send(&mut conn, send_response(done)).await {
                    return;
                }
                if window.is_empty() {
                    if let Some(frame) = held.take() {
                        if !Box::pin(handle_frame(&mut conn, &state, &principal, &mut delivered, frame)).await {
                            return;
                        }
                    }
                }
            }
            next = tokio::time::timeout(idle, idle_buffers::next_frame(&mut conn)), if reading => {
                let frame = match next {
                    Err(_) => {
                        tracing::debug!(%user, %device, "pb: idle timeout");
                        return;
                    }
                    Ok(None) => return,
                    Ok(Some(Err(e))) => {
                        Box::pin(answer_in_flight(&mut conn, &mut window)).await;
                        let _ = send(&mut conn, PbFrame::error(0, e.code(), e.to_string())).await;
                        return;
                    }
                    Ok(Some(Ok(frame))) => frame,
                };
                match PbRequest::decode(&frame) {
                    Ok(PbRequest::Send(req)) => {
                        let draft = PbNormalizer::send_request_to_draft(req, principal.user_id.clone());
                        let client_msg_id = draft.client_msg_id.clone();
                        let pipelined = state.send_owned(SendCommand { principal: principal.clone(), draft });
                        let seq = frame.seq;
                        window.push(async move {
                            SendDone { seq, client_msg_id, result: pipelined.await }
                        });
                    }
                    Ok(PbRequest::Heartbeat | PbRequest::DeliverAck(_)) => {
                        if !Box::pin(handle_frame(&mut conn, &state, &principal, &mut delivered, frame)).await {
                            return;
                        }
                    }
                    _ if !window.is_empty() => held = Some(frame),
                    _ => {
                        if !Box::pin(handle_frame(&mut conn, &state, &principal, &mut delivered, frame)).await {
                            return;
                        }
                    }
                }
            }
            msg = next_delivery(&mut feed) => {
                let Some(msg) = msg else {
                    // Replaced by a newer session of this device, or too
                    // slow: the client reconnects and gets what is pending
                    // (told so, as MQTT and XMPP clients are).
                    Box::pin(answer_in_flight(&mut conn, &mut window)).await;
                    let _ = send(&mut conn, PbFrame::kick(ErrorCode::ServerError, "deliveries stopped; reconnect")).await;
                    return;
                };
                let push = PbFrame::push(commands::DELIVER, &PbNormalizer::deliver(&msg));
                if !send(&mut conn, push).await {
                    return;
                }
                delivered.delivered(msg.message_id);
                state.metrics.message_out(Protocol::Pb);
            }
        }
    }
}

async fn next_delivery(feed: &mut DeviceFeed) -> Option<std::sync::Arc<imgate_core::Message>> {
    feed.next().await
}

/// The `SendResponse` of a pipelined send.
fn send_response(done: SendDone) -> PbFrame {
    let resp = match done.result {
        Ok(ack) => proto::SendResponse {
            code: 0,
            message_id: ack.message_id,
            server_ts: ack.server_ts,
            client_msg_id: ack.client_msg_id,
        },
        Err(e) => proto::SendResponse {
            code: e.code.as_i32(),
            message_id: 0,
            server_ts: 0,
            client_msg_id: done.client_msg_id,
        },
    };
    PbFrame::response(commands::SEND_RESPONSE, done.seq, &resp)
}

/// Before the session ends: answer the sends in flight (within
/// [`DRAIN_LIMIT`]; what is left unanswered the client resends, and the
/// resend is deduplicated).
async fn answer_in_flight(conn: &mut Conn, window: &mut Window) {
    let answer_all = async {
        while !window.is_empty() {
            let done = window.next().await;
            if !send(conn, send_response(done)).await {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_LIMIT, answer_all).await;
}

/// Handle one request that is not a send; false closes the connection.
async fn handle_frame(
    conn: &mut Conn,
    state: &AppState,
    principal: &Principal,
    delivered: &mut DeliveredIds,
    frame: PbFrame,
) -> bool {
    let seq = frame.seq;
    let req = match PbRequest::decode(&frame) {
        Ok(r) => r,
        Err(e) => return reject(conn, seq, &e).await,
    };
    match req {
        PbRequest::Login(_) => {
            send(
                conn,
                PbFrame::error(seq, ErrorCode::InvalidData, "already logged in"),
            )
            .await
        }
        PbRequest::Heartbeat => send(conn, PbFrame::heartbeat(seq)).await,
        PbRequest::Send(req) => {
            // The loop pipelines sends and never passes one here; answered
            // in place so that every request has its handler.
            let draft = PbNormalizer::send_request_to_draft(req, principal.user_id.clone());
            let client_msg_id = draft.client_msg_id.clone();
            let result = state
                .send(SendCommand {
                    principal: principal.clone(),
                    draft,
                })
                .await;
            send(
                conn,
                send_response(SendDone {
                    seq,
                    client_msg_id,
                    result,
                }),
            )
            .await
        }
        PbRequest::DeliverAck(ack) => {
            deliver_ack(conn, state, principal, delivered, seq, ack).await
        }
        PbRequest::Sync(req) => {
            let limit = usize::try_from(req.limit).unwrap_or(0);
            let limit = if limit == 0 {
                100
            } else {
                limit.min(MAX_SYNC_PAGE)
            };
            let resp = match state.store.sync(&principal.user_id, req.since, limit).await {
                Ok(page) => fit_sync_page(page, state.config.pb_max_frame),
                Err(e) => proto::SyncResponse {
                    code: ImError::from(e).code.as_i32(),
                    messages: vec![],
                    has_more: false,
                },
            };
            send(conn, PbFrame::response(commands::SYNC_RESPONSE, seq, &resp)).await
        }
        PbRequest::Conversations(req) => {
            let frame = super::conversations::list(state, &principal.user_id, seq, req).await;
            send(conn, frame).await
        }
        PbRequest::MarkRead(req) => {
            let frame = super::conversations::mark_read(state, principal, seq, req).await;
            send(conn, frame).await
        }
        PbRequest::Recall(req) => {
            let window = Duration::from_secs(state.config.recall_window_secs);
            let code = match pipeline::recall(
                state.store.as_ref(),
                req.message_id,
                &principal.user_id,
                false,
                window,
            )
            .await
            {
                Ok(_) => 0,
                Err(e) => e.code.as_i32(),
            };
            send(
                conn,
                PbFrame::response(
                    commands::RECALL_RESPONSE,
                    seq,
                    &proto::RecallResponse { code },
                ),
            )
            .await
        }
    }
}

/// A `DeliverAck`: applied if this session delivered the message or the
/// store says the user is one of its recipients; otherwise refused with
/// Error 253 (nothing acked, no receipt for the sender).
async fn deliver_ack(
    conn: &mut Conn,
    state: &AppState,
    principal: &Principal,
    delivered: &mut DeliveredIds,
    seq: u16,
    ack: proto::DeliverAck,
) -> bool {
    let (user, device, id) = (&principal.user_id, &principal.device_id, ack.message_id);
    let acked = if delivered.take(id) {
        state.ack_delivery(user, device, id).await.map(|()| true)
    } else {
        state.ack_claimed(user, device, id).await
    };
    match acked {
        Ok(true) => true,
        Ok(false) => {
            tracing::debug!(%user, %device, message_id = id, "pb: DeliverAck of a message not delivered to this user refused");
            send(
                conn,
                PbFrame::error(
                    seq,
                    ErrorCode::NotExist,
                    format!("no message {id} for {user}"),
                ),
            )
            .await
        }
        Err(e) => {
            tracing::warn!(error = %e, "pb: storing a delivery ack failed; it will be redelivered");
            true
        }
    }
}

/// A bad request: answer with Error; close if the stream cannot continue.
async fn reject(conn: &mut Conn, seq: u16, e: &PbCodecError) -> bool {
    let sent = send(conn, PbFrame::error(seq, e.code(), e.to_string())).await;
    sent && e.can_continue()
}

/// Keep a sync page under the frame limit: drop messages from the end and
/// say `has_more` so the client asks again from the last one it got.
fn fit_sync_page(page: imgate_core::store::SyncPage, max_frame: usize) -> proto::SyncResponse {
    use prost::Message as _;
    let budget = max_frame.saturating_sub(1024);
    let mut resp = proto::SyncResponse {
        code: 0,
        messages: Vec::with_capacity(page.messages.len()),
        has_more: page.has_more,
    };
    let mut size = 0usize;
    for m in &page.messages {
        let pm = PbNormalizer::message_from_core(m);
        let len = pm.encoded_len() + 8;
        if size + len > budget && !resp.messages.is_empty() {
            resp.has_more = true;
            break;
        }
        size += len;
        resp.messages.push(pm);
    }
    resp
}
