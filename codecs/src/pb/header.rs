//! The 16-byte PB frame header (DESIGN §5.2, TeamTalk's layout).
//!
//! ```text
//! 0       4         6       8         10        12    14         16
//! | length u32 | version u16 | flags u16 | service u16 | command u16 | seq u16 | reserved u16 |
//! ```
//! All big-endian. `length` counts the whole frame, header included, so it is
//! known — and checked against the size limit — before any body byte is
//! buffered.

/// Bytes in a PB header; also the smallest valid `length`.
pub const HEADER_LEN: usize = 16;

/// The only PB version imgate speaks.
pub const PB_VERSION: u16 = 1;

/// Default maximum frame size (header included): 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// A PB header as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PbHeader {
    /// Whole frame length in bytes, header included.
    pub length: u32,
    pub version: u16,
    pub flags: u16,
    /// The command's high byte (1 login, 3 message, 7 other).
    pub service: u16,
    pub command: u16,
    /// Echoed in a response; 0 in a server push.
    pub seq: u16,
    pub reserved: u16,
}

impl PbHeader {
    /// Reads a header from its 16 bytes. Any bytes are a header: checking
    /// the values is the framer's job.
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> PbHeader {
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        PbHeader {
            length: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            version: u16_at(4),
            flags: u16_at(6),
            service: u16_at(8),
            command: u16_at(10),
            seq: u16_at(12),
            reserved: u16_at(14),
        }
    }

    /// The header's 16 wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.length.to_be_bytes());
        for (i, v) in [
            self.version,
            self.flags,
            self.service,
            self.command,
            self.seq,
            self.reserved,
        ]
        .into_iter()
        .enumerate()
        {
            let at = 4 + 2 * i;
            b[at..at + 2].copy_from_slice(&v.to_be_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_are_big_endian_in_contract_order() {
        let h = PbHeader {
            length: 0x0102_0304,
            version: 0x0506,
            flags: 0x0708,
            service: 0x090a,
            command: 0x0b0c,
            seq: 0x0d0e,
            reserved: 0x0f10,
        };
        let b = h.to_bytes();
        assert_eq!(b, core::array::from_fn(|i| i as u8 + 1));
        assert_eq!(PbHeader::from_bytes(&b), h);
    }
}
