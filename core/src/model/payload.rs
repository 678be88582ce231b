//! `MessagePayload`: the fields of the seeds' IM server, with its JSON keys,
//! so its integrators migrate unchanged.

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Content types of DESIGN §2.
pub mod content_type {
    pub const TEXT: i32 = 1;
    pub const VOICE: i32 = 2;
    pub const IMAGE: i32 = 3;
    pub const LOCATION: i32 = 4;
    pub const FILE: i32 = 5;
    pub const VIDEO: i32 = 6;
    pub const STICKER: i32 = 7;
    pub const LINK: i32 = 8;
    pub const RECALL: i32 = 80;
    pub const TIP: i32 = 90;
    pub const TYPING: i32 = 91;
    /// Reactions to a message (XEP-0444 on XMPP): `content` is JSON
    /// `{"messageUid","sender","clientMsgId","reactions":[..]}`, the
    /// reactor's current set (empty: all removed). See docs/xmpp.md.
    pub const REACTION: i32 = 120;
    /// A correction of an earlier message (XEP-0308 on XMPP): the new text
    /// in `searchableContent`, `content` is JSON
    /// `{"messageUid","sender","clientMsgId"}` naming the corrected one.
    pub const EDIT: i32 = 121;
}

/// Persist flags of DESIGN §2 (what each means: `docs/messages.md`).
pub mod persist_flag {
    /// Delivered to online devices only; never in sync, history or MAM.
    pub const NOT_PERSISTED: i32 = 0;
    /// Stored; not counted as unread.
    pub const PERSIST: i32 = 1;
    /// Stored and counted as unread for its recipients.
    pub const PERSIST_AND_COUNT: i32 = 3;
    /// Like 0 (live only), meant for signals such as typing.
    pub const TRANSPARENT: i32 = 4;
}

/// A JSON payload without `persistFlag` is an ordinary message (persist
/// and count), as the XMPP `<payload>` default; the PB wire cannot tell an
/// absent field from 0, so PB clients set it.
fn default_persist_flag() -> i32 {
    persist_flag::PERSIST_AND_COUNT
}

/// One message's content, protocol-independent. Field order and meaning
/// follow the PB field numbers of DESIGN §5.2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessagePayload {
    #[serde(rename = "type")]
    pub content_type: i32,
    #[serde(rename = "searchableContent")]
    pub searchable_content: String,
    #[serde(rename = "pushContent")]
    pub push_content: String,
    pub content: String,
    #[serde(
        rename = "base64edData",
        serialize_with = "ser_b64",
        deserialize_with = "de_b64"
    )]
    pub data: Vec<u8>,
    #[serde(rename = "mediaType")]
    pub media_type: i32,
    #[serde(rename = "remoteMediaUrl")]
    pub remote_media_url: String,
    #[serde(rename = "persistFlag", default = "default_persist_flag")]
    pub persist_flag: i32,
    #[serde(rename = "expireDuration")]
    pub expire_duration: i32,
    #[serde(rename = "mentionedType")]
    pub mentioned_type: i32,
    #[serde(rename = "mentionedTarget")]
    pub mentioned_targets: Vec<String>,
    pub extra: String,
    #[serde(rename = "pushData")]
    pub push_data: String,
}

impl MessagePayload {
    /// A plain text message (type 1, persisted and counted).
    pub fn text(text: impl Into<String>) -> Self {
        MessagePayload {
            content_type: content_type::TEXT,
            searchable_content: text.into(),
            persist_flag: persist_flag::PERSIST_AND_COUNT,
            ..Default::default()
        }
    }

    /// Persist flag 0 or 4: delivered live to online devices only, never
    /// stored (sync, history, MAM, conversations do not see it).
    pub fn is_live_only(&self) -> bool {
        matches!(
            self.persist_flag,
            persist_flag::NOT_PERSISTED | persist_flag::TRANSPARENT
        )
    }

    /// Persist flag 3: counted as unread for its recipients.
    pub fn counts_as_unread(&self) -> bool {
        self.persist_flag == persist_flag::PERSIST_AND_COUNT
    }

    /// Bytes this payload occupies, for size limits.
    pub fn approximate_size(&self) -> usize {
        self.searchable_content.len()
            + self.push_content.len()
            + self.content.len()
            + self.data.len()
            + self.remote_media_url.len()
            + self
                .mentioned_targets
                .iter()
                .map(|t| t.len() + 1)
                .sum::<usize>()
            + self.extra.len()
            + self.push_data.len()
            + 40
    }
}

fn ser_b64<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
}

fn de_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s {
        None => Ok(Vec::new()),
        Some(s) => base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| serde::de::Error::custom(format!("base64edData: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_match_the_contract() {
        let p = MessagePayload {
            content_type: 3,
            searchable_content: "s".into(),
            push_content: "p".into(),
            content: "c".into(),
            data: vec![0, 1, 255],
            media_type: 2,
            remote_media_url: "http://x/y.png".into(),
            persist_flag: 1,
            expire_duration: 60,
            mentioned_type: 1,
            mentioned_targets: vec!["bob".into()],
            extra: "{}".into(),
            push_data: "pd".into(),
        };
        let v = serde_json::to_value(&p).unwrap();
        for key in [
            "type",
            "searchableContent",
            "pushContent",
            "content",
            "base64edData",
            "mediaType",
            "remoteMediaUrl",
            "persistFlag",
            "expireDuration",
            "mentionedType",
            "mentionedTarget",
            "extra",
            "pushData",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["base64edData"], "AAH/");
        let back: MessagePayload = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn missing_fields_default_and_bad_base64_is_an_error() {
        let p: MessagePayload =
            serde_json::from_str(r#"{"type":1,"searchableContent":"hi"}"#).unwrap();
        assert_eq!(p.searchable_content, "hi");
        assert!(p.data.is_empty());
        assert_eq!(p.persist_flag, persist_flag::PERSIST_AND_COUNT, "absent: 3");
        let p: MessagePayload = serde_json::from_str(r#"{"persistFlag":0}"#).unwrap();
        assert!(p.is_live_only());
        assert!(serde_json::from_str::<MessagePayload>(r#"{"base64edData":"!!"}"#).is_err());
    }
}
