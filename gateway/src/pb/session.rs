//! The PB session as a state machine ([`PbSession`], run by the session
//! driver `sessions::driver`): login first, then requests (send, deliver
//! ack, sync, recall, conversations, mark read, heartbeat) and server
//! pushes (deliveries, kick).
//!
//! The session never decides policy: sends go through the pipeline and the
//! result is rendered as a `SendResponse` (echoing the request's seq) only
//! after the store made the message durable.
//!
//! Sends are pipelined (the driver's window, `send_window` in the config):
//! the driver keeps reading while earlier sends wait for the store, and
//! they are answered in arrival order. Order rules per request:
//! - `SendRequest`: into the window (ids in arrival order, DESIGN §3.4);
//!   with the window full the driver stops reading.
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
//! On kick, drain or a closed feed the sends in flight are answered first
//! (by the driver), then the kick frame is sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imgate_codecs::pb::{
    commands, proto, PbCodecError, PbFrame, PbFramer, PbNormalizer, PbRequest,
};
use imgate_core::model::Platform;
use imgate_core::pipeline::{self, Principal, Protocol, SendAck, SendCommand};
use imgate_core::{now_ms, ErrorCode, ImError, Message};

use super::delivered::DeliveredIds;
use crate::sessions::driver::{self, Credentials, Cx, Ending, LoginStep, Step, TaskFuture};
use crate::sessions::SessionCtx;
use crate::transport::ClientStream;

/// Largest sync page a client may ask for.
const MAX_SYNC_PAGE: usize = 200;

/// A PB connection on the session driver (not an `async fn`: see
/// `driver::run`).
pub fn handle_connection(
    stream: ClientStream,
    peer: SocketAddr,
    ctx: SessionCtx,
) -> impl std::future::Future<Output = ()> + Send {
    let max_frame = ctx.config.pb_max_frame;
    let session = PbSession::new(Duration::from_secs(ctx.config.heartbeat_secs.max(1) * 3));
    driver::run(
        stream,
        peer,
        ctx,
        session,
        PbFramer::new(max_frame),
        PbFramer::new(max_frame),
    )
}

/// One PB session's state.
pub struct PbSession {
    idle: Duration,
    /// The login request's seq and platform, until it is answered.
    login_seq: u16,
    login_platform: i32,
    principal: Option<Principal>,
    /// A request waiting until the window is drained.
    held: Option<PbFrame>,
    delivered: DeliveredIds,
}

/// What a pipelined send's `SendResponse` echoes.
pub struct SendMeta {
    seq: u16,
    client_msg_id: String,
}

/// The PB queries the driver runs off the hot path.
pub enum PbTask {
    /// Answer the login (the user's last message id).
    LoginOk {
        seq: u16,
    },
    Sync {
        seq: u16,
        req: proto::SyncRequest,
    },
    Recall {
        seq: u16,
        req: proto::RecallRequest,
    },
    Conversations {
        seq: u16,
        req: proto::ConversationsRequest,
    },
    MarkRead {
        seq: u16,
        req: proto::MarkReadRequest,
    },
}

type PbCx<'a> = Cx<'a, PbFramer>;

impl PbSession {
    /// A session that closes after `idle` without a frame (three
    /// heartbeat intervals).
    pub fn new(idle: Duration) -> Self {
        PbSession {
            idle,
            login_seq: 0,
            login_platform: 0,
            principal: None,
            held: None,
            delivered: DeliveredIds::default(),
        }
    }

    fn send(&self, seq: u16, req: proto::SendRequest) -> Step<Self> {
        let Some(principal) = &self.principal else {
            return Step::Close;
        };
        let draft = PbNormalizer::send_request_to_draft(req, principal.user_id.clone());
        let client_msg_id = draft.client_msg_id.clone();
        Step::Send(
            Ok(SendCommand {
                principal: principal.clone(),
                draft,
            }),
            SendMeta { seq, client_msg_id },
        )
    }

    /// A `DeliverAck`: one this session delivered is acked as such, any
    /// other is a claim the driver checks against the store.
    fn deliver_ack(&mut self, seq: u16, ack: &proto::DeliverAck) -> Step<Self> {
        Step::Ack {
            message_id: ack.message_id,
            claimed: !self.delivered.take(ack.message_id),
            tag: u32::from(seq),
        }
    }

    /// A request that is not a send (or a held one).
    fn request(&mut self, frame: PbFrame, cx: &mut PbCx<'_>) -> Step<Self> {
        let seq = frame.seq;
        match PbRequest::decode(&frame) {
            Err(e) => reject(cx, seq, &e),
            Ok(PbRequest::Login(_)) => {
                cx.write(PbFrame::error(
                    seq,
                    ErrorCode::InvalidData,
                    "already logged in",
                ));
                Step::Continue
            }
            Ok(PbRequest::Heartbeat) => {
                cx.write(PbFrame::heartbeat(seq));
                Step::Continue
            }
            Ok(PbRequest::Send(req)) => self.send(seq, req),
            Ok(PbRequest::DeliverAck(ack)) => self.deliver_ack(seq, &ack),
            Ok(PbRequest::Sync(req)) => Step::Task(PbTask::Sync { seq, req }),
            Ok(PbRequest::Recall(req)) => Step::Task(PbTask::Recall { seq, req }),
            Ok(PbRequest::Conversations(req)) => Step::Task(PbTask::Conversations { seq, req }),
            Ok(PbRequest::MarkRead(req)) => Step::Task(PbTask::MarkRead { seq, req }),
        }
    }
}

/// A bad request: answer with Error; close if the stream cannot continue.
fn reject(cx: &mut PbCx<'_>, seq: u16, e: &PbCodecError) -> Step<PbSession> {
    cx.write(PbFrame::error(seq, e.code(), e.to_string()));
    if e.can_continue() {
        Step::Continue
    } else {
        Step::Close
    }
}

impl driver::Protocol for PbSession {
    const PROTOCOL: Protocol = Protocol::Pb;
    type Framer = PbFramer;
    type Frame = PbFrame;
    type FrameError = PbCodecError;
    type Encoder = PbFramer;
    type SendMeta = SendMeta;
    type Sent = (SendMeta, Result<SendAck, ImError>);
    type Task = PbTask;
    type TaskOut = PbFrame;

    fn idle_limit(&self) -> Duration {
        self.idle
    }

    fn sent(meta: SendMeta, result: Result<SendAck, ImError>) -> Self::Sent {
        (meta, result)
    }

    /// The first frame must be a valid Login; anything else gets Error 244.
    fn on_login_frame(&mut self, frame: PbFrame, cx: &mut PbCx<'_>) -> LoginStep {
        match PbRequest::decode(&frame) {
            Ok(PbRequest::Login(req)) => {
                self.login_seq = frame.seq;
                self.login_platform = req.platform;
                LoginStep::Check(Credentials {
                    user: req.user_id,
                    credential: req.token,
                    client_id: req.client_id,
                })
            }
            Ok(_) => {
                cx.write(PbFrame::error(
                    frame.seq,
                    ErrorCode::AuthFailure,
                    "login first",
                ));
                LoginStep::Refused
            }
            Err(e) => {
                cx.write(PbFrame::error(
                    frame.seq,
                    ErrorCode::AuthFailure,
                    format!("login first: {e}"),
                ));
                LoginStep::Refused
            }
        }
    }

    fn on_login(&mut self, checked: Result<Principal, ImError>, cx: &mut PbCx<'_>) -> LoginStep {
        match checked {
            Ok(mut p) => {
                // The token's platform wins unless it left it unset.
                if p.platform == Platform::Unknown {
                    p.platform = Platform::from_i32(self.login_platform);
                }
                self.principal = Some(p.clone());
                LoginStep::LoggedIn(p)
            }
            Err(e) => {
                let resp = proto::LoginResponse {
                    code: e.code.as_i32(),
                    server_time: now_ms(),
                    last_message_id: 0,
                };
                cx.write(PbFrame::response(
                    commands::LOGIN_RESPONSE,
                    self.login_seq,
                    &resp,
                ));
                LoginStep::Refused
            }
        }
    }

    fn on_logged_in(&mut self, attached: bool, cx: &mut PbCx<'_>) -> Step<Self> {
        if !attached {
            cx.write(PbFrame::error(
                0,
                ErrorCode::ServerError,
                "store unavailable",
            ));
            return Step::Close;
        }
        Step::Task(PbTask::LoginOk {
            seq: self.login_seq,
        })
    }

    fn on_frame(&mut self, frame: PbFrame, cx: &mut PbCx<'_>) -> Step<Self> {
        match frame.command {
            commands::SEND_REQUEST | commands::HEARTBEAT | commands::DELIVER_ACK
                if !cx.sends_in_flight() =>
            {
                self.request(frame, cx)
            }
            commands::SEND_REQUEST | commands::HEARTBEAT | commands::DELIVER_ACK => {
                // Decoded here; an undecodable one waits like any request
                // that is not a send.
                match PbRequest::decode(&frame) {
                    Ok(PbRequest::Send(req)) => self.send(frame.seq, req),
                    Ok(PbRequest::Heartbeat) => {
                        cx.write(PbFrame::heartbeat(frame.seq));
                        Step::Continue
                    }
                    Ok(PbRequest::DeliverAck(ack)) => self.deliver_ack(frame.seq, &ack),
                    _ => {
                        self.held = Some(frame);
                        Step::Wait
                    }
                }
            }
            _ if cx.sends_in_flight() => {
                self.held = Some(frame);
                Step::Wait
            }
            _ => self.request(frame, cx),
        }
    }

    fn on_bad_frame(&mut self, error: PbCodecError, cx: &mut PbCx<'_>) {
        cx.write(PbFrame::error(0, error.code(), error.to_string()));
    }

    fn on_sends_answered(&mut self, cx: &mut PbCx<'_>) -> Step<Self> {
        match self.held.take() {
            Some(frame) => self.request(frame, cx),
            None => Step::Continue,
        }
    }

    fn on_send_done(&mut self, (meta, result): Self::Sent, cx: &mut PbCx<'_>) -> Step<Self> {
        let resp = match result {
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
                client_msg_id: meta.client_msg_id,
            },
        };
        cx.write(PbFrame::response(commands::SEND_RESPONSE, meta.seq, &resp));
        Step::Continue
    }

    fn on_ack_refused(&mut self, tag: u32, message_id: u64, cx: &mut PbCx<'_>) -> Step<Self> {
        let user = self.principal.as_ref().map_or("", |p| p.user_id.as_str());
        cx.write(PbFrame::error(
            u16::try_from(tag).unwrap_or(0),
            ErrorCode::NotExist,
            format!("no message {message_id} for {user}"),
        ));
        Step::Continue
    }

    fn on_delivery(&mut self, msg: Arc<Message>, cx: &mut PbCx<'_>) -> Step<Self> {
        cx.write(PbFrame::push(
            commands::DELIVER,
            &PbNormalizer::deliver(&msg),
        ));
        self.delivered.delivered(msg.message_id);
        cx.delivered();
        Step::Continue
    }

    fn run_task(task: PbTask, ctx: &SessionCtx, principal: &Principal) -> TaskFuture<PbFrame> {
        let ctx = ctx.clone();
        match task {
            PbTask::LoginOk { seq } => {
                let user = principal.user_id.clone();
                Box::pin(async move {
                    let last = ctx.store.last_message_id(&user).await.unwrap_or(0);
                    let ok = proto::LoginResponse {
                        code: 0,
                        server_time: now_ms(),
                        last_message_id: last,
                    };
                    PbFrame::response(commands::LOGIN_RESPONSE, seq, &ok)
                })
            }
            PbTask::Sync { seq, req } => {
                let user = principal.user_id.clone();
                Box::pin(async move {
                    let limit = usize::try_from(req.limit).unwrap_or(0);
                    let limit = if limit == 0 {
                        100
                    } else {
                        limit.min(MAX_SYNC_PAGE)
                    };
                    let resp = match ctx.store.sync(&user, req.since, limit).await {
                        Ok(page) => fit_sync_page(page, ctx.config.pb_max_frame),
                        Err(e) => proto::SyncResponse {
                            code: ImError::from(e).code.as_i32(),
                            messages: vec![],
                            has_more: false,
                        },
                    };
                    PbFrame::response(commands::SYNC_RESPONSE, seq, &resp)
                })
            }
            PbTask::Recall { seq, req } => {
                let user = principal.user_id.clone();
                Box::pin(async move {
                    let window = Duration::from_secs(ctx.config.recall_window_secs);
                    let code = match pipeline::recall(
                        ctx.store.as_ref(),
                        req.message_id,
                        &user,
                        false,
                        window,
                    )
                    .await
                    {
                        Ok(_) => 0,
                        Err(e) => e.code.as_i32(),
                    };
                    PbFrame::response(
                        commands::RECALL_RESPONSE,
                        seq,
                        &proto::RecallResponse { code },
                    )
                })
            }
            PbTask::Conversations { seq, req } => {
                let user = principal.user_id.clone();
                Box::pin(async move { super::conversations::list(&ctx, &user, seq, req).await })
            }
            PbTask::MarkRead { seq, req } => {
                let principal = principal.clone();
                Box::pin(async move {
                    super::conversations::mark_read(&ctx, &principal, seq, req).await
                })
            }
        }
    }

    fn on_task_done(&mut self, frame: PbFrame, cx: &mut PbCx<'_>) -> Step<Self> {
        cx.write(frame);
        Step::Continue
    }

    fn on_idle(&mut self, _cx: &mut PbCx<'_>) -> Step<Self> {
        Step::Close
    }

    fn on_ending(&mut self, why: Ending, cx: &mut PbCx<'_>) {
        let kick = match why {
            Ending::Kicked(kick) => PbFrame::kick(kick.code, kick.reason),
            Ending::Draining => {
                PbFrame::kick(ErrorCode::ServerError, "server shutting down; reconnect")
            }
            // Replaced by a newer session of this device, or too slow: the
            // client reconnects and gets what is pending (told so, as MQTT
            // and XMPP clients are).
            Ending::FeedClosed => {
                PbFrame::kick(ErrorCode::ServerError, "deliveries stopped; reconnect")
            }
        };
        cx.write(kick);
    }
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

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
