//! `PbCodecError`: everything that can go wrong between PB bytes and typed
//! bodies, with whether the connection can go on and which DESIGN §4 code
//! the client is told.
//!
//! Framing errors (bad length, bad version, I/O) leave the byte stream at an
//! unknown position, so the session must answer with an `Error` frame and
//! close. Body errors (unknown command, invalid protobuf) concern one
//! well-delimited frame: the session answers it and reads the next one.

use imgate_core::{ErrorCode, ImError};

use super::commands;
use super::header::HEADER_LEN;

/// An error of the PB framer, the typed decode layer or the encoder.
#[derive(Debug, thiserror::Error)]
pub enum PbCodecError {
    /// The header's length is smaller than the header itself.
    #[error("PB frame length {length} is shorter than the {HEADER_LEN}-byte header")]
    FrameTooShort { length: u32 },
    /// The header's length is above the configured maximum.
    #[error("PB frame length {length} exceeds the maximum of {max} bytes")]
    FrameTooLarge { length: u32, max: usize },
    /// The header's version is not 1.
    #[error("unsupported PB version {version} (this server speaks version 1)")]
    UnsupportedVersion { version: u16 },
    /// A command the contract does not define.
    #[error("unknown PB command {command:#06x}")]
    UnknownCommand { command: u16 },
    /// A contract command that is not sent in this direction (for example a
    /// client sending `LoginResponse`).
    #[error("PB command {command:#06x} ({}) is not valid in this direction", body_name(*command))]
    UnexpectedCommand { command: u16 },
    /// The body is not a valid protobuf encoding of the command's message.
    #[error("invalid PB {} body: {source}", body_name(*command))]
    InvalidBody {
        command: u16,
        #[source]
        source: prost::DecodeError,
    },
    /// A frame to send is larger than the maximum; nothing was written.
    #[error("outgoing PB frame of {length} bytes exceeds the maximum of {max} bytes")]
    OutgoingFrameTooLarge { length: usize, max: usize },
    /// The transport failed (tokio-util's `Decoder` requires this variant).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fn body_name(command: u16) -> &'static str {
    commands::name(command).unwrap_or("unknown")
}

impl PbCodecError {
    /// Whether the connection can read the next frame after this error.
    /// False for framing errors: the stream position is lost, so the session
    /// sends an `Error` frame and closes.
    pub fn can_continue(&self) -> bool {
        match self {
            PbCodecError::FrameTooShort { .. }
            | PbCodecError::FrameTooLarge { .. }
            | PbCodecError::UnsupportedVersion { .. }
            | PbCodecError::Io(_) => false,
            PbCodecError::UnknownCommand { .. }
            | PbCodecError::UnexpectedCommand { .. }
            | PbCodecError::InvalidBody { .. }
            | PbCodecError::OutgoingFrameTooLarge { .. } => true,
        }
    }

    /// The DESIGN §4 code the client is told in its `Error` frame.
    pub fn code(&self) -> ErrorCode {
        match self {
            PbCodecError::FrameTooShort { .. }
            | PbCodecError::FrameTooLarge { .. }
            | PbCodecError::UnsupportedVersion { .. }
            | PbCodecError::UnexpectedCommand { .. }
            | PbCodecError::InvalidBody { .. } => ErrorCode::InvalidData,
            PbCodecError::UnknownCommand { .. } => ErrorCode::NotImplemented,
            PbCodecError::OutgoingFrameTooLarge { .. } | PbCodecError::Io(_) => {
                ErrorCode::ServerError
            }
        }
    }
}

impl From<PbCodecError> for ImError {
    fn from(e: PbCodecError) -> ImError {
        ImError::new(e.code(), e.to_string())
    }
}
