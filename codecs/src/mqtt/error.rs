//! `MqttCodecError`: what can go wrong between MQTT bytes and packets, with
//! the MQTT 5 reason code a server answers with (DISCONNECT) before it
//! closes. Every framing or packet error is fatal for the connection
//! (MQTT 3.1.1 §4.8, MQTT 5 §4.13): the byte stream cannot be trusted.

use super::packet::Version;
use super::reason;

#[derive(Debug, thiserror::Error)]
pub enum MqttCodecError {
    /// The remaining length has a fifth continuation byte.
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// The fixed header announces more bytes than the configured maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: usize },
    /// The packet body does not follow the spec.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A string is not valid UTF-8 or contains U+0000.
    #[error("invalid UTF-8 string")]
    InvalidUtf8,
    /// A PUBLISH topic with `+`/`#`, or an empty topic without an alias.
    #[error("invalid topic name")]
    InvalidTopicName,
    /// The protocol name of CONNECT is not `MQTT`.
    #[error("unsupported protocol name")]
    InvalidProtocolName,
    /// A protocol level other than 4 (3.1.1) or 5.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// A packet other than CONNECT before CONNECT.
    #[error("the first packet must be CONNECT")]
    NotConnected,
    /// An unknown MQTT 5 property identifier.
    #[error("unknown property {0:#04x}")]
    UnknownProperty(u8),
    /// A property the packet may carry at most once, repeated (MQTT 5
    /// §2.2.2.2: a Protocol Error).
    #[error("property {0:#04x} more than once")]
    DuplicateProperty(u8),
    /// A CONNECT that failed after its protocol level was read: the server
    /// knows which version to refuse it in (MQTT 5 §4.13: CONNACK with the
    /// reason code before closing).
    #[error("bad CONNECT (protocol level {}): {error}", .version.level())]
    BadConnect {
        version: Version,
        error: Box<MqttCodecError>,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl MqttCodecError {
    /// The MQTT 5 reason code for a DISCONNECT (or CONNACK during connect).
    pub fn reason_code(&self) -> u8 {
        match self {
            MqttCodecError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            MqttCodecError::InvalidTopicName => reason::TOPIC_NAME_INVALID,
            MqttCodecError::InvalidProtocolName | MqttCodecError::UnsupportedProtocolLevel(_) => {
                reason::UNSUPPORTED_PROTOCOL_VERSION
            }
            MqttCodecError::NotConnected | MqttCodecError::DuplicateProperty(_) => {
                reason::PROTOCOL_ERROR
            }
            MqttCodecError::BadConnect { error, .. } => error.reason_code(),
            MqttCodecError::Io(_) => reason::UNSPECIFIED_ERROR,
            _ => reason::MALFORMED_PACKET,
        }
    }

    /// MQTT never resynchronises a byte stream after a bad packet.
    pub fn can_continue(&self) -> bool {
        false
    }
}
