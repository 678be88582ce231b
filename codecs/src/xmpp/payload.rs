//! `<payload xmlns='urn:imgate:payload'>`: every `MessagePayload` field
//! (and the conversation details) that `<body>` cannot carry, so that a
//! message crossing XMPP between imgate clients loses nothing (DESIGN §2,
//! §5.4).
//!
//! Shape (attributes for numbers, one child per string, in §2 JSON names):
//!
//! ```xml
//! <payload xmlns='urn:imgate:payload' type='3' persistFlag='1' mediaType='2'
//!          expireDuration='60' mentionedType='1' convType='0' line='0'>
//!   <pushContent>…</pushContent><content>…</content><data>base64</data>
//!   <remoteMediaUrl>…</remoteMediaUrl><mentionedTarget>bob</mentionedTarget>
//!   <extra>…</extra><pushData>…</pushData><toUser>bob</toUser>
//! </payload>
//! ```
//!
//! `type` and `persistFlag` are always written; other numbers only when
//! non-zero (absent = 0; absent `type` = 1 and `persistFlag` = 3, the text
//! defaults). The searchable content travels in `<body>`; only when it
//! holds characters XML 1.0 cannot carry does it also go here, as
//! `<searchableContent enc='base64'>`. Any string child may be
//! `enc='base64'` (UTF-8 bytes) for the same reason.

use base64::Engine;
use imgate_core::model::{content_type, persist_flag, MessagePayload};
use imgate_core::{ErrorCode, ImError};

use super::element::{is_xml_char, Element};
use super::ns;

/// The payload element's name.
pub const PAYLOAD: &str = "payload";

/// Conversation details carried beside the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadExtras {
    /// Explicit conversation type (chatroom, channel, things, ...).
    pub conv_type: Option<i32>,
    pub line: i32,
    pub to_users: Vec<String>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn invalid(msg: impl Into<String>) -> ImError {
    ImError::new(ErrorCode::InvalidParameter, msg)
}

/// Whether `s` can be written as XML text as it is.
pub fn xml_safe(s: &str) -> bool {
    s.chars().all(is_xml_char)
}

/// `s` with every character XML cannot carry replaced by U+FFFD (for the
/// human-readable `<body>` when the exact text goes base64 in the payload).
pub fn xml_sanitized(s: &str) -> String {
    s.chars()
        .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' })
        .collect()
}

fn string_child(name: &str, value: &str) -> Element {
    let el = Element::new(name, ns::IMGATE_PAYLOAD);
    if xml_safe(value) {
        el.text(value)
    } else {
        el.attr("enc", "base64").text(B64.encode(value.as_bytes()))
    }
}

fn read_string(el: &Element) -> Result<String, ImError> {
    let text = el.text_content();
    match el.get_attr("enc") {
        None => Ok(text),
        Some("base64") => {
            let bytes = B64
                .decode(text.trim())
                .map_err(|e| invalid(format!("payload {}: bad base64: {e}", el.name)))?;
            String::from_utf8(bytes).map_err(|_| invalid(format!("payload {}: not UTF-8", el.name)))
        }
        Some(other) => Err(invalid(format!(
            "payload {}: unknown enc {other:?}",
            el.name
        ))),
    }
}

fn read_int(el: &Element, name: &str, default: i32) -> Result<i32, ImError> {
    match el.get_attr(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| invalid(format!("payload attribute {name}={v:?} is not a number"))),
    }
}

/// Whether `p` equals `MessagePayload::text(p.searchable_content)`,
/// without copying the text (this runs for every delivery). Every field
/// is named, so a new one must be added here.
fn is_plain_text(p: &MessagePayload) -> bool {
    let plain = MessagePayload::text(String::new());
    let MessagePayload {
        content_type,
        searchable_content: _,
        push_content,
        content,
        data,
        media_type,
        remote_media_url,
        persist_flag,
        expire_duration,
        mentioned_type,
        mentioned_targets,
        extra,
        push_data,
    } = p;
    *content_type == plain.content_type
        && *push_content == plain.push_content
        && *content == plain.content
        && *data == plain.data
        && *media_type == plain.media_type
        && *remote_media_url == plain.remote_media_url
        && *persist_flag == plain.persist_flag
        && *expire_duration == plain.expire_duration
        && *mentioned_type == plain.mentioned_type
        && *mentioned_targets == plain.mentioned_targets
        && *extra == plain.extra
        && *push_data == plain.push_data
}

/// Whether a message needs the payload element (anything `<body>` alone
/// would lose).
pub fn needs_payload_element(p: &MessagePayload, extras: &PayloadExtras) -> bool {
    !is_plain_text(p)
        || !xml_safe(&p.searchable_content)
        || extras.conv_type.is_some()
        || extras.line != 0
        || !extras.to_users.is_empty()
}

/// The payload element for `p`.
pub fn encode_payload(p: &MessagePayload, extras: &PayloadExtras) -> Element {
    let mut el = Element::new(PAYLOAD, ns::IMGATE_PAYLOAD)
        .attr("type", p.content_type.to_string())
        .attr("persistFlag", p.persist_flag.to_string());
    for (name, v) in [
        ("mediaType", p.media_type),
        ("expireDuration", p.expire_duration),
        ("mentionedType", p.mentioned_type),
        ("line", extras.line),
    ] {
        if v != 0 {
            el = el.attr(name, v.to_string());
        }
    }
    if let Some(t) = extras.conv_type {
        el = el.attr("convType", t.to_string());
    }
    if !xml_safe(&p.searchable_content) {
        el = el.child(string_child("searchableContent", &p.searchable_content));
    }
    for (name, v) in [
        ("pushContent", &p.push_content),
        ("content", &p.content),
        ("remoteMediaUrl", &p.remote_media_url),
        ("extra", &p.extra),
        ("pushData", &p.push_data),
    ] {
        if !v.is_empty() {
            el = el.child(string_child(name, v));
        }
    }
    if !p.data.is_empty() {
        el = el.child(Element::new("data", ns::IMGATE_PAYLOAD).text(B64.encode(&p.data)));
    }
    for t in &p.mentioned_targets {
        el = el.child(string_child("mentionedTarget", t));
    }
    for u in &extras.to_users {
        el = el.child(string_child("toUser", u));
    }
    el
}

/// The payload of a message from its `<body>` text and optional payload
/// element.
pub fn decode_payload(
    body: Option<&str>,
    el: Option<&Element>,
) -> Result<(MessagePayload, PayloadExtras), ImError> {
    let body = body.unwrap_or_default();
    let Some(el) = el else {
        return Ok((MessagePayload::text(body), PayloadExtras::default()));
    };
    let mut p = MessagePayload {
        content_type: read_int(el, "type", content_type::TEXT)?,
        searchable_content: body.to_string(),
        persist_flag: read_int(el, "persistFlag", persist_flag::PERSIST_AND_COUNT)?,
        media_type: read_int(el, "mediaType", 0)?,
        expire_duration: read_int(el, "expireDuration", 0)?,
        mentioned_type: read_int(el, "mentionedType", 0)?,
        ..Default::default()
    };
    let mut extras = PayloadExtras {
        conv_type: match el.get_attr("convType") {
            Some(_) => Some(read_int(el, "convType", 0)?),
            None => None,
        },
        line: read_int(el, "line", 0)?,
        to_users: Vec::new(),
    };
    for child in el.elements().filter(|c| c.ns == ns::IMGATE_PAYLOAD) {
        match child.name.as_str() {
            "searchableContent" => p.searchable_content = read_string(child)?,
            "pushContent" => p.push_content = read_string(child)?,
            "content" => p.content = read_string(child)?,
            "remoteMediaUrl" => p.remote_media_url = read_string(child)?,
            "extra" => p.extra = read_string(child)?,
            "pushData" => p.push_data = read_string(child)?,
            "mentionedTarget" => p.mentioned_targets.push(read_string(child)?),
            "toUser" => extras.to_users.push(read_string(child)?),
            "data" => {
                p.data = B64
                    .decode(child.text_content().trim())
                    .map_err(|e| invalid(format!("payload data: bad base64: {e}")))?
            }
            // Unknown children are ignored: a newer imgate may add fields.
            _ => {}
        }
    }
    Ok((p, extras))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_check_matches_comparing_with_a_text_payload() {
        let mut with_extra = MessagePayload::text("hi");
        with_extra.extra = "x".into();
        let mut with_targets = MessagePayload::text("hi");
        with_targets.mentioned_targets = vec!["bob".into()];
        for p in [
            MessagePayload::text("hi"),
            MessagePayload::text(""),
            full(),
            with_extra,
            with_targets,
        ] {
            let old = p == MessagePayload::text(p.searchable_content.clone());
            assert_eq!(is_plain_text(&p), old, "{p:?}");
        }
    }

    fn full() -> MessagePayload {
        MessagePayload {
            content_type: 3,
            searchable_content: "s \u{1}".into(),
            push_content: "p".into(),
            content: "c\r\n".into(),
            data: vec![0, 1, 255],
            media_type: 2,
            remote_media_url: "http://x/y.png".into(),
            persist_flag: 0,
            expire_duration: 60,
            mentioned_type: 1,
            mentioned_targets: vec!["bob".into(), "carol".into()],
            extra: "{\"k\":1}".into(),
            push_data: "pd\u{0}".into(),
        }
    }

    #[test]
    fn every_field_round_trips() {
        let p = full();
        let extras = PayloadExtras {
            conv_type: Some(2),
            line: 3,
            to_users: vec!["bob".into()],
        };
        assert!(needs_payload_element(&p, &extras));
        let el = encode_payload(&p, &extras);
        let body = xml_sanitized(&p.searchable_content);
        let (back, ex) = decode_payload(Some(&body), Some(&el)).unwrap();
        assert_eq!(back, p);
        assert_eq!(ex, extras);
    }

    #[test]
    fn plain_text_needs_no_element() {
        let p = MessagePayload::text("hi");
        assert!(!needs_payload_element(&p, &PayloadExtras::default()));
        assert_eq!(decode_payload(Some("hi"), None).unwrap().0, p);
    }
}
