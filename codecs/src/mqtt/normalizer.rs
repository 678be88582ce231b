//! [`MqttNormalizer`]: the IM namespace of DESIGN §5.3 between MQTT
//! payloads and the core model, pure and synchronous.
//!
//! - `im/send` bodies: the JSON send request of §5.5, or with the MQTT 5
//!   content type `application/x-protobuf` the PB `SendRequest`.
//! - `im/inbox/<userId>` payloads: the JSON message of §5.5.
//! - `im/ack/<clientId>` payloads: the JSON send result.

use imgate_core::model::json::{MessageJson, SendRequestJson, SendResultJson};
use imgate_core::model::Message;
use imgate_core::pipeline::Draft;
use prost::Message as _;

use crate::pb::{proto, PbNormalizer};

/// The topic a client publishes IM sends to.
pub const IM_SEND_TOPIC: &str = "im/send";
/// Prefix of a user's inbox topic.
pub const IM_INBOX_PREFIX: &str = "im/inbox/";
/// Prefix of a client's send-result topic.
pub const IM_ACK_PREFIX: &str = "im/ack/";
/// Prefix of the whole IM namespace.
pub const IM_NAMESPACE: &str = "im/";
/// MQTT 5 content type selecting the PB `SendRequest` body.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Why an `im/send` body was refused (code 2, invalid data).
#[derive(Debug, thiserror::Error)]
pub enum MqttBodyError {
    #[error("invalid JSON send request: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid protobuf SendRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MqttNormalizer;

impl MqttNormalizer {
    /// An `im/send` body as a draft from `sender`.
    pub fn send_body_to_draft(
        body: &[u8],
        content_type: Option<&str>,
        sender: &str,
    ) -> Result<Draft, MqttBodyError> {
        if content_type == Some(CONTENT_TYPE_PROTOBUF) {
            let req = proto::SendRequest::decode(body)?;
            return Ok(PbNormalizer::send_request_to_draft(req, sender.to_owned()));
        }
        let req: SendRequestJson = serde_json::from_slice(body)?;
        Ok(Draft {
            sender: sender.to_owned(),
            conversation: req.conv,
            payload: req.payload,
            client_msg_id: req.client_msg_id,
            to_users: req.to_users,
        })
    }

    /// The best-effort client message id of a refused body (for the result).
    pub fn client_msg_id_of(body: &[u8]) -> String {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("clientMsgId")?.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// A delivered message as the `im/inbox/<userId>` payload.
    pub fn message_payload(m: &Message) -> Vec<u8> {
        serde_json::to_vec(&MessageJson::from_message(m)).unwrap_or_default()
    }

    /// A send result as the `im/ack/<clientId>` payload.
    pub fn result_payload(
        client_msg_id: &str,
        code: i32,
        message_id: u64,
        timestamp: i64,
        msg: Option<String>,
    ) -> Vec<u8> {
        serde_json::to_vec(&SendResultJson {
            client_msg_id: client_msg_id.to_owned(),
            code,
            message_uid: message_id,
            message_uid_str: message_id.to_string(),
            timestamp,
            msg,
        })
        .unwrap_or_default()
    }

    pub fn inbox_topic(user: &str) -> String {
        format!("{IM_INBOX_PREFIX}{user}")
    }

    pub fn ack_topic(client_id: &str) -> String {
        format!("{IM_ACK_PREFIX}{client_id}")
    }
}
