//! One line of an import file, looked at without building it: its
//! `kind` (message, group or user) and the id that names it, read by a
//! borrowing parse that also checks the line is JSON. The line itself is
//! sent on as it is, so the CLI never rebuilds a message it does not need
//! to understand (the server checks every field).

use std::borrow::Cow;

use serde::Deserialize;

/// What a line describes (`"kind"`, default `message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Group,
    User,
}

impl Kind {
    /// The admin endpoint and the body's array key for this kind.
    pub fn endpoint(self) -> (&'static str, &'static str) {
        match self {
            Kind::Message => ("/admin/import/messages", "messages"),
            Kind::Group => ("/admin/import/groups", "groups"),
            Kind::User => ("/admin/import/users", "users"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Group => "group",
            Kind::User => "user",
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OldId<'a> {
    Num(u64),
    Str(#[serde(borrow)] Cow<'a, str>),
}

#[derive(Deserialize, Default)]
struct GroupRef<'a> {
    #[serde(rename = "targetId", borrow, default)]
    target_id: Cow<'a, str>,
}

/// The fields of a line the CLI reads; everything else is skipped.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "messageUid", borrow, default)]
    message_uid: Option<OldId<'a>>,
    #[serde(rename = "messageUidStr", borrow, default)]
    message_uid_str: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    group: Option<GroupRef<'a>>,
    #[serde(rename = "userId", borrow, default)]
    user_id: Option<Cow<'a, str>>,
}

/// A line's kind and the id it is known by: a message's old id (as the
/// server reads it: `messageUidStr`, else `messageUid`, trimmed), a
/// group's `targetId`, a user's `userId`. Empty when it has none (the
/// server then refuses it with its code).
#[derive(Debug, PartialEq, Eq)]
pub struct Peeked {
    pub kind: Kind,
    pub id: String,
}

/// Why a line is not sent at all.
#[derive(Debug, PartialEq, Eq)]
pub enum LineError {
    NotJson(String),
    UnknownKind(String),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::NotJson(e) => write!(f, "not a JSON object ({e})"),
            LineError::UnknownKind(k) => {
                write!(f, "unknown kind {k:?} (message, group or user)")
            }
        }
    }
}

pub fn peek(line: &str) -> Result<Peeked, LineError> {
    let p: Peek<'_> = serde_json::from_str(line).map_err(|e| LineError::NotJson(e.to_string()))?;
    let kind = match p.kind.as_deref() {
        None | Some("message") => Kind::Message,
        Some("group") => Kind::Group,
        Some("user") => Kind::User,
        Some(other) => return Err(LineError::UnknownKind(other.to_string())),
    };
    let id = match kind {
        Kind::Message => match (&p.message_uid_str, &p.message_uid) {
            (Some(s), _) if !s.trim().is_empty() => s.trim().to_string(),
            (_, Some(OldId::Num(n))) => n.to_string(),
            (_, Some(OldId::Str(s))) => s.trim().to_string(),
            _ => String::new(),
        },
        Kind::Group => p
            .group
            .map(|g| g.target_id.into_owned())
            .unwrap_or_default(),
        Kind::User => p.user_id.map(Cow::into_owned).unwrap_or_default(),
    };
    Ok(Peeked { kind, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_ids_as_the_server_reads_them() {
        let m = |s: &str| peek(s).map(|p| (p.kind, p.id));
        assert_eq!(
            m(r#"{"messageUid": 12, "conv": {"type": 0}, "payload": {"content": "a\"b"}}"#),
            Ok((Kind::Message, "12".into()))
        );
        assert_eq!(
            m(r#"{"messageUid": " v-1 ", "messageUidStr": ""}"#),
            Ok((Kind::Message, "v-1".into()))
        );
        assert_eq!(
            m(r#"{"messageUid": 1, "messageUidStr": "9007199254740993"}"#),
            Ok((Kind::Message, "9007199254740993".into()))
        );
        assert_eq!(
            m(r#"{"kind": "group", "group": {"targetId": "g\u0031"}, "members": []}"#),
            Ok((Kind::Group, "g1".into()))
        );
        assert_eq!(
            m(r#"{"kind": "user", "userId": "alice", "status": 1}"#),
            Ok((Kind::User, "alice".into()))
        );
        assert_eq!(m(r#"{"sender": "a"}"#), Ok((Kind::Message, String::new())));
        assert_eq!(
            m(r#"{"kind": "room"}"#),
            Err(LineError::UnknownKind("room".into()))
        );
        assert!(matches!(m("{not json"), Err(LineError::NotJson(_))));
        assert!(matches!(m("[1, 2]"), Err(LineError::NotJson(_))));
    }
}
