//! [`MqttFramer`]: a tokio-util `Decoder`/`Encoder` between bytes and
//! [`Packet`]s. The maximum packet size is checked from the fixed header
//! (type byte + remaining length) before any of the body is buffered.
//!
//! The framer learns the protocol version from the CONNECT it decodes (a
//! server; also from a bad CONNECT whose level was readable, so that the
//! refusing CONNACK has that version's form) or is told it up front (a
//! client, [`MqttFramer::with_version`]).

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::decode::decode_packet;
use super::encode::encode_packet;
use super::error::MqttCodecError;
use super::packet::{Packet, Version};
use super::wire;

/// Default maximum packet size: 1 MiB.
pub const DEFAULT_MAX_PACKET: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct MqttFramer {
    max_packet: usize,
    version: Option<Version>,
}

impl MqttFramer {
    /// A server-side framer: the first packet must be CONNECT.
    pub fn new(max_packet: usize) -> Self {
        MqttFramer {
            max_packet,
            version: None,
        }
    }

    /// A framer for an already known version (clients, tests).
    pub fn with_version(max_packet: usize, version: Version) -> Self {
        MqttFramer {
            max_packet,
            version: Some(version),
        }
    }

    pub fn version(&self) -> Option<Version> {
        self.version
    }
}

impl Decoder for MqttFramer {
    type Item = Packet;
    type Error = MqttCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, MqttCodecError> {
        let Some(&first) = src.first() else {
            return Ok(None);
        };
        let Some((remaining, len_bytes)) = wire::parse_varint(&src[1..])? else {
            return Ok(None);
        };
        let total = 1 + len_bytes + remaining;
        if total > self.max_packet {
            return Err(MqttCodecError::PacketTooLarge {
                size: total,
                max: self.max_packet,
            });
        }
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(1 + len_bytes);
        let body = src.split_to(remaining);
        let version = match (self.version, first >> 4) {
            (Some(v), _) => v,
            // CONNECT declares its version; decode_packet reads it.
            (None, 1) => Version::V4,
            (None, _) => return Err(MqttCodecError::NotConnected),
        };
        let packet = match decode_packet(first, &body, version) {
            Ok(packet) => packet,
            Err(e) => {
                // A bad CONNECT of a known level: the refusal (CONNACK)
                // is encoded in that version.
                if let (None, MqttCodecError::BadConnect { version, .. }) = (self.version, &e) {
                    self.version = Some(*version);
                }
                return Err(e);
            }
        };
        if let (None, Packet::Connect(c)) = (self.version, &packet) {
            self.version = Some(c.version);
        }
        Ok(Some(packet))
    }
}

impl Encoder<Packet> for MqttFramer {
    type Error = MqttCodecError;

    fn encode(&mut self, packet: Packet, dst: &mut BytesMut) -> Result<(), MqttCodecError> {
        encode_packet(&packet, self.version.unwrap_or(Version::V4), dst);
        Ok(())
    }
}

/// The encoded size of a packet (to honour a client's Maximum Packet Size).
pub fn encoded_len(packet: &Packet, version: Version) -> usize {
    let mut b = BytesMut::new();
    encode_packet(packet, version, &mut b);
    b.len()
}
