//! The IM namespace on MQTT (DESIGN §5.3): `im/send` through the pipeline
//! (PUBACK/PUBREC only after the store made the message durable; on
//! rejection the §4 reason code for MQTT 5), the result JSON on
//! `im/ack/<clientId>`, and `im/inbox/<userId>` deliveries from the
//! store's device feed whose PUBACK is the delivery ack.
//!
//! `im/send` is pipelined: [`MqttSession::im_send`] puts the send in the
//! driver's window; [`MqttSession::im_send_done`] renders results
//! oldest first, so PUBACKs and `im/ack` results follow the PUBLISH
//! order (MQTT 5 §4.6) and ids follow it too (DESIGN §3.4). Which other
//! packets wait for the window is decided in `session`.

use std::sync::Arc;

use imgate_codecs::mqtt::normalizer::CONTENT_TYPE_JSON;
use imgate_codecs::mqtt::{reason, MqttNormalizer, Packet, Properties, Property, Publish, QoS};
use imgate_core::model::Message;
use imgate_core::pipeline::{SendAck, SendCommand};
use imgate_core::{ErrorCode, ImError};

use super::session::{Flow, MqttCx, MqttSession, MqttTask};
use crate::sessions::driver::Step;

/// A pipelined `im/send`: what its PUBACK / PUBREC and result JSON need.
pub struct ImSendDone {
    qos: QoS,
    pkid: u16,
    client_msg_id: String,
}

impl MqttSession {
    /// An `im/send` into the driver's window; its result is rendered by
    /// [`Self::im_send_done`] in PUBLISH order.
    pub fn im_send(&mut self, p: Publish) -> Flow {
        let content_type = p.properties.content_type();
        let user = &self.principal.user_id;
        let (qos, pkid) = (p.qos, p.pkid);
        match MqttNormalizer::send_body_to_draft(&p.payload, content_type.as_deref(), user) {
            Err(e) => Step::Send(
                Err(ImError::new(ErrorCode::InvalidData, e.to_string())),
                ImSendDone {
                    qos,
                    pkid,
                    client_msg_id: MqttNormalizer::client_msg_id_of(&p.payload),
                },
            ),
            Ok(draft) => {
                let client_msg_id = draft.client_msg_id.clone();
                Step::Send(
                    Ok(SendCommand {
                        principal: self.principal.clone(),
                        draft,
                    }),
                    ImSendDone {
                        qos,
                        pkid,
                        client_msg_id,
                    },
                )
            }
        }
    }

    /// `im/read`: the conversation read up to `messageUid`, as over HTTP
    /// and PB (a query of the driver's); the PUBACK carries the outcome
    /// (MQTT 5 reason code of the error code, 3.1.1 success: it cannot
    /// refuse).
    pub fn im_read(&mut self, p: Publish) -> Flow {
        #[derive(serde::Deserialize)]
        struct ReadReq {
            conv: imgate_core::model::Conversation,
            #[serde(rename = "messageUid", default)]
            message_uid: Option<serde_json::Value>,
        }
        let read = serde_json::from_slice::<ReadReq>(&p.payload)
            .map_err(|e| ImError::invalid_parameter(format!("im/read: not a read: {e}")))
            .and_then(|r| {
                let upto = match &r.message_uid {
                    None | Some(serde_json::Value::Null) => Some(0),
                    Some(serde_json::Value::Number(n)) => n.as_u64(),
                    Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
                    Some(_) => None,
                };
                upto.map(|u| (r.conv, u))
                    .ok_or_else(|| ImError::invalid_parameter("messageUid must be a message id"))
            });
        Step::Task(MqttTask::Read {
            qos: p.qos,
            pkid: p.pkid,
            read,
        })
    }

    /// The result of the oldest `im/send`: the JSON on `im/ack/<clientId>`
    /// (if subscribed), then the PUBACK / PUBREC with the §4 reason.
    pub fn im_send_done(
        &mut self,
        done: ImSendDone,
        result: Result<SendAck, ImError>,
        cx: &mut MqttCx<'_>,
    ) -> Flow {
        let (code, message_id, ts, client_msg_id, msg) = match result {
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
            self.send(Packet::Publish(result), cx);
        }
        self.ack_publish(done.qos, done.pkid, reason::for_error_code(code), cx)
    }

    /// One inbox delivery at min(granted QoS, 1); QoS 0 subscribers are
    /// acked in the store at send time (they asked for at most once).
    pub fn deliver_im(&mut self, m: Arc<Message>, cx: &mut MqttCx<'_>) -> Flow {
        let (Some((granted, sub_id)), _) = self.broker.im_subscriptions(&self.key) else {
            return Step::Continue;
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
                    return Step::Continue;
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
        self.send(Packet::Publish(publish), cx);
        cx.delivered();
        if qos == QoS::AtMostOnce {
            return im_acked(m.message_id);
        }
        Step::Continue
    }
}

/// The device has the message: the driver records the ack.
pub fn im_acked(message_id: u64) -> Flow {
    Step::Ack {
        message_id,
        claimed: false,
        tag: 0,
    }
}
