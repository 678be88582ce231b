//! The text every IM-path load generator sends (MQTT `im/send`, and the
//! XMPP and PB senders), so any receiver can measure latency and count
//! each message exactly once: `"<seq> <send time ns> xxxx…"`, padded to the
//! requested size. The send time is nanoseconds since the run's clock base
//! (the message's due time when the run is paced, see `schedule`).

use std::time::Duration;

use serde_json::{json, Value};

/// The searchable text of message `seq`, stamped `sent`, `size` bytes
/// long (longer only if `size` is smaller than the two numbers).
pub fn text(seq: usize, sent: Duration, size: usize) -> String {
    let mut t = format!("{seq} {} ", sent.as_nanos());
    if t.len() < size {
        t.extend(std::iter::repeat_n('x', size - t.len()));
    }
    t
}

/// (send time, seq) of a text made by [`text`]; `None` for anything else.
pub fn parse(text: &str) -> Option<(Duration, u64)> {
    let mut f = text.split(' ');
    let seq = f.next()?.parse().ok()?;
    let nanos = f.next()?.parse().ok()?;
    Some((Duration::from_nanos(nanos), seq))
}

/// The JSON send request of DESIGN §5.5: a private text message to `to`.
pub fn send_request(to: &str, client_msg_id: &str, text: &str) -> Value {
    json!({
        "conv": {"type": 0, "target": to, "line": 0},
        "payload": {"type": 1, "searchableContent": text},
        "clientMsgId": client_msg_id,
    })
}

/// The searchable text of a delivered JSON message (DESIGN §5.5).
pub fn text_of_message(message: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(message).ok()?;
    v.get("payload")?
        .get("searchableContent")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_is_padded() {
        let t = text(42, Duration::from_nanos(123_456), 64);
        assert_eq!(t.len(), 64);
        assert_eq!(parse(&t), Some((Duration::from_nanos(123_456), 42)));
        assert_eq!(parse("hello world"), None);
    }

    #[test]
    fn delivered_message_text_is_found() {
        let m = br#"{"messageUid":1,"payload":{"type":1,"searchableContent":"7 9 x"}}"#;
        assert_eq!(text_of_message(m).as_deref(), Some("7 9 x"));
        assert_eq!(text_of_message(b"not json"), None);
    }
}
