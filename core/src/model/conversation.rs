//! `Conversation { type, target, line }` (DESIGN §2).

use serde::{Deserialize, Serialize};

/// Conversation types of DESIGN §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConversationType {
    Private,
    Group,
    Chatroom,
    Channel,
    Things,
}

impl ConversationType {
    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            0 => Some(Self::Private),
            1 => Some(Self::Group),
            2 => Some(Self::Chatroom),
            3 => Some(Self::Channel),
            4 => Some(Self::Things),
            _ => None,
        }
    }

    pub fn as_i32(self) -> i32 {
        match self {
            Self::Private => 0,
            Self::Group => 1,
            Self::Chatroom => 2,
            Self::Channel => 3,
            Self::Things => 4,
        }
    }
}

/// Where a message goes. `kind` is the raw wire value so that an unknown
/// type survives decoding and is rejected by validation with code 251.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Conversation {
    #[serde(rename = "type")]
    pub kind: i32,
    pub target: String,
    pub line: i32,
}

impl Conversation {
    pub fn private(target: impl Into<String>) -> Self {
        Conversation {
            kind: 0,
            target: target.into(),
            line: 0,
        }
    }

    pub fn group(target: impl Into<String>) -> Self {
        Conversation {
            kind: 1,
            target: target.into(),
            line: 0,
        }
    }

    pub fn conversation_type(&self) -> Option<ConversationType> {
        ConversationType::from_i32(self.kind)
    }

    /// The key under which a conversation's history is kept. A private
    /// conversation is the same one seen from either side, so its key uses
    /// the ordered pair of users.
    pub fn history_key(&self, sender: &str) -> String {
        match self.conversation_type() {
            Some(ConversationType::Private) | Some(ConversationType::Things) => {
                let (a, b) = if sender <= self.target.as_str() {
                    (sender, self.target.as_str())
                } else {
                    (self.target.as_str(), sender)
                };
                format!("{}\u{1f}{}\u{1f}{}\u{1f}{}", self.kind, self.line, a, b)
            }
            _ => format!("{}\u{1f}{}\u{1f}{}", self.kind, self.line, self.target),
        }
    }

    /// The conversation as seen by `viewer`: for a private chat, the peer.
    pub fn seen_by(&self, sender: &str, viewer: &str) -> Conversation {
        match self.conversation_type() {
            Some(ConversationType::Private) | Some(ConversationType::Things)
                if viewer == self.target && viewer != sender =>
            {
                Conversation {
                    kind: self.kind,
                    target: sender.to_string(),
                    line: self.line,
                }
            }
            _ => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_history_key_is_symmetric() {
        let a = Conversation::private("bob").history_key("alice");
        let b = Conversation::private("alice").history_key("bob");
        assert_eq!(a, b);
        assert_ne!(a, Conversation::group("bob").history_key("alice"));
    }

    #[test]
    fn seen_by_flips_private_target_for_recipient() {
        let c = Conversation::private("bob");
        assert_eq!(c.seen_by("alice", "bob").target, "alice");
        assert_eq!(c.seen_by("alice", "alice").target, "bob");
        assert_eq!(Conversation::group("g").seen_by("alice", "bob").target, "g");
    }
}
