//! The stored message row: a [`Message`] with the users it went to and the
//! device that sent it, in a compact binary form (not JSON).
//!
//! Layout (version 1): `0x01`, then the fields in a fixed order, integers
//! as LEB128 varints (signed ones zigzag-encoded), strings and bytes as a
//! varint length and the bytes, lists as a varint count and the items.
//! The row's key is the message id, so the id is not repeated inside.
//! Decoding checks every length against the bytes left, so a damaged row
//! is an error, never a panic or a huge allocation.

use imgate_core::model::{Conversation, Message, MessagePayload};

const VERSION: u8 = 1;

/// A message as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub message: Message,
    /// Every user whose timeline holds it (recall and `toUsers` history
    /// filtering need them).
    pub recipients: Vec<String>,
    /// The device it was sent from (it gets no copy of its own message).
    pub sender_device: Option<String>,
}

/// Why a row could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("stored message row: {0}")]
pub struct RowError(&'static str);

impl RowError {
    pub(crate) fn new(why: &'static str) -> Self {
        RowError(why)
    }
}

pub fn encode(s: &StoredMessage) -> Vec<u8> {
    let m = &s.message;
    let p = &m.payload;
    let mut out = Vec::with_capacity(
        64 + m.sender.len()
            + m.conversation.target.len()
            + p.searchable_content.len()
            + p.content.len()
            + p.data.len()
            + m.client_msg_id.len()
            + s.recipients.iter().map(|r| r.len() + 1).sum::<usize>(),
    );
    out.push(VERSION);
    put_str(&mut out, &m.sender);
    put_str(&mut out, &m.client_msg_id);
    put_i64(&mut out, m.server_ts);
    match &s.sender_device {
        Some(d) => {
            out.push(1);
            put_str(&mut out, d);
        }
        None => out.push(0),
    }
    put_i64(&mut out, m.conversation.kind.into());
    put_str(&mut out, &m.conversation.target);
    put_i64(&mut out, m.conversation.line.into());
    put_list(&mut out, &m.to_users);
    put_list(&mut out, &s.recipients);
    put_i64(&mut out, p.content_type.into());
    put_str(&mut out, &p.searchable_content);
    put_str(&mut out, &p.push_content);
    put_str(&mut out, &p.content);
    put_bytes(&mut out, &p.data);
    put_i64(&mut out, p.media_type.into());
    put_str(&mut out, &p.remote_media_url);
    put_i64(&mut out, p.persist_flag.into());
    put_i64(&mut out, p.expire_duration.into());
    put_i64(&mut out, p.mentioned_type.into());
    put_list(&mut out, &p.mentioned_targets);
    put_str(&mut out, &p.extra);
    put_str(&mut out, &p.push_data);
    out
}

pub fn decode(id: u64, bytes: &[u8]) -> Result<StoredMessage, RowError> {
    let mut r = Reader::start(bytes)?;
    let sender = r.string()?;
    let client_msg_id = r.string()?;
    let server_ts = r.i64()?;
    let sender_device = match r.byte()? {
        0 => None,
        1 => Some(r.string()?),
        _ => return Err(RowError("bad sender device flag")),
    };
    let conversation = Conversation {
        kind: r.i32()?,
        target: r.string()?,
        line: r.i32()?,
    };
    let to_users = r.list()?;
    let recipients = r.list()?;
    let payload = MessagePayload {
        content_type: r.i32()?,
        searchable_content: r.string()?,
        push_content: r.string()?,
        content: r.string()?,
        data: r.bytes()?.to_vec(),
        media_type: r.i32()?,
        remote_media_url: r.string()?,
        persist_flag: r.i32()?,
        expire_duration: r.i32()?,
        mentioned_type: r.i32()?,
        mentioned_targets: r.list()?,
        extra: r.string()?,
        push_data: r.string()?,
    };
    if !r.rest.is_empty() {
        return Err(RowError("trailing bytes"));
    }
    Ok(StoredMessage {
        message: Message {
            message_id: id,
            sender,
            conversation,
            payload,
            server_ts,
            client_msg_id,
            to_users,
        },
        recipients,
        sender_device,
    })
}

/// The dedupe key of a row — `(sender, client_msg_id)` — without decoding
/// the rest (rebuilding the dedupe memory reads many rows).
pub fn dedupe_key(bytes: &[u8]) -> Result<(&str, &str), RowError> {
    let mut r = Reader::start(bytes)?;
    Ok((r.str()?, r.str()?))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    put_varint(out, items.len() as u64);
    for s in items {
        put_str(out, s);
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn start(bytes: &'a [u8]) -> Result<Self, RowError> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => Ok(Reader { rest }),
            Some(_) => Err(RowError("unknown row version")),
            None => Err(RowError("empty row")),
        }
    }

    fn byte(&mut self) -> Result<u8, RowError> {
        let (&b, rest) = self.rest.split_first().ok_or(RowError("truncated"))?;
        self.rest = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, RowError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(RowError("varint too long"))
    }

    fn i64(&mut self) -> Result<i64, RowError> {
        let z = self.varint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn i32(&mut self) -> Result<i32, RowError> {
        i32::try_from(self.i64()?).map_err(|_| RowError("integer out of range"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], RowError> {
        let len = self.varint()?;
        if len > self.rest.len() as u64 {
            return Err(RowError("length beyond the row"));
        }
        let (b, rest) = self.rest.split_at(len as usize);
        self.rest = rest;
        Ok(b)
    }

    fn str(&mut self) -> Result<&'a str, RowError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| RowError("invalid UTF-8"))
    }

    fn string(&mut self) -> Result<String, RowError> {
        self.str().map(str::to_string)
    }

    fn list(&mut self) -> Result<Vec<String>, RowError> {
        let n = self.varint()?;
        // Every item takes at least one byte: a count beyond that is damage.
        if n > self.rest.len() as u64 {
            return Err(RowError("list count beyond the row"));
        }
        (0..n).map(|_| self.string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredMessage {
        StoredMessage {
            message: Message {
                message_id: 42,
                sender: "alice".into(),
                conversation: Conversation {
                    kind: 1,
                    target: "g1".into(),
                    line: -3,
                },
                payload: MessagePayload {
                    content_type: 1,
                    searchable_content: "héllo".into(),
                    push_content: "p".into(),
                    content: "c".into(),
                    data: vec![0, 1, 255],
                    media_type: 7,
                    remote_media_url: "http://x".into(),
                    persist_flag: 3,
                    expire_duration: 60,
                    mentioned_type: 1,
                    mentioned_targets: vec!["bob".into()],
                    extra: "{}".into(),
                    push_data: "pd".into(),
                },
                server_ts: 1_780_000_000_123,
                client_msg_id: "c-1".into(),
                to_users: vec!["bob".into(), "carol".into()],
            },
            recipients: vec!["alice".into(), "bob".into(), "carol".into()],
            sender_device: Some("phone".into()),
        }
    }

    #[test]
    fn round_trips_every_field() {
        let s = sample();
        let bytes = encode(&s);
        assert_eq!(decode(42, &bytes), Ok(s.clone()));
        assert_eq!(dedupe_key(&bytes), Ok(("alice", "c-1")));
        let plain = StoredMessage {
            sender_device: None,
            message: Message {
                payload: MessagePayload::default(),
                to_users: vec![],
                ..s.message
            },
            recipients: vec![],
        };
        assert_eq!(decode(42, &encode(&plain)), Ok(plain));
    }

    #[test]
    fn a_100_byte_text_row_is_small() {
        let mut s = sample();
        s.message.payload = MessagePayload {
            content_type: 1,
            searchable_content: "x".repeat(100),
            ..MessagePayload::default()
        };
        s.message.to_users.clear();
        s.recipients = vec!["alice".into(), "bob".into()];
        let n = encode(&s).len();
        assert!(n < 160, "{n} bytes");
    }

    #[test]
    fn every_truncation_and_damage_is_an_error() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert!(decode(1, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(1, &extra).is_err());
        let mut bad = bytes;
        bad[0] = 9;
        assert_eq!(decode(1, &bad), Err(RowError("unknown row version")));
        // A huge length or count is refused before any allocation.
        assert!(decode(1, &[1, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
