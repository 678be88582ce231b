//! Packets from the client after CONNECT: PUBLISH (generic or `im/send`),
//! the QoS 1/2 acks of both directions, SUBSCRIBE / UNSUBSCRIBE, PINGREQ
//! and DISCONNECT, as steps for the session driver. A protocol violation
//! closes this connection only (`Step::Close`, after a DISCONNECT with
//! the reason for MQTT 5).

use imgate_codecs::mqtt::{
    reason, topic, Packet, Properties, Property, PubResp, PubRespKind, Publish, QoS, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};
use imgate_core::now_ms;

use super::acl::{self, PublishTarget, SubscribeTarget};
use super::broker::{AppMessage, Inflight, OverQuota, PublishRefused};
use super::im::im_acked;
use super::session::{
    AfterAttach, Flow, Held, MqttCx, MqttSession, MqttTask, SERVER_RECEIVE_MAXIMUM,
    SERVER_TOPIC_ALIAS_MAXIMUM,
};
use crate::sessions::driver::Step;

/// What a client's PUBLISH properties may not carry: a Subscription
/// Identifier [MQTT-3.3.4-6], a Response Topic that is no topic name
/// (wildcards [MQTT-3.3.2-14], or empty [MQTT-4.7.3-1]). Each is a
/// Protocol Error (DISCONNECT 0x82).
fn publish_protocol_error(props: &Properties) -> Option<&'static str> {
    if props
        .0
        .iter()
        .any(|p| matches!(p, Property::SubscriptionIdentifier(_)))
    {
        return Some("subscription identifier from a client");
    }
    match props.response_topic() {
        Some(t) if !topic::valid_topic_name(&t) => Some("response topic is not a topic name"),
        _ => None,
    }
}

impl MqttSession {
    pub fn handle(&mut self, packet: Packet, cx: &mut MqttCx<'_>) -> Flow {
        match packet {
            Packet::Publish(p) => self.on_publish(p, cx),
            Packet::PubResp(r) => self.on_pub_resp(r, cx),
            Packet::Subscribe(s) => self.on_subscribe(s, cx),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u, cx),
            Packet::PingReq => self.reply(Packet::PingResp, cx),
            Packet::Disconnect(d) => {
                if let Some(e) = d.properties.session_expiry_interval() {
                    if self.expiry_secs == 0 && e != 0 {
                        return self.fail(reason::PROTOCOL_ERROR, cx);
                    }
                    self.expiry_secs = e;
                    self.broker.connect_expiry(&self.key, self.generation, e);
                }
                self.clean = d.reason != reason::DISCONNECT_WITH_WILL;
                Step::Close
            }
            // A second CONNECT, server-only packets, AUTH without
            // enhanced authentication: protocol errors.
            other => {
                tracing::debug!(
                    packet = other.type_name(),
                    "mqtt: unexpected packet; closing"
                );
                self.fail(reason::PROTOCOL_ERROR, cx)
            }
        }
    }

    fn reply(&mut self, p: Packet, cx: &mut MqttCx<'_>) -> Flow {
        self.send(p, cx);
        Step::Continue
    }

    /// Acknowledge an inbound PUBLISH (PUBACK / PUBREC) with a reason.
    pub fn ack_publish(&mut self, qos: QoS, pkid: u16, code: u8, cx: &mut MqttCx<'_>) -> Flow {
        let kind = match qos {
            QoS::AtMostOnce => return Step::Continue,
            QoS::AtLeastOnce => PubRespKind::PubAck,
            QoS::ExactlyOnce => {
                if code < 0x80 {
                    self.qos2_in.insert(pkid);
                }
                PubRespKind::PubRec
            }
        };
        let mut r = PubResp::new(kind, pkid);
        if self.v5 {
            r.reason = code;
        }
        self.reply(Packet::PubResp(r), cx)
    }

    fn on_publish(&mut self, mut p: Publish, cx: &mut MqttCx<'_>) -> Flow {
        if let Some(why) = publish_protocol_error(&p.properties) {
            tracing::debug!(user = %self.principal.user_id, why, "mqtt: publish refused");
            return self.fail(reason::PROTOCOL_ERROR, cx);
        }
        // Topic alias (MQTT 5 §3.3.2.3.4), inbound.
        if let Some(alias) = p.properties.topic_alias() {
            if alias == 0 || alias > SERVER_TOPIC_ALIAS_MAXIMUM {
                return self.fail(reason::TOPIC_ALIAS_INVALID, cx);
            }
            if p.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => return self.fail(reason::PROTOCOL_ERROR, cx),
                }
            } else {
                self.aliases.insert(alias, p.topic.clone());
            }
        } else if p.topic.is_empty() {
            return self.fail(reason::PROTOCOL_ERROR, cx);
        }
        if p.qos == QoS::ExactlyOnce && self.qos2_in.contains(&p.pkid) {
            if p.dup {
                // A retransmission: acknowledge again, deliver nothing new.
                return self.ack_publish(p.qos, p.pkid, reason::SUCCESS, cx);
            }
            // Packet id reuse before PUBREL.
            return self.fail(reason::PROTOCOL_ERROR, cx);
        }
        if p.qos == QoS::ExactlyOnce && self.qos2_in.len() >= usize::from(SERVER_RECEIVE_MAXIMUM) {
            return self.fail(reason::RECEIVE_MAXIMUM_EXCEEDED, cx);
        }
        match acl::publish_target(&p.topic) {
            PublishTarget::ImSend => self.im_send(p),
            // Its PUBACK must follow those of the `im/send`s in flight
            // (MQTT 5 §4.6): it waits until they are answered.
            _ if cx.sends_in_flight() => {
                self.held = Some(Box::new(Held::Publish(p)));
                Step::Wait
            }
            _ => self.route_publish(p, cx),
        }
    }

    /// A PUBLISH whose topic alias and packet id were checked: to the IM
    /// pipeline, refused, or to the generic broker.
    pub fn route_publish(&mut self, p: Publish, cx: &mut MqttCx<'_>) -> Flow {
        match acl::publish_target(&p.topic) {
            PublishTarget::ImSend => self.im_send(p),
            PublishTarget::ImRead => self.im_read(p),
            PublishTarget::Forbidden => {
                tracing::debug!(topic = %p.topic, "mqtt: publish to a reserved topic refused");
                if !self.v5 && p.qos != QoS::AtMostOnce {
                    // 3.1.1 cannot refuse a PUBLISH: close (§4.8 / MQTT-3.3.5-2).
                    return Step::Close;
                }
                self.ack_publish(p.qos, p.pkid, reason::NOT_AUTHORIZED, cx)
            }
            PublishTarget::Generic if !self.acl_may_publish(&p) => {
                // MQTT 5: 0x87 in PUBACK / PUBREC, QoS 0 dropped. 3.1.1
                // cannot refuse; closing is allowed [MQTT-3.3.5-2], but as
                // mosquitto does it is acked and dropped: a client closed
                // over an unacked QoS >= 1 message resends it forever.
                let code = if self.v5 {
                    reason::NOT_AUTHORIZED
                } else {
                    reason::SUCCESS
                };
                self.ack_publish(p.qos, p.pkid, code, cx)
            }
            PublishTarget::Generic => self.generic_publish(p, cx),
        }
    }

    /// The topic ACL's verdict on a generic PUBLISH (logged when refused).
    fn acl_may_publish(&self, p: &Publish) -> bool {
        self.broker.acl().is_none_or(|a| {
            a.may_publish(
                &self.principal.user_id,
                &self.principal.device_id,
                &p.topic,
                p.retain,
            )
        })
    }

    /// The topic ACL's verdict on a generic SUBSCRIBE filter.
    fn acl_may_subscribe(&self, filter: &str) -> bool {
        let ok = self.broker.acl().is_none_or(|a| {
            a.may_subscribe(&self.principal.user_id, &self.principal.device_id, filter)
        });
        if !ok {
            tracing::debug!(user = %self.principal.user_id, %filter, "mqtt: topic ACL refuses the subscription");
        }
        ok
    }

    fn generic_publish(&mut self, p: Publish, cx: &mut MqttCx<'_>) -> Flow {
        if !self.broker.within_rate(&self.principal.user_id) {
            if p.qos == QoS::AtMostOnce {
                return Step::Continue;
            }
            if !self.v5 {
                return Step::Close;
            }
            return self.ack_publish(p.qos, p.pkid, reason::QUOTA_EXCEEDED, cx);
        }
        let expires_at_ms = p
            .properties
            .message_expiry_interval()
            .map(|s| now_ms() + i64::from(s) * 1000);
        let p_topic = p.topic.clone();
        let msg = AppMessage {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties.forwardable(),
            expires_at_ms,
            owner: Some(self.principal.user_id.clone()),
        };
        // A retained message over a limit: QoS 0 is delivered, not
        // retained (there is no answer to carry a refusal); QoS >= 1 is
        // refused and not delivered.
        let over_quota = if p.qos == QoS::AtMostOnce {
            OverQuota::Unretain
        } else {
            OverQuota::Refuse
        };
        let (matched, forwarded) = match self.broker.publish_forwarded(
            Some(&self.key),
            msg,
            over_quota,
        ) {
            Ok(p) => p,
            Err(PublishRefused::Quota(_)) => {
                if !self.v5 {
                    // 3.1.1 has no negative PUBACK, and a PUBACK would
                    // tell the client its message was retained (the
                    // server MUST store it, MQTT-3.3.1-5): close, as for
                    // the rate limit and the reserved topics. Nothing
                    // was delivered; a resend after the reconnect is
                    // closed the same way until the user clears
                    // retained messages (the log says why).
                    return Step::Close;
                }
                return self.ack_publish(p.qos, p.pkid, reason::QUOTA_EXCEEDED, cx);
            }
            Err(PublishRefused::NotSaved(e)) => {
                // Not saved for a persistent subscriber: never acked as
                // accepted (the client keeps it and resends).
                tracing::warn!(error = %e, topic = %p_topic, "mqtt: publish not saved; refused");
                if p.qos == QoS::AtMostOnce {
                    return Step::Continue;
                }
                if !self.v5 {
                    return Step::Close;
                }
                return self.ack_publish(p.qos, p.pkid, reason::UNSPECIFIED_ERROR, cx);
            }
        };
        let code = match forwarded {
            // Other nodes: acknowledged once the bus holds it (subscribers
            // elsewhere are unknown here, so no 0x10).
            Some(forwarded) if p.qos != QoS::AtMostOnce => {
                tracing::trace!(topic = %p_topic, "mqtt: waiting for the other nodes");
                return Step::Task(MqttTask::Forwarded {
                    qos: p.qos,
                    pkid: p.pkid,
                    forwarded,
                });
            }
            Some(f) => {
                tokio::spawn(async move {
                    if let Err(e) = f.await {
                        tracing::debug!(error = %e, "mqtt: QoS 0 publish not forwarded to the other nodes");
                    }
                });
                reason::SUCCESS
            }
            None if matched == 0 => reason::NO_MATCHING_SUBSCRIBERS,
            None => reason::SUCCESS,
        };
        self.ack_publish(p.qos, p.pkid, code, cx)
    }

    fn on_pub_resp(&mut self, r: PubResp, cx: &mut MqttCx<'_>) -> Flow {
        match r.kind {
            PubRespKind::PubAck | PubRespKind::PubComp => {
                if let Some(Inflight::Im { message_id }) = self.broker.complete(&self.key, r.pkid) {
                    return im_acked(message_id);
                }
                Step::Continue
            }
            PubRespKind::PubRec => {
                let known = self.broker.released(&self.key, r.pkid);
                if r.reason >= 0x80 {
                    self.broker.complete(&self.key, r.pkid);
                    return Step::Continue;
                }
                let mut rel = PubResp::new(PubRespKind::PubRel, r.pkid);
                if !known && self.v5 {
                    rel.reason = reason::PACKET_ID_NOT_FOUND;
                }
                self.reply(Packet::PubResp(rel), cx)
            }
            PubRespKind::PubRel => {
                let known = self.qos2_in.remove(&r.pkid);
                let mut comp = PubResp::new(PubRespKind::PubComp, r.pkid);
                if !known && self.v5 {
                    comp.reason = reason::PACKET_ID_NOT_FOUND;
                }
                self.reply(Packet::PubResp(comp), cx)
            }
        }
    }

    fn on_subscribe(&mut self, s: Subscribe, cx: &mut MqttCx<'_>) -> Flow {
        let sub_id = s.properties.subscription_identifiers().first().copied();
        let refused = |v5: bool, code: u8| if v5 { code } else { reason::V4_SUBACK_FAILURE };
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut attach = false;
        for f in &s.filters {
            let code = if let Some((_, inner)) = topic::shared(&f.filter) {
                // A shared subscription: generic topics only (the IM
                // namespace has one subscriber per inbox by design).
                match acl::subscribe_target(
                    inner,
                    &self.principal.user_id,
                    &self.principal.device_id,
                ) {
                    SubscribeTarget::Generic if !self.acl_may_subscribe(inner) => {
                        refused(self.v5, reason::NOT_AUTHORIZED)
                    }
                    SubscribeTarget::Generic => {
                        // No Local makes no sense for a group (a protocol
                        // error in MQTT 5): ignored rather than dropping
                        // the group's messages.
                        let options = imgate_codecs::mqtt::SubOptions {
                            no_local: false,
                            ..f.options
                        };
                        if self.broker.subscribe(&self.key, &f.filter, options, sub_id) {
                            f.options.qos.as_u8()
                        } else {
                            refused(self.v5, reason::QUOTA_EXCEEDED)
                        }
                    }
                    SubscribeTarget::Forbidden => refused(self.v5, reason::NOT_AUTHORIZED),
                    SubscribeTarget::Inbox | SubscribeTarget::Ack => {
                        refused(self.v5, reason::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
                    }
                }
            } else if f.filter.starts_with("$share/") || !topic::valid_topic_filter(&f.filter) {
                refused(self.v5, reason::TOPIC_FILTER_INVALID)
            } else {
                match acl::subscribe_target(
                    &f.filter,
                    &self.principal.user_id,
                    &self.principal.device_id,
                ) {
                    SubscribeTarget::Inbox => {
                        let qos = f.options.qos.min(QoS::AtLeastOnce);
                        self.broker
                            .set_im(&self.key, Some(Some((qos, sub_id))), None);
                        attach = true;
                        qos.as_u8()
                    }
                    SubscribeTarget::Ack => {
                        let qos = f.options.qos.min(QoS::AtLeastOnce);
                        self.broker.set_im(&self.key, None, Some(Some(qos)));
                        qos.as_u8()
                    }
                    SubscribeTarget::Forbidden => refused(self.v5, reason::NOT_AUTHORIZED),
                    SubscribeTarget::Generic if !self.acl_may_subscribe(&f.filter) => {
                        refused(self.v5, reason::NOT_AUTHORIZED)
                    }
                    SubscribeTarget::Generic => {
                        if self
                            .broker
                            .subscribe(&self.key, &f.filter, f.options, sub_id)
                        {
                            f.options.qos.as_u8()
                        } else {
                            refused(self.v5, reason::QUOTA_EXCEEDED)
                        }
                    }
                }
            };
            reasons.push(code);
        }
        // Register the device with the store before the SUBACK: once the
        // client sees it, every message sent to it must reach this inbox
        // (a new device's cursor is durable before its first delivery).
        let suback = Packet::SubAck(SubAck {
            pkid: s.pkid,
            reasons,
            properties: Properties::default(),
        });
        if attach && !self.feed_attached {
            self.after_attach = AfterAttach::SubAck(suback);
            return Step::AttachFeed;
        }
        self.send(suback, cx);
        self.pump(cx);
        Step::Continue
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe, cx: &mut MqttCx<'_>) -> Flow {
        let mut reasons = Vec::new();
        let mut detach = false;
        for f in &u.filters {
            let existed = match acl::subscribe_target(
                f,
                &self.principal.user_id,
                &self.principal.device_id,
            ) {
                SubscribeTarget::Inbox => {
                    detach = self.feed_attached;
                    self.feed_attached = false;
                    self.im_held = None;
                    self.broker.set_im(&self.key, Some(None), None);
                    true
                }
                SubscribeTarget::Ack => {
                    self.broker.set_im(&self.key, None, Some(None));
                    true
                }
                SubscribeTarget::Forbidden => false,
                SubscribeTarget::Generic => self.broker.unsubscribe(&self.key, f),
            };
            reasons.push(if existed {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        if !self.v5 {
            reasons.clear();
        }
        self.send(
            Packet::UnsubAck(UnsubAck {
                pkid: u.pkid,
                reasons,
                properties: Properties::default(),
            }),
            cx,
        );
        if detach {
            Step::DetachFeed
        } else {
            Step::Continue
        }
    }
}
