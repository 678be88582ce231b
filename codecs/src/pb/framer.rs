//! `PbFramer`: bytes ↔ [`PbFrame`] for a PB connection, as a tokio-util
//! `Decoder`/`Encoder` so a session wraps its socket in `Framed`.
//!
//! Framing only: the body is not looked at here. The size limit is checked
//! from the header's length field before any body byte is buffered, and
//! buffer space is reserved only for lengths already known to be within the
//! limit, so a peer cannot make the server allocate by announcing a huge
//! frame. An incomplete frame is `Ok(None)`, never an error, and the buffer
//! advances only once a whole frame is there.

use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::commands::service_of;
use super::error::PbCodecError;
use super::frame::PbFrame;
use super::header::{PbHeader, DEFAULT_MAX_FRAME, HEADER_LEN, PB_VERSION};

/// The PB framer: one per connection (it holds no state but the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PbFramer {
    max_frame: usize,
}

impl PbFramer {
    /// A framer accepting and emitting frames of at most `max_frame` bytes,
    /// header included. The limit is capped at `u32::MAX`, the largest
    /// length a header can carry; below 16 no frame fits.
    pub fn new(max_frame: usize) -> PbFramer {
        PbFramer {
            max_frame: max_frame.min(u32::MAX as usize),
        }
    }

    /// The maximum frame size in bytes, header included.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn check_length(&self, length: u32) -> Result<usize, PbCodecError> {
        let len = length as usize;
        if len < HEADER_LEN {
            return Err(PbCodecError::FrameTooShort { length });
        }
        if len > self.max_frame {
            return Err(PbCodecError::FrameTooLarge {
                length,
                max: self.max_frame,
            });
        }
        Ok(len)
    }
}

impl Default for PbFramer {
    /// A framer with the default 1 MiB limit.
    fn default() -> Self {
        PbFramer::new(DEFAULT_MAX_FRAME)
    }
}

fn be_u16_at(src: &[u8], at: usize) -> Option<u16> {
    let pair: [u8; 2] = src.get(at..at + 2)?.try_into().ok()?;
    Some(u16::from_be_bytes(pair))
}

impl Decoder for PbFramer {
    type Item = PbFrame;
    type Error = PbCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<PbFrame>, PbCodecError> {
        // Refuse a bad length or version as soon as its bytes are in, even
        // before the rest of the header arrives.
        let Some(length) = src.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) else {
            return Ok(None);
        };
        let len = self.check_length(length)?;
        if let Some(version) = be_u16_at(src, 4) {
            if version != PB_VERSION {
                return Err(PbCodecError::UnsupportedVersion { version });
            }
        }
        let Some(head) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = PbHeader::from_bytes(head);
        if src.len() < len {
            // `len` is within `max_frame`: bounded.
            src.reserve(len - src.len());
            return Ok(None);
        }
        let mut whole = src.split_to(len);
        let body = whole.split_off(HEADER_LEN).freeze();
        Ok(Some(PbFrame {
            flags: header.flags,
            service: header.service,
            command: header.command,
            seq: header.seq,
            reserved: header.reserved,
            body,
        }))
    }
}

impl Encoder<PbFrame> for PbFramer {
    type Error = PbCodecError;

    fn encode(&mut self, frame: PbFrame, dst: &mut BytesMut) -> Result<(), PbCodecError> {
        let len = frame.wire_len();
        let too_large = || PbCodecError::OutgoingFrameTooLarge {
            length: len,
            max: self.max_frame,
        };
        if len > self.max_frame {
            return Err(too_large());
        }
        let length = u32::try_from(len).map_err(|_| too_large())?;
        let header = PbHeader {
            length,
            version: PB_VERSION,
            flags: frame.flags,
            service: service_of(frame.command),
            command: frame.command,
            seq: frame.seq,
            reserved: frame.reserved,
        };
        dst.reserve(len);
        dst.put_slice(&header.to_bytes());
        dst.put_slice(&frame.body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::pb::commands;

    #[test]
    fn encode_then_decode_is_identity_and_consumes_exactly_one_frame() {
        let mut framer = PbFramer::default();
        let frame = PbFrame::new(commands::SEND_REQUEST, 42, Bytes::from_static(b"\x0a\x01x"));
        let mut buf = BytesMut::new();
        framer.encode(frame.clone(), &mut buf).unwrap();
        framer.encode(PbFrame::heartbeat(43), &mut buf).unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 19]);
        assert_eq!(&buf[8..10], &[0, 3], "service is the command's high byte");
        assert_eq!(framer.decode(&mut buf).unwrap(), Some(frame));
        assert_eq!(
            framer.decode(&mut buf).unwrap(),
            Some(PbFrame::heartbeat(43))
        );
        assert_eq!(framer.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn encoder_refuses_frames_over_the_limit_and_writes_nothing() {
        let mut framer = PbFramer::new(20);
        let mut buf = BytesMut::new();
        let err = framer
            .encode(
                PbFrame::new(commands::ERROR, 1, Bytes::from(vec![0u8; 5])),
                &mut buf,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            PbCodecError::OutgoingFrameTooLarge {
                length: 21,
                max: 20
            }
        ));
        assert!(err.can_continue());
        assert!(buf.is_empty());
    }
}
