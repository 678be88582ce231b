//! `PbRequest`: the typed view of a frame a client sends (DESIGN §5.2),
//! decoded from a [`PbFrame`] by its command.
//!
//! This is the format half of the PB codec (the framer is the framing
//! half): a closed enum, so the session dispatches with a `match` and no
//! `dyn`. Errors here concern one frame only
//! ([`PbCodecError::can_continue`] is true): the session answers with an
//! `Error` frame carrying [`PbCodecError::code`] and reads on.

use bytes::Bytes;
use prost::Message as _;

use super::commands;
use super::error::PbCodecError;
use super::frame::PbFrame;
use super::proto;

/// A client → server PB message.
// Not boxed: a value lives only from decode to the `match` that moves its
// body out, so the size gap costs one short memcpy, while a `Box` would add
// an allocation per frame and a `*` at every call site.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PbRequest {
    /// 0x0101, must be the first frame of a connection.
    Login(proto::LoginRequest),
    /// 0x0301.
    Send(proto::SendRequest),
    /// 0x0304.
    DeliverAck(proto::DeliverAck),
    /// 0x0305.
    Sync(proto::SyncRequest),
    /// 0x0307.
    Recall(proto::RecallRequest),
    /// 0x0309.
    Conversations(proto::ConversationsRequest),
    /// 0x030B.
    MarkRead(proto::MarkReadRequest),
    /// 0x0701, answered with a heartbeat carrying the same seq.
    Heartbeat,
}

/// Decodes `frame`'s body as `M`, naming the command in the error.
pub(crate) fn decode_body<M: prost::Message + Default>(frame: &PbFrame) -> Result<M, PbCodecError> {
    M::decode(frame.body.as_ref()).map_err(|source| PbCodecError::InvalidBody {
        command: frame.command,
        source,
    })
}

/// The error for a command that has no meaning in this direction.
pub(crate) fn wrong_command(command: u16) -> PbCodecError {
    if commands::name(command).is_some() {
        PbCodecError::UnexpectedCommand { command }
    } else {
        PbCodecError::UnknownCommand { command }
    }
}

impl PbRequest {
    /// The typed request in `frame`. An unknown command gives
    /// [`PbCodecError::UnknownCommand`] (code 254), a server → client
    /// command [`PbCodecError::UnexpectedCommand`] and a body that is not
    /// valid protobuf [`PbCodecError::InvalidBody`] (both code 2).
    pub fn decode(frame: &PbFrame) -> Result<PbRequest, PbCodecError> {
        Ok(match frame.command {
            commands::LOGIN_REQUEST => PbRequest::Login(decode_body(frame)?),
            commands::SEND_REQUEST => PbRequest::Send(decode_body(frame)?),
            commands::DELIVER_ACK => PbRequest::DeliverAck(decode_body(frame)?),
            commands::SYNC_REQUEST => PbRequest::Sync(decode_body(frame)?),
            commands::RECALL_REQUEST => PbRequest::Recall(decode_body(frame)?),
            commands::CONVERSATIONS_REQUEST => PbRequest::Conversations(decode_body(frame)?),
            commands::MARK_READ_REQUEST => PbRequest::MarkRead(decode_body(frame)?),
            commands::HEARTBEAT => {
                let proto::Heartbeat {} = decode_body(frame)?;
                PbRequest::Heartbeat
            }
            other => return Err(wrong_command(other)),
        })
    }

    /// The command number of this request.
    pub fn command(&self) -> u16 {
        match self {
            PbRequest::Login(_) => commands::LOGIN_REQUEST,
            PbRequest::Send(_) => commands::SEND_REQUEST,
            PbRequest::DeliverAck(_) => commands::DELIVER_ACK,
            PbRequest::Sync(_) => commands::SYNC_REQUEST,
            PbRequest::Recall(_) => commands::RECALL_REQUEST,
            PbRequest::Conversations(_) => commands::CONVERSATIONS_REQUEST,
            PbRequest::MarkRead(_) => commands::MARK_READ_REQUEST,
            PbRequest::Heartbeat => commands::HEARTBEAT,
        }
    }

    /// The request as a frame with `seq` (what a client sends).
    pub fn to_frame(&self, seq: u16) -> PbFrame {
        let body = match self {
            PbRequest::Login(m) => m.encode_to_vec(),
            PbRequest::Send(m) => m.encode_to_vec(),
            PbRequest::DeliverAck(m) => m.encode_to_vec(),
            PbRequest::Sync(m) => m.encode_to_vec(),
            PbRequest::Recall(m) => m.encode_to_vec(),
            PbRequest::Conversations(m) => m.encode_to_vec(),
            PbRequest::MarkRead(m) => m.encode_to_vec(),
            PbRequest::Heartbeat => Vec::new(),
        };
        PbFrame::new(self.command(), seq, Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_a_frame() {
        let req = PbRequest::Sync(proto::SyncRequest {
            since: 77,
            limit: 50,
        });
        let frame = req.to_frame(5);
        assert_eq!((frame.command, frame.seq), (commands::SYNC_REQUEST, 5));
        assert_eq!(PbRequest::decode(&frame).unwrap(), req);
    }

    #[test]
    fn server_commands_and_unknown_commands_are_refused_with_codes() {
        let frame = PbFrame::heartbeat(1);
        let mut login_resp = frame.clone();
        login_resp.command = commands::LOGIN_RESPONSE;
        let err = PbRequest::decode(&login_resp).unwrap_err();
        assert!(matches!(
            err,
            PbCodecError::UnexpectedCommand { command: 0x0102 }
        ));
        assert_eq!(err.code().as_i32(), 2);

        let mut unknown = frame;
        unknown.command = 0x0999;
        let err = PbRequest::decode(&unknown).unwrap_err();
        assert!(matches!(
            err,
            PbCodecError::UnknownCommand { command: 0x0999 }
        ));
        assert_eq!(err.code().as_i32(), 254);
        assert!(err.can_continue());
    }
}
