//! `Message`: a stored, id-stamped message (DESIGN §2).

use serde::{Deserialize, Serialize};

use super::{Conversation, MessagePayload};

/// A message as stored and delivered. The internal serde form is compact;
/// the contract JSON shape lives in [`super::json::MessageJson`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message_id: u64,
    pub sender: String,
    pub conversation: Conversation,
    pub payload: MessagePayload,
    /// Server time in ms since the Unix epoch.
    pub server_ts: i64,
    pub client_msg_id: String,
    pub to_users: Vec<String>,
}

impl Message {
    /// When the message expires (ms since the epoch): `server_ts` plus its
    /// `expireDuration` seconds; None if it never does (0 or negative).
    pub fn expires_at(&self) -> Option<i64> {
        let secs = self.payload.expire_duration;
        (secs > 0).then(|| self.server_ts.saturating_add(i64::from(secs) * 1000))
    }

    /// Expired at `now` (ms): no longer delivered, synced or in history.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at().is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_server_time_plus_the_duration() {
        let mut m = Message {
            message_id: 1,
            sender: "a".into(),
            conversation: Conversation::private("b"),
            payload: MessagePayload::text("x"),
            server_ts: 10_000,
            client_msg_id: String::new(),
            to_users: vec![],
        };
        assert_eq!(m.expires_at(), None);
        assert!(!m.is_expired(i64::MAX));
        m.payload.expire_duration = 5;
        assert_eq!(m.expires_at(), Some(15_000));
        assert!(!m.is_expired(14_999));
        assert!(m.is_expired(15_000));
        m.payload.expire_duration = -1;
        assert!(!m.is_expired(i64::MAX));
    }
}
