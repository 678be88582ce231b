//! `PbServerMessage`: the typed view of a frame the server sends (replies
//! and pushes, DESIGN §5.2).
//!
//! The gateway can build its frames with [`PbFrame::response`] and
//! [`PbFrame::push`] directly; this enum is the same set as one closed
//! type, which PB clients (conformance tests, tools) decode with and
//! fixtures and fuzzing exercise.

use bytes::Bytes;
use prost::Message as _;

use super::commands;
use super::error::PbCodecError;
use super::frame::PbFrame;
use super::proto;
use super::request::{decode_body, wrong_command};

/// A server → client PB message.
// Not boxed: a value lives only from decode to the `match` that moves its
// body out, so the size gap costs one short memcpy, while a `Box` would add
// an allocation per frame and a `*` at every call site.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PbServerMessage {
    /// 0x0102, answers the login.
    LoginResponse(proto::LoginResponse),
    /// 0x0103, a push; the connection closes after it.
    Kick(proto::Kick),
    /// 0x0302, answers a send.
    SendResponse(proto::SendResponse),
    /// 0x0303, a push of one message.
    Deliver(proto::Deliver),
    /// 0x0306, answers a sync.
    SyncResponse(proto::SyncResponse),
    /// 0x0308, answers a recall.
    RecallResponse(proto::RecallResponse),
    /// 0x030A, answers a conversations request.
    ConversationsResponse(proto::ConversationsResponse),
    /// 0x030C, answers a mark-read.
    MarkReadResponse(proto::MarkReadResponse),
    /// 0x0701, the echo of a client heartbeat.
    Heartbeat,
    /// 0x0702, a refusal with a DESIGN §4 code.
    Error(proto::Error),
}

impl PbServerMessage {
    /// The typed server message in `frame`; a client → server or unknown
    /// command is an error, as in [`PbRequest::decode`](super::PbRequest::decode).
    pub fn decode(frame: &PbFrame) -> Result<PbServerMessage, PbCodecError> {
        Ok(match frame.command {
            commands::LOGIN_RESPONSE => PbServerMessage::LoginResponse(decode_body(frame)?),
            commands::KICK => PbServerMessage::Kick(decode_body(frame)?),
            commands::SEND_RESPONSE => PbServerMessage::SendResponse(decode_body(frame)?),
            commands::DELIVER => PbServerMessage::Deliver(decode_body(frame)?),
            commands::SYNC_RESPONSE => PbServerMessage::SyncResponse(decode_body(frame)?),
            commands::RECALL_RESPONSE => PbServerMessage::RecallResponse(decode_body(frame)?),
            commands::CONVERSATIONS_RESPONSE => {
                PbServerMessage::ConversationsResponse(decode_body(frame)?)
            }
            commands::MARK_READ_RESPONSE => PbServerMessage::MarkReadResponse(decode_body(frame)?),
            commands::HEARTBEAT => {
                let proto::Heartbeat {} = decode_body(frame)?;
                PbServerMessage::Heartbeat
            }
            commands::ERROR => PbServerMessage::Error(decode_body(frame)?),
            other => return Err(wrong_command(other)),
        })
    }

    /// The command number of this message.
    pub fn command(&self) -> u16 {
        match self {
            PbServerMessage::LoginResponse(_) => commands::LOGIN_RESPONSE,
            PbServerMessage::Kick(_) => commands::KICK,
            PbServerMessage::SendResponse(_) => commands::SEND_RESPONSE,
            PbServerMessage::Deliver(_) => commands::DELIVER,
            PbServerMessage::SyncResponse(_) => commands::SYNC_RESPONSE,
            PbServerMessage::RecallResponse(_) => commands::RECALL_RESPONSE,
            PbServerMessage::ConversationsResponse(_) => commands::CONVERSATIONS_RESPONSE,
            PbServerMessage::MarkReadResponse(_) => commands::MARK_READ_RESPONSE,
            PbServerMessage::Heartbeat => commands::HEARTBEAT,
            PbServerMessage::Error(_) => commands::ERROR,
        }
    }

    /// The message as a frame with `seq` (the request's seq for a reply, 0
    /// for a push).
    pub fn to_frame(&self, seq: u16) -> PbFrame {
        let body = match self {
            PbServerMessage::LoginResponse(m) => m.encode_to_vec(),
            PbServerMessage::Kick(m) => m.encode_to_vec(),
            PbServerMessage::SendResponse(m) => m.encode_to_vec(),
            PbServerMessage::Deliver(m) => m.encode_to_vec(),
            PbServerMessage::SyncResponse(m) => m.encode_to_vec(),
            PbServerMessage::RecallResponse(m) => m.encode_to_vec(),
            PbServerMessage::ConversationsResponse(m) => m.encode_to_vec(),
            PbServerMessage::MarkReadResponse(m) => m.encode_to_vec(),
            PbServerMessage::Heartbeat => Vec::new(),
            PbServerMessage::Error(m) => m.encode_to_vec(),
        };
        PbFrame::new(self.command(), seq, Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_message_round_trips_and_refuses_client_commands() {
        let msg = PbServerMessage::SendResponse(proto::SendResponse {
            code: 0,
            message_id: 1 << 40,
            server_ts: 1_700_000_000_000,
            client_msg_id: "c-1".into(),
        });
        assert_eq!(PbServerMessage::decode(&msg.to_frame(3)).unwrap(), msg);
        let login = PbFrame::new(commands::LOGIN_REQUEST, 1, Bytes::new());
        assert!(matches!(
            PbServerMessage::decode(&login),
            Err(PbCodecError::UnexpectedCommand { command: 0x0101 })
        ));
    }
}
