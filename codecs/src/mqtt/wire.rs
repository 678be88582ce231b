//! Primitive MQTT data types (MQTT 5 §1.5): two/four-byte integers,
//! variable byte integers, UTF-8 strings and binary data, read from a
//! bounded slice cursor that never panics on short input.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::MqttCodecError;

/// Largest value of a variable byte integer (four bytes).
pub const MAX_VARINT: usize = 268_435_455;

/// A cursor over one packet's body.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

const SHORT: MqttCodecError = MqttCodecError::Malformed("packet shorter than its fields");

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], MqttCodecError> {
        let end = self.pos.checked_add(n).ok_or(SHORT)?;
        let s = self.buf.get(self.pos..end).ok_or(SHORT)?;
        self.pos = end;
        Ok(s)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    pub fn u8(&mut self) -> Result<u8, MqttCodecError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, MqttCodecError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, MqttCodecError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn varint(&mut self) -> Result<usize, MqttCodecError> {
        let mut value = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            value |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(MqttCodecError::Malformed(
            "variable byte integer over four bytes",
        ))
    }

    pub fn binary(&mut self) -> Result<Bytes, MqttCodecError> {
        let n = usize::from(self.u16()?);
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }

    pub fn string(&mut self) -> Result<String, MqttCodecError> {
        let n = usize::from(self.u16()?);
        utf8(self.take(n)?)
    }
}

/// A UTF-8 string as MQTT allows it: valid UTF-8 without U+0000.
pub fn utf8(b: &[u8]) -> Result<String, MqttCodecError> {
    let s = std::str::from_utf8(b).map_err(|_| MqttCodecError::InvalidUtf8)?;
    if s.contains('\0') {
        return Err(MqttCodecError::InvalidUtf8);
    }
    Ok(s.to_owned())
}

/// Parse a remaining length from the start of `b`: `Ok(None)` if more
/// bytes are needed, else the value and how many bytes it used.
pub fn parse_varint(b: &[u8]) -> Result<Option<(usize, usize)>, MqttCodecError> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Ok(None);
        };
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(MqttCodecError::MalformedRemainingLength)
}

pub fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub fn put_varint(out: &mut BytesMut, mut v: usize) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            break;
        }
    }
}

/// Strings and binaries longer than 65535 bytes cannot be encoded: they
/// are truncated at a char boundary (the server never produces them).
pub fn put_binary(out: &mut BytesMut, b: &[u8]) {
    let n = b.len().min(usize::from(u16::MAX));
    out.put_u16(n as u16);
    out.put_slice(&b[..n]);
}

pub fn put_string(out: &mut BytesMut, s: &str) {
    let mut n = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    put_binary(out, &s.as_bytes()[..n]);
}
