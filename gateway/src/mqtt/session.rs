//! One MQTT connection after CONNECT: the select loop over socket packets,
//! the broker queue (generic messages), the store feed (IM inbox), the
//! kick signal, draining and the keepalive (×1.5, MQTT 5 §3.1.2.10).
//!
//! Every protocol violation closes only this connection, with an MQTT 5
//! DISCONNECT carrying the reason where the client speaks MQTT 5.
//!
//! `im/send` PUBLISHes are pipelined (a [`SendWindow`] of `send_window`
//! sends; with it full the socket is not read). What waits until every
//! `im/send` in flight is answered ([`Held`], reading stops meanwhile):
//! other PUBLISHes of QoS ≥ 1 and 0 alike (their PUBACKs must follow in
//! PUBLISH order, MQTT 5 §4.6), SUBSCRIBE / UNSUBSCRIBE (they change where
//! `im/ack` results go) and DISCONNECT (results are written before the
//! close). PINGREQ and the client's acks (PUBACK / PUBREC / PUBREL /
//! PUBCOMP) are handled at once: they need no order relative to sends.
//! On kick or drain the sends in flight are answered first, within
//! [`DRAIN_LIMIT`].
//!
//! Memory: the handlers the loop awaits are boxed (`Box::pin(..).await`),
//! so the task's long-lived state, what an idle connection costs, holds
//! only the `select!` branches; the buffers are released while idle
//! (`sessions::idle_buffers`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::transport::ClientStream;
use futures_util::SinkExt;
use imgate_codecs::mqtt::{
    encoded_len, reason, Connect, Disconnect, MqttFramer, Packet, Properties, Property, QoS,
    Version,
};
use imgate_core::model::Message;
use imgate_core::pipeline::Principal;
use imgate_core::store::DeviceFeed;
use tokio::sync::Notify;

use super::acl::{self, PublishTarget};
use super::broker::{session_key, will_message, AppMessage, Broker};
use super::connect::{connack, read_connect, Framed_};
use super::im::ImSendDone;
use crate::sessions::SessionCtx;
use crate::sessions::{idle_buffers, write_deadline, Kick, SendWindow, SessionHandle};

/// Inbound QoS 2 messages a client may have unreleased (our Receive
/// Maximum, MQTT 5 §3.2.2.3.3).
pub const SERVER_RECEIVE_MAXIMUM: u16 = 64;
/// Topic aliases a client may use towards us.
pub const SERVER_TOPIC_ALIAS_MAXIMUM: u16 = 16;
/// Keepalive 0 (disabled) still gets a bound on silence.
const NO_KEEPALIVE_IDLE: Duration = Duration::from_secs(24 * 3600);
/// How long a kicked or draining session waits for its `im/send`s in
/// flight to be answered.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// A packet read while `im/send`s were in flight that must wait for them.
pub enum Held {
    /// A PUBLISH outside `im/send`, alias and packet id already checked.
    Publish(imgate_codecs::mqtt::Publish),
    Packet(Packet),
}

/// Why the loop ended.
pub enum End {
    /// DISCONNECT 0x00 from the client: no will.
    Clean,
    /// Anything else: the will (if any) is published.
    Abnormal,
}

pub struct Conn {
    pub framed: Framed_,
    pub v5: bool,
    pub state: SessionCtx,
    pub broker: Arc<Broker>,
    pub principal: Principal,
    pub key: String,
    pub generation: u64,
    pub notify: Arc<Notify>,
    /// The client's Receive Maximum: our outbound QoS ≥ 1 in flight.
    pub client_receive_max: usize,
    pub client_max_packet: Option<usize>,
    pub aliases: HashMap<u16, String>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub qos2_in: HashSet<u16>,
    /// Boxed: most connections have no will.
    pub will: Option<Box<(AppMessage, u32)>>,
    pub feed: Option<DeviceFeed>,
    /// An IM delivery waiting for flow control.
    pub im_held: Option<Arc<Message>>,
    pub expiry_secs: u32,
    /// `im/send`s waiting for the store, oldest first.
    pub window: SendWindow<ImSendDone>,
    /// A packet waiting until `window` is empty (boxed: rarely there).
    pub held: Option<Box<Held>>,
}

pub async fn handle_connection(
    stream: ClientStream,
    peer: SocketAddr,
    state: SessionCtx,
    broker: Arc<Broker>,
) {
    // Boxed: what CONNECT and CONNACK need is not kept for the session's
    // life (an idle connection's memory is mostly its task's state).
    let Some((mut conn, mut handle, keepalive)) = Box::pin(open(stream, peer, state, broker)).await
    else {
        return;
    };
    let end = conn.run(&mut handle.kicked, keepalive).await;
    conn.feed = None;
    let will = match end {
        End::Clean => None,
        End::Abnormal => conn.will.take().map(|w| *w),
    };
    conn.broker.disconnect(&conn.key, conn.generation, will);
}

/// CONNECT, login, broker session, CONNACK: the connection ready to run,
/// its registry handle and its keepalive; None when it ended already.
async fn open(
    stream: ClientStream,
    peer: SocketAddr,
    state: SessionCtx,
    broker: Arc<Broker>,
) -> Option<(Conn, SessionHandle, Duration)> {
    let mut framed = idle_buffers::framed(stream, MqttFramer::new(state.config.mqtt_max_packet));
    let (connect, principal) = Box::pin(read_connect(&mut framed, &state)).await?;
    let v5 = connect.version == Version::V5;
    if !will_allowed(&connect, &principal, &broker) {
        // As a PUBLISH to a reserved topic is refused (0x87), before the
        // session exists (no takeover of the device's live connection).
        let code = if v5 {
            reason::NOT_AUTHORIZED
        } else {
            reason::V4_NOT_AUTHORIZED
        };
        let _ = framed.send(connack(false, code)).await;
        return None;
    }
    let expiry_secs = if v5 {
        connect.properties.session_expiry_interval().unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    };
    // Register first: kicks the connection this one replaces (same
    // device = client-id takeover, or the platform-class rule).
    let handle = state.sessions.register(&principal);
    let key = session_key(&principal.user_id, &principal.device_id);
    let attached = broker.connect(
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
                u32::try_from(state.config.mqtt_max_packet).unwrap_or(u32::MAX),
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
    if write_deadline::bounded(framed.send(ack)).await.is_err() {
        broker.disconnect(&key, attached.generation, None);
        return None;
    }
    tracing::debug!(%peer, user = %principal.user_id, device = %principal.device_id, v5, "mqtt connected");
    let keepalive = match connect.keep_alive {
        0 => NO_KEEPALIVE_IDLE,
        k => Duration::from_millis(u64::from(k) * 1500),
    };
    let will = connect.will.as_ref().map(|w| {
        Box::new((
            will_message(w, &principal.user_id),
            w.properties.will_delay_interval().unwrap_or(0),
        ))
    });
    let conn = Conn {
        framed,
        v5,
        state: state.clone(),
        broker: broker.clone(),
        principal,
        key,
        generation: attached.generation,
        notify: attached.notify,
        client_receive_max: usize::from(
            connect
                .properties
                .receive_maximum()
                .unwrap_or(u16::MAX)
                .max(1),
        ),
        client_max_packet: connect
            .properties
            .maximum_packet_size()
            .map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        aliases: HashMap::new(),
        qos2_in: HashSet::new(),
        will,
        feed: None,
        im_held: None,
        expiry_secs,
        window: SendWindow::new(state.config.send_window),
        held: None,
    };
    Some((conn, handle, keepalive))
}

impl Conn {
    async fn run(
        &mut self,
        kicked: &mut tokio::sync::oneshot::Receiver<Kick>,
        keepalive: Duration,
    ) -> End {
        // Resume: resend what was in flight, restore the IM subscription.
        for p in self.broker.resend_inflight(&self.key, self.v5) {
            if !Box::pin(self.send(p)).await {
                return End::Abnormal;
            }
        }
        if let (Some(_), _) = self.broker.im_subscriptions(&self.key) {
            if !Box::pin(self.attach_inbox()).await {
                return End::Abnormal;
            }
        }
        if !Box::pin(self.pump()).await {
            return End::Abnormal;
        }
        let draining = self.state.clone();
        loop {
            let im_ready = self.feed.is_some()
                && self.im_held.is_none()
                && self.broker.inflight_len(&self.key) < self.client_receive_max;
            let reading = self.held.is_none() && !self.window.is_full();
            tokio::select! {
                biased;
                _ = &mut *kicked => {
                    Box::pin(self.answer_in_flight()).await;
                    Box::pin(self.disconnect(reason::SESSION_TAKEN_OVER)).await;
                    return End::Abnormal;
                }
                _ = draining.draining() => {
                    Box::pin(self.answer_in_flight()).await;
                    Box::pin(self.disconnect(reason::SERVER_SHUTTING_DOWN)).await;
                    return End::Abnormal;
                }
                done = self.window.next() => {
                    if let Err(end) = Box::pin(self.im_send_done(done)).await {
                        return end;
                    }
                    if self.window.is_empty() {
                        let handled = match self.held.take().map(|h| *h) {
                            Some(Held::Publish(p)) => Box::pin(self.route_publish(p)).await,
                            Some(Held::Packet(p)) => Box::pin(self.handle(p)).await,
                            None => Ok(()),
                        };
                        if let Err(end) = handled {
                            return end;
                        }
                    }
                }
                _ = self.notify.notified() => {
                    if self.broker.overflowed(&self.key, self.generation) {
                        Box::pin(self.disconnect(reason::QUOTA_EXCEEDED)).await;
                        self.broker.discard(&self.key);
                        return End::Abnormal;
                    }
                    if !Box::pin(self.flush_held_im()).await || !Box::pin(self.pump()).await {
                        return End::Abnormal;
                    }
                }
                m = next_im(&mut self.feed), if im_ready => {
                    let Some(m) = m else {
                        // The store closed the feed (replaced or too slow):
                        // the client reconnects and gets what is pending.
                        Box::pin(self.disconnect(reason::SERVER_UNAVAILABLE)).await;
                        return End::Abnormal;
                    };
                    if !Box::pin(self.deliver_im(m)).await {
                        return End::Abnormal;
                    }
                }
                next = tokio::time::timeout(keepalive, idle_buffers::next_frame(&mut self.framed)), if reading => {
                    let packet = match next {
                        Err(_) => {
                            Box::pin(self.disconnect(reason::KEEP_ALIVE_TIMEOUT)).await;
                            return End::Abnormal;
                        }
                        Ok(None) => return End::Abnormal,
                        Ok(Some(Err(e))) => {
                            tracing::debug!(user = %self.principal.user_id, error = %e, "mqtt: bad packet; closing");
                            Box::pin(self.answer_in_flight()).await;
                            Box::pin(self.disconnect(e.reason_code())).await;
                            return End::Abnormal;
                        }
                        Ok(Some(Ok(p))) => p,
                    };
                    let waits = matches!(
                        packet,
                        Packet::Subscribe(_) | Packet::Unsubscribe(_) | Packet::Disconnect(_)
                    );
                    if waits && !self.window.is_empty() {
                        self.held = Some(Box::new(Held::Packet(packet)));
                    } else if let Err(end) = Box::pin(self.handle(packet)).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Answer the `im/send`s in flight before the connection ends (within
    /// [`DRAIN_LIMIT`]; an unanswered one is resent by the client and
    /// deduplicated).
    async fn answer_in_flight(&mut self) {
        let limit = tokio::time::Instant::now() + DRAIN_LIMIT;
        while !self.window.is_empty() {
            match tokio::time::timeout_at(limit, self.window.next()).await {
                Ok(done) => {
                    if self.im_send_done(done).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// Send one packet, honouring the client's Maximum Packet Size for
    /// PUBLISH (an oversized one is skipped, MQTT 5 §3.1.2.11.4).
    pub async fn send(&mut self, p: Packet) -> bool {
        self.feed(p).await && write_deadline::bounded(self.framed.flush()).await.is_ok()
    }

    /// Like [`Self::send`] but only buffered (written once the buffer is
    /// large or on the next flush): a batch costs one write, not one each.
    async fn feed(&mut self, p: Packet) -> bool {
        if let (Some(max), Packet::Publish(_)) = (self.client_max_packet, &p) {
            let version = if self.v5 { Version::V5 } else { Version::V4 };
            if encoded_len(&p, version) > max {
                tracing::debug!("mqtt: message above the client's maximum packet size skipped");
                if let Packet::Publish(pb) = &p {
                    if pb.qos != QoS::AtMostOnce {
                        self.broker.complete(&self.key, pb.pkid);
                    }
                }
                return true;
            }
        }
        write_deadline::bounded(self.framed.feed(p)).await.is_ok()
    }

    /// Send queued generic messages within the client's Receive Maximum.
    pub async fn pump(&mut self) -> bool {
        loop {
            let batch = self.broker.take_outgoing(
                &self.key,
                self.generation,
                self.client_receive_max,
                self.v5,
            );
            if batch.is_empty() {
                return write_deadline::bounded(self.framed.flush()).await.is_ok();
            }
            for p in batch {
                if !self.feed(Packet::Publish(p)).await {
                    return false;
                }
            }
        }
    }

    /// MQTT 5: DISCONNECT with a reason before closing; 3.1.1 just closes.
    pub async fn disconnect(&mut self, code: u8) {
        if self.v5 {
            let _ = write_deadline::bounded(self.framed.send(Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties::default(),
            })))
            .await;
        }
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

async fn next_im(feed: &mut Option<DeviceFeed>) -> Option<Arc<Message>> {
    match feed {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}
