//! One MQTT connection as a state machine ([`MqttSession`], run by the
//! session driver `sessions::driver`): CONNECT and CONNACK, then socket
//! packets (`inbound`), the broker queue (generic messages, a wake-up of
//! the driver), the store feed (IM inbox, `im`), kick, draining and the
//! keepalive (×1.5, MQTT 5 §3.1.2.10).
//!
//! Every protocol violation closes only this connection, with an MQTT 5
//! DISCONNECT carrying the reason where the client speaks MQTT 5.
//!
//! `im/send` PUBLISHes are pipelined (the driver's window of
//! `send_window` sends; with it full the socket is not read). What waits
//! until every `im/send` in flight is answered ([`Held`], reading stops
//! meanwhile): other PUBLISHes of QoS ≥ 1 and 0 alike (their PUBACKs must
//! follow in PUBLISH order, MQTT 5 §4.6), SUBSCRIBE / UNSUBSCRIBE (they
//! change where `im/ack` results go) and DISCONNECT (results are written
//! before the close). PINGREQ and the client's acks (PUBACK / PUBREC /
//! PUBREL / PUBCOMP) are handled at once: they need no order relative to
//! sends. On kick or drain the driver answers the sends in flight first.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imgate_codecs::mqtt::{
    encoded_len, reason, Connect, Disconnect, MqttCodecError, MqttFramer, Packet, Properties,
    Property, QoS, Version,
};
use imgate_core::model::Message;
use imgate_core::pipeline::{Principal, Protocol, SendAck};
use imgate_core::ImError;
use tokio::sync::Notify;

use super::acl::{self, PublishTarget};
use super::broker::{session_key, will_message, AppMessage, Broker};
use super::connect::{self, connack};
use super::im::ImSendDone;
use crate::sessions::driver::{self, Credentials, Cx, Ending, LoginStep, Step, TaskFuture};
use crate::sessions::SessionCtx;
use crate::transport::ClientStream;

/// Inbound QoS 2 messages a client may have unreleased (our Receive
/// Maximum, MQTT 5 §3.2.2.3.3).
pub const SERVER_RECEIVE_MAXIMUM: u16 = 64;
/// Topic aliases a client may use towards us.
pub const SERVER_TOPIC_ALIAS_MAXIMUM: u16 = 16;
/// Queued generic messages written before the driver flushes (the rest
/// wait in [`MqttSession::backlog`] for the next wake-up).
const PUMP_FLUSH_AT: usize = 8 * 1024;
/// Keepalive 0 (disabled) still gets a bound on silence.
const NO_KEEPALIVE_IDLE: Duration = Duration::from_secs(24 * 3600);

pub type MqttCx<'a> = Cx<'a, MqttFramer>;
pub type Flow = Step<MqttSession>;

/// A packet read while `im/send`s were in flight that must wait for them.
pub enum Held {
    /// A PUBLISH outside `im/send`, alias and packet id already checked.
    Publish(imgate_codecs::mqtt::Publish),
    Packet(Packet),
}

/// What the session does once the feed asked for is attached.
pub enum AfterAttach {
    Nothing,
    /// Answer the SUBSCRIBE that asked for the inbox.
    SubAck(Packet),
}

/// Queries the driver runs for an MQTT session.
pub enum MqttTask {
    /// `im/read`: the conversation read (`conversations::read_by`).
    Read {
        qos: QoS,
        pkid: u16,
        read: Result<(imgate_core::model::Conversation, u64), ImError>,
    },
    /// A QoS ≥ 1 generic PUBLISH acknowledged once the other nodes hold it.
    Forwarded {
        qos: QoS,
        pkid: u16,
        forwarded: futures_util::future::BoxFuture<'static, Result<(), String>>,
    },
}

/// A query's outcome.
pub enum MqttTaskOut {
    Read {
        qos: QoS,
        pkid: u16,
        code: imgate_core::ErrorCode,
    },
    Forwarded {
        qos: QoS,
        pkid: u16,
        ok: bool,
    },
}

/// An MQTT connection on the session driver (not an `async fn`: see
/// `driver::run`).
pub fn handle_connection(
    stream: ClientStream,
    peer: SocketAddr,
    ctx: SessionCtx,
    broker: Arc<Broker>,
) -> impl std::future::Future<Output = ()> + Send {
    let max = ctx.config.mqtt_max_packet;
    let session = MqttSession::new(broker, max);
    driver::run(
        stream,
        peer,
        ctx,
        session,
        MqttFramer::new(max),
        MqttFramer::new(max),
    )
}

pub struct MqttSession {
    pub broker: Arc<Broker>,
    max_packet: usize,
    logged_in: bool,
    /// The CONNECT, until the session is set up (boxed: not kept).
    connect: Option<Box<Connect>>,
    pub v5: bool,
    pub principal: Principal,
    pub key: String,
    pub generation: u64,
    notify: Option<Arc<Notify>>,
    keepalive: Duration,
    /// The client's Receive Maximum: our outbound QoS ≥ 1 in flight.
    pub client_receive_max: usize,
    pub client_max_packet: Option<usize>,
    pub aliases: HashMap<u16, String>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub qos2_in: HashSet<u16>,
    /// Boxed: most connections have no will.
    pub will: Option<Box<(AppMessage, u32)>>,
    /// The inbox feed is attached (the driver holds it).
    pub feed_attached: bool,
    /// An IM delivery waiting for flow control.
    pub im_held: Option<Arc<Message>>,
    pub expiry_secs: u32,
    /// A packet waiting until the window is empty (boxed: rarely there).
    pub held: Option<Box<Held>>,
    /// Queued generic messages taken from the broker, not written yet.
    backlog: Option<std::vec::IntoIter<imgate_codecs::mqtt::Publish>>,
    pub after_attach: AfterAttach,
    /// DISCONNECT 0x00 from the client: no will.
    pub clean: bool,
}

impl MqttSession {
    pub fn new(broker: Arc<Broker>, max_packet: usize) -> Self {
        MqttSession {
            broker,
            max_packet,
            logged_in: false,
            connect: None,
            v5: false,
            principal: Principal {
                user_id: String::new(),
                device_id: String::new(),
                platform: imgate_core::model::Platform::Unknown,
                protocol: Protocol::Mqtt,
                admin: false,
            },
            key: String::new(),
            generation: 0,
            notify: None,
            keepalive: NO_KEEPALIVE_IDLE,
            client_receive_max: usize::from(u16::MAX),
            client_max_packet: None,
            aliases: HashMap::new(),
            qos2_in: HashSet::new(),
            will: None,
            feed_attached: false,
            im_held: None,
            expiry_secs: 0,
            held: None,
            backlog: None,
            after_attach: AfterAttach::Nothing,
            clean: false,
        }
    }

    /// Write one packet, honouring the client's Maximum Packet Size for
    /// PUBLISH (an oversized one is skipped, MQTT 5 §3.1.2.11.4).
    pub fn send(&mut self, p: Packet, cx: &mut MqttCx<'_>) {
        if let (Some(max), Packet::Publish(_)) = (self.client_max_packet, &p) {
            let version = if self.v5 { Version::V5 } else { Version::V4 };
            if encoded_len(&p, version) > max {
                tracing::debug!("mqtt: message above the client's maximum packet size skipped");
                if let Packet::Publish(pb) = &p {
                    if pb.qos != QoS::AtMostOnce {
                        self.broker.complete(&self.key, pb.pkid);
                    }
                }
                return;
            }
        }
        cx.write(p);
    }

    /// Write queued generic messages within the client's Receive Maximum;
    /// past [`PUMP_FLUSH_AT`] bytes the rest waits for the next wake-up
    /// (after the driver flushed), so the write buffer stays bounded.
    pub fn pump(&mut self, cx: &mut MqttCx<'_>) {
        loop {
            let mut batch = match self.backlog.take() {
                Some(batch) => batch,
                None => {
                    let batch = self.broker.take_outgoing(
                        &self.key,
                        self.generation,
                        self.client_receive_max,
                        self.v5,
                    );
                    if batch.is_empty() {
                        return;
                    }
                    batch.into_iter()
                }
            };
            while let Some(p) = batch.next() {
                self.send(Packet::Publish(p), cx);
                if cx.buffered() >= PUMP_FLUSH_AT {
                    if batch.len() > 0 {
                        self.backlog = Some(batch);
                    }
                    if let Some(notify) = &self.notify {
                        notify.notify_one();
                    }
                    return;
                }
            }
        }
    }

    /// MQTT 5: DISCONNECT with a reason before closing; 3.1.1 just closes.
    pub fn disconnect(&mut self, code: u8, cx: &mut MqttCx<'_>) {
        if self.v5 {
            cx.write(Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties::default(),
            }));
        }
    }

    /// Close with a reason (MQTT 5).
    pub fn fail(&mut self, code: u8, cx: &mut MqttCx<'_>) -> Flow {
        self.disconnect(code, cx);
        Step::Close
    }

    /// Set up the broker session and answer CONNECT (registered already).
    fn set_up(&mut self, connect: Connect, cx: &mut MqttCx<'_>) -> Flow {
        let v5 = self.v5;
        let expiry_secs = if v5 {
            connect.properties.session_expiry_interval().unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        let principal = &self.principal;
        let key = session_key(&principal.user_id, &principal.device_id);
        let attached = self.broker.connect(
            &principal.user_id,
            &principal.device_id,
            connect.clean_start,
            expiry_secs,
        );
        let mut ack_props = Properties::default();
        if v5 {
            ack_props
                .push(Property::ReceiveMaximum(SERVER_RECEIVE_MAXIMUM))
                .push(Property::TopicAliasMaximum(SERVER_TOPIC_ALIAS_MAXIMUM))
                .push(Property::RetainAvailable(1))
                .push(Property::WildcardSubscriptionAvailable(1))
                .push(Property::SubscriptionIdentifierAvailable(1))
                .push(Property::SharedSubscriptionAvailable(1))
                .push(Property::MaximumPacketSize(
                    u32::try_from(self.max_packet).unwrap_or(u32::MAX),
                ));
            if connect.client_id.is_empty() {
                ack_props.push(Property::AssignedClientIdentifier(
                    principal.device_id.clone(),
                ));
            }
        }
        let mut ack = connack(attached.session_present, reason::SUCCESS);
        if let Packet::ConnAck(a) = &mut ack {
            a.properties = ack_props;
        }
        cx.write(ack);
        tracing::debug!(v5, "mqtt connected");
        self.keepalive = match connect.keep_alive {
            0 => NO_KEEPALIVE_IDLE,
            k => Duration::from_millis(u64::from(k) * 1500),
        };
        self.will = connect.will.as_ref().map(|w| {
            Box::new((
                will_message(w, &principal.user_id),
                w.properties.will_delay_interval().unwrap_or(0),
            ))
        });
        self.client_receive_max = usize::from(
            connect
                .properties
                .receive_maximum()
                .unwrap_or(u16::MAX)
                .max(1),
        );
        self.client_max_packet = connect
            .properties
            .maximum_packet_size()
            .map(|m| usize::try_from(m).unwrap_or(usize::MAX));
        self.key = key;
        self.generation = attached.generation;
        self.notify = Some(attached.notify);
        self.expiry_secs = expiry_secs;
        self.logged_in = true;
        // Resume: resend what was in flight, restore the IM subscription.
        for p in self.broker.resend_inflight(&self.key, self.v5) {
            self.send(p, cx);
        }
        self.pump(cx);
        if let (Some(_), _) = self.broker.im_subscriptions(&self.key) {
            self.after_attach = AfterAttach::Nothing;
            return Step::AttachFeed;
        }
        Step::Continue
    }
}

impl driver::Protocol for MqttSession {
    const PROTOCOL: Protocol = Protocol::Mqtt;
    type Framer = MqttFramer;
    type Frame = Packet;
    type FrameError = MqttCodecError;
    type Encoder = MqttFramer;
    type SendMeta = ImSendDone;
    type Sent = (ImSendDone, Result<SendAck, ImError>);
    type Task = MqttTask;
    type TaskOut = MqttTaskOut;

    fn idle_limit(&self) -> Duration {
        self.keepalive
    }

    fn may_deliver(&self) -> bool {
        self.im_held.is_none() && self.broker.inflight_len(&self.key) < self.client_receive_max
    }

    fn attach_at_login(&self) -> bool {
        false
    }

    fn sent(meta: ImSendDone, result: Result<SendAck, ImError>) -> Self::Sent {
        (meta, result)
    }

    fn on_login_frame(&mut self, frame: Packet, cx: &mut MqttCx<'_>) -> LoginStep {
        let Packet::Connect(first) = frame else {
            return LoginStep::Refused;
        };
        self.v5 = first.version == Version::V5;
        *cx.encoder() = MqttFramer::with_version(self.max_packet, first.version);
        if let Some(refusal) = connect::refusal(&first) {
            cx.write(refusal);
            return LoginStep::Refused;
        }
        let (user, credential) = connect::credentials(&first);
        let client_id = first.client_id.clone();
        self.connect = Some(Box::new(first));
        LoginStep::Check(Credentials {
            user,
            credential,
            client_id,
        })
    }

    fn on_login(&mut self, checked: Result<Principal, ImError>, cx: &mut MqttCx<'_>) -> LoginStep {
        let Some(connect) = self.connect.as_deref() else {
            return LoginStep::Refused;
        };
        let checked = match checked {
            Ok(_) if connect.username.as_deref().unwrap_or_default().is_empty() => Err(
                ImError::new(imgate_core::ErrorCode::AuthFailure, "no user name"),
            ),
            other => other,
        };
        let principal = match checked {
            Ok(p) => p,
            Err(e) => {
                cx.write(connect::login_refused(connect, &e));
                return LoginStep::Refused;
            }
        };
        if !will_allowed(connect, &principal, &self.broker) {
            // As a PUBLISH to a reserved topic is refused (0x87), before
            // the session exists (no takeover of the device's live
            // connection).
            let code = if self.v5 {
                reason::NOT_AUTHORIZED
            } else {
                reason::V4_NOT_AUTHORIZED
            };
            cx.write(connack(false, code));
            return LoginStep::Refused;
        }
        self.principal = principal.clone();
        LoginStep::LoggedIn(principal)
    }

    fn on_logged_in(&mut self, _attached: bool, cx: &mut MqttCx<'_>) -> Flow {
        match self.connect.take() {
            Some(connect) => self.set_up(*connect, cx),
            None => Step::Close,
        }
    }

    fn on_attached(&mut self, attached: bool, cx: &mut MqttCx<'_>) -> Flow {
        if !attached {
            self.disconnect(reason::SERVER_UNAVAILABLE, cx);
            return Step::Close;
        }
        self.feed_attached = true;
        match std::mem::replace(&mut self.after_attach, AfterAttach::Nothing) {
            AfterAttach::Nothing => Step::Continue,
            AfterAttach::SubAck(suback) => {
                cx.write(suback);
                self.pump(cx);
                Step::Continue
            }
        }
    }

    fn on_frame(&mut self, packet: Packet, cx: &mut MqttCx<'_>) -> Flow {
        let waits = matches!(
            packet,
            Packet::Subscribe(_) | Packet::Unsubscribe(_) | Packet::Disconnect(_)
        );
        if waits && cx.sends_in_flight() {
            self.held = Some(Box::new(Held::Packet(packet)));
            return Step::Wait;
        }
        self.handle(packet, cx)
    }

    fn on_bad_frame(&mut self, error: MqttCodecError, cx: &mut MqttCx<'_>) {
        if !self.logged_in {
            if let Some((version, refusal)) = connect::bad_connect(&error) {
                *cx.encoder() = MqttFramer::with_version(self.max_packet, version);
                cx.write(refusal);
            }
            return;
        }
        tracing::debug!(user = %self.principal.user_id, %error, "mqtt: bad packet; closing");
        self.disconnect(error.reason_code(), cx);
    }

    fn on_sends_answered(&mut self, cx: &mut MqttCx<'_>) -> Flow {
        match self.held.take().map(|h| *h) {
            Some(Held::Publish(p)) => self.route_publish(p, cx),
            Some(Held::Packet(p)) => self.handle(p, cx),
            None => Step::Continue,
        }
    }

    fn on_send_done(&mut self, (meta, result): Self::Sent, cx: &mut MqttCx<'_>) -> Flow {
        self.im_send_done(meta, result, cx)
    }

    fn on_ack_refused(&mut self, _tag: u32, _message_id: u64, _cx: &mut MqttCx<'_>) -> Flow {
        // MQTT acks name packet ids this session delivered: never claims.
        Step::Continue
    }

    fn on_delivery(&mut self, msg: Arc<Message>, cx: &mut MqttCx<'_>) -> Flow {
        self.deliver_im(msg, cx)
    }

    fn run_task(
        task: MqttTask,
        ctx: &SessionCtx,
        principal: &Principal,
    ) -> TaskFuture<MqttTaskOut> {
        match task {
            MqttTask::Read { qos, pkid, read } => {
                let ctx = ctx.clone();
                let principal = principal.clone();
                Box::pin(async move {
                    let code = match read {
                        Ok((conv, upto)) => {
                            match crate::conversations::read_by(&ctx, &principal, &conv, upto).await
                            {
                                Ok(_) => imgate_core::ErrorCode::Success,
                                Err(e) => e.code,
                            }
                        }
                        Err(e) => e.code,
                    };
                    MqttTaskOut::Read { qos, pkid, code }
                })
            }
            MqttTask::Forwarded {
                qos,
                pkid,
                forwarded,
            } => Box::pin(async move {
                let ok = match forwarded.await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "mqtt: publish not forwarded to the other nodes");
                        false
                    }
                };
                MqttTaskOut::Forwarded { qos, pkid, ok }
            }),
        }
    }

    fn on_task_done(&mut self, out: MqttTaskOut, cx: &mut MqttCx<'_>) -> Flow {
        match out {
            MqttTaskOut::Read { qos, pkid, code } => {
                let reason = if self.v5 {
                    reason::for_error_code(code)
                } else {
                    reason::SUCCESS
                };
                self.ack_publish(qos, pkid, reason, cx)
            }
            MqttTaskOut::Forwarded { qos, pkid, ok } => {
                if ok {
                    self.ack_publish(qos, pkid, reason::SUCCESS, cx)
                } else if !self.v5 {
                    // 3.1.1 cannot refuse: close; the client resends.
                    Step::Close
                } else {
                    self.ack_publish(qos, pkid, reason::UNSPECIFIED_ERROR, cx)
                }
            }
        }
    }

    fn on_idle(&mut self, cx: &mut MqttCx<'_>) -> Flow {
        self.fail(reason::KEEP_ALIVE_TIMEOUT, cx)
    }

    fn on_ending(&mut self, why: Ending, cx: &mut MqttCx<'_>) {
        let code = match why {
            Ending::Kicked(_) => reason::SESSION_TAKEN_OVER,
            Ending::Draining => reason::SERVER_SHUTTING_DOWN,
            // The store closed the feed (replaced or too slow): the client
            // reconnects and gets what is pending.
            Ending::FeedClosed => reason::SERVER_UNAVAILABLE,
        };
        self.disconnect(code, cx);
    }

    fn wake_source(&self) -> Option<Arc<Notify>> {
        self.notify.clone()
    }

    /// The broker queued messages for this session (or it overflowed).
    fn on_wake(&mut self, cx: &mut MqttCx<'_>) -> Flow {
        if self.broker.overflowed(&self.key, self.generation) {
            self.disconnect(reason::QUOTA_EXCEEDED, cx);
            self.broker.discard(&self.key);
            return Step::Close;
        }
        let step = match self.im_held.take() {
            Some(m) => self.deliver_im(m, cx),
            None => Step::Continue,
        };
        self.pump(cx);
        step
    }

    fn finish(&mut self) {
        if !self.logged_in {
            return;
        }
        self.logged_in = false;
        let will = if self.clean {
            None
        } else {
            self.will.take().map(|w| *w)
        };
        self.broker.disconnect(&self.key, self.generation, will);
    }
}

/// A will may go where a PUBLISH of its client may: generic topics only
/// (the ACL's `publish_target`; a will cannot be an `im/send`, which
/// needs the IM pipeline's answer) that the topic ACL lets this user and
/// device write (retained: as a retained PUBLISH). Its rate and retained
/// limits apply when it fires (`Broker::publish_will`).
fn will_allowed(connect: &Connect, principal: &Principal, broker: &Broker) -> bool {
    let Some(w) = &connect.will else {
        return true;
    };
    if acl::publish_target(&w.topic) != PublishTarget::Generic {
        tracing::debug!(user = %principal.user_id, topic = %w.topic, "mqtt: will to a reserved topic refused");
        return false;
    }
    let writable = broker.acl().is_none_or(|a| {
        a.may_publish(&principal.user_id, &principal.device_id, &w.topic, w.retain)
    });
    if !writable {
        tracing::debug!(user = %principal.user_id, topic = %w.topic, "mqtt: will outside the topic ACL refused");
    }
    writable
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
