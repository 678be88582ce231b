//! The IM namespace on MQTT (DESIGN §5.3): `im/send` through the pipeline
//! (PUBACK/PUBREC only after the store made the message durable; on
//! rejection the §4 reason code for MQTT 5), the result JSON on
//! `im/ack/<clientId>`, and `im/inbox/<userId>` deliveries from the
//! store's device feed whose PUBACK is the delivery ack.
//!
//! `im/send` is pipelined: [`Conn::im_send`] puts the send in the
//! session's window and returns; [`Conn::im_send_done`] renders results
//! oldest first, so PUBACKs and `im/ack` results follow the PUBLISH
//! order (MQTT 5 §4.6) and ids follow it too (DESIGN §3.4). Which other
//! packets wait for the window is decided in `session`.

use std::sync::Arc;

use imgate_codecs::mqtt::normalizer::CONTENT_TYPE_JSON;
use imgate_codecs::mqtt::{reason, MqttNormalizer, Packet, Properties, Property, Publish, QoS};
use imgate_core::model::Message;
use imgate_core::pipeline::{Protocol, SendAck, SendCommand};
use imgate_core::{ErrorCode, ImError};

use super::session::{Conn, End};

/// A pipelined `im/send`: what its PUBACK / PUBREC and result JSON need.
pub struct ImSendDone {
    qos: QoS,
    pkid: u16,
    client_msg_id: String,
    result: Result<SendAck, ImError>,
}

impl Conn {
    /// Start an `im/send` in the session's window; its result is rendered
    /// by [`Self::im_send_done`] in PUBLISH order.
    pub fn im_send(&mut self, p: Publish) {
        let content_type = p.properties.content_type();
        let user = &self.principal.user_id;
        let (qos, pkid) = (p.qos, p.pkid);
        match MqttNormalizer::send_body_to_draft(&p.payload, content_type.as_deref(), user) {
            Err(e) => {
                let done = ImSendDone {
                    qos,
                    pkid,
                    client_msg_id: MqttNormalizer::client_msg_id_of(&p.payload),
                    result: Err(ImError::new(ErrorCode::InvalidData, e.to_string())),
                };
                self.window.push(async move { done });
            }
            Ok(draft) => {
                let client_msg_id = draft.client_msg_id.clone();
                let pipelined = self.state.send_owned(SendCommand {
                    principal: self.principal.clone(),
                    draft,
                });
                self.window.push(async move {
                    ImSendDone {
                        qos,
                        pkid,
                        client_msg_id,
                        result: pipelined.await,
                    }
                });
            }
        }
    }

    /// `im/read`: the conversation read up to `messageUid`, as over HTTP
    /// and PB; the PUBACK carries the outcome (MQTT 5 reason code of the
    /// error code, 3.1.1 success: it cannot refuse).
    pub async fn im_read(&mut self, p: Publish) -> Result<(), End> {
        #[derive(serde::Deserialize)]
        struct ReadReq {
            conv: imgate_core::model::Conversation,
            #[serde(rename = "messageUid", default)]
            message_uid: Option<serde_json::Value>,
        }
        let parsed = serde_json::from_slice::<ReadReq>(&p.payload)
            .map_err(|e| {
                imgate_core::ImError::invalid_parameter(format!("im/read: not a read: {e}"))
            })
            .and_then(|r| {
                let upto = match &r.message_uid {
                    None | Some(serde_json::Value::Null) => Some(0),
                    Some(serde_json::Value::Number(n)) => n.as_u64(),
                    Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
                    Some(_) => None,
                };
                upto.map(|u| (r.conv, u)).ok_or_else(|| {
                    imgate_core::ImError::invalid_parameter("messageUid must be a message id")
                })
            });
        let code = match parsed {
            Ok((conv, upto)) => {
                match crate::conversations::read_by(
                    self.state.store.as_ref(),
                    self.state.webhooks.as_deref(),
                    &self.principal,
                    &conv,
                    upto,
                )
                .await
                {
                    Ok(_) => ErrorCode::Success,
                    Err(e) => e.code,
                }
            }
            Err(e) => e.code,
        };
        let reason = if self.v5 {
            reason::for_error_code(code)
        } else {
            reason::SUCCESS
        };
        self.ack_publish(p.qos, p.pkid, reason).await
    }

    /// The result of the oldest `im/send`: the JSON on `im/ack/<clientId>`
    /// (if subscribed), then the PUBACK / PUBREC with the §4 reason.
    pub async fn im_send_done(&mut self, done: ImSendDone) -> Result<(), End> {
        let (code, message_id, ts, client_msg_id, msg) = match done.result {
            Ok(ack) => (
                ErrorCode::Success,
                ack.message_id,
                ack.server_ts,
                ack.client_msg_id,
                None,
            ),
            Err(e) => (e.code, 0, 0, done.client_msg_id, Some(e.message)),
        };
        let (_, ack_sub) = self.broker.im_subscriptions(&self.key);
        if ack_sub.is_some() {
            let mut properties = Properties::default();
            if self.v5 {
                properties
                    .push(Property::ContentType(CONTENT_TYPE_JSON.into()))
                    .push(Property::PayloadFormatIndicator(1));
            }
            let result = Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: MqttNormalizer::ack_topic(&self.principal.device_id),
                pkid: 0,
                properties,
                payload: MqttNormalizer::result_payload(
                    &client_msg_id,
                    code.as_i32(),
                    message_id,
                    ts,
                    msg,
                )
                .into(),
            };
            if !self.send(Packet::Publish(result)).await {
                return Err(End::Abnormal);
            }
        }
        self.ack_publish(done.qos, done.pkid, reason::for_error_code(code))
            .await
    }

    /// Attach the device to the store: pending deliveries first, then live.
    pub async fn attach_inbox(&mut self) -> bool {
        match self
            .state
            .store
            .attach_device(&self.principal.user_id, &self.principal.device_id)
            .await
        {
            Ok(f) => {
                self.feed = Some(f);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "mqtt: cannot attach device to the store");
                self.disconnect(reason::SERVER_UNAVAILABLE).await;
                false
            }
        }
    }

    pub async fn flush_held_im(&mut self) -> bool {
        match self.im_held.take() {
            Some(m) => self.deliver_im(m).await,
            None => true,
        }
    }

    /// One inbox delivery at min(granted QoS, 1); QoS 0 subscribers are
    /// acked in the store at send time (they asked for at most once).
    pub async fn deliver_im(&mut self, m: Arc<Message>) -> bool {
        let (Some((granted, sub_id)), _) = self.broker.im_subscriptions(&self.key) else {
            return true;
        };
        let qos = granted.min(QoS::AtLeastOnce);
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            match self
                .broker
                .track_im(&self.key, m.message_id, self.client_receive_max)
            {
                Some(id) => id,
                None => {
                    self.im_held = Some(m);
                    return true;
                }
            }
        };
        let mut properties = Properties::default();
        if self.v5 {
            properties
                .push(Property::ContentType(CONTENT_TYPE_JSON.into()))
                .push(Property::PayloadFormatIndicator(1));
            if let Some(id) = sub_id {
                properties.push(Property::SubscriptionIdentifier(id));
            }
        }
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic: MqttNormalizer::inbox_topic(&self.principal.user_id),
            pkid,
            properties,
            payload: MqttNormalizer::message_payload(&m).into(),
        };
        if !self.send(Packet::Publish(publish)).await {
            return false;
        }
        self.state.metrics.message_out(Protocol::Mqtt);
        if qos == QoS::AtMostOnce {
            self.im_acked(m.message_id).await;
        }
        true
    }

    pub async fn im_acked(&mut self, message_id: u64) {
        if let Err(e) = self
            .state
            .ack_delivery(
                &self.principal.user_id,
                &self.principal.device_id,
                message_id,
            )
            .await
        {
            tracing::warn!(error = %e, "mqtt: storing a delivery ack failed; it will be redelivered");
        }
    }
}
