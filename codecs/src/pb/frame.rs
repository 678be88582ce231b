//! `PbFrame`: one PB frame, header fields and raw body, plus builders for
//! the frames the server sends.
//!
//! The body stays raw `Bytes` here: the framer only cuts the stream, and
//! [`PbRequest::decode`](super::PbRequest::decode) turns a body into a typed
//! message by command. Keeping the two apart lets a session answer a frame
//! with a bad body and go on reading.

use bytes::Bytes;
use imgate_core::ErrorCode;

use super::commands::{self, service_of};
use super::proto;

/// One PB frame without its length and version (the framer derives and
/// checks those).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbFrame {
    pub flags: u16,
    /// As received. The encoder always writes `command >> 8` (DESIGN §5.2),
    /// and dispatch uses `command` alone.
    pub service: u16,
    pub command: u16,
    /// A response echoes the request's seq; a server push has seq 0.
    pub seq: u16,
    pub reserved: u16,
    /// The protobuf body (may be empty).
    pub body: Bytes,
}

impl PbFrame {
    /// A frame with `command` and `seq` around an already encoded body.
    pub fn new(command: u16, seq: u16, body: Bytes) -> PbFrame {
        PbFrame {
            flags: 0,
            service: service_of(command),
            command,
            seq,
            reserved: 0,
            body,
        }
    }

    /// A reply to a request: echoes the request's `seq`.
    pub fn response<M: prost::Message>(command: u16, seq: u16, msg: &M) -> PbFrame {
        PbFrame::new(command, seq, Bytes::from(msg.encode_to_vec()))
    }

    /// A server push (`Deliver`, `Kick`, …): seq 0.
    pub fn push<M: prost::Message>(command: u16, msg: &M) -> PbFrame {
        PbFrame::response(command, 0, msg)
    }

    /// An `Error` frame (0x0702) answering the frame with `seq` (0 when it
    /// answers nothing in particular, e.g. a framing error).
    pub fn error(seq: u16, code: ErrorCode, message: impl Into<String>) -> PbFrame {
        PbFrame::response(
            commands::ERROR,
            seq,
            &proto::Error {
                code: code.as_i32(),
                message: message.into(),
            },
        )
    }

    /// A `Kick` push (0x0103); the server closes the connection after it.
    pub fn kick(code: ErrorCode, reason: impl Into<String>) -> PbFrame {
        PbFrame::push(
            commands::KICK,
            &proto::Kick {
                code: code.as_i32(),
                reason: reason.into(),
            },
        )
    }

    /// A `Heartbeat` (0x0701) with an empty body, e.g. the echo of a
    /// client's heartbeat with its seq.
    pub fn heartbeat(seq: u16) -> PbFrame {
        PbFrame::new(commands::HEARTBEAT, seq, Bytes::new())
    }

    /// The frame's length on the wire, header included.
    pub fn wire_len(&self) -> usize {
        super::header::HEADER_LEN + self.body.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_service_seq_and_body() {
        let f = PbFrame::error(9, ErrorCode::AuthFailure, "login first");
        assert_eq!((f.service, f.command, f.seq), (7, commands::ERROR, 9));
        let body: proto::Error = prost::Message::decode(f.body.as_ref()).unwrap();
        assert_eq!(body.code, 244);
        assert_eq!(body.message, "login first");

        let k = PbFrame::kick(ErrorCode::KickedOff, "other device");
        assert_eq!((k.service, k.command, k.seq), (1, commands::KICK, 0));
        assert_eq!(PbFrame::heartbeat(3).wire_len(), 16);
    }
}
