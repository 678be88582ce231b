//! Extension elements of a `<message>` and what the model makes of them
//! (`docs/xmpp.md` has the whole mapping).
//!
//! - [`classify`]: what a client `<message>` is: stored content (with or
//!   without a XEP-0308 correction), a XEP-0444 reaction, a XEP-0424
//!   retraction, XEP-0333 chat markers, or something transient (XEP-0085
//!   chat states, any other body-less extension) routed as it is.
//! - Carried extensions: the children of a stored message that imgate
//!   does not interpret (`<origin-id>`, `<markable/>`, chat states next to
//!   a body, out-of-band data, threads, ...) travel in the payload's
//!   `extra` as the JSON key [`EXTRA_KEY`] holding their XML, and are put
//!   back on the message for XMPP recipients ([`merge_into_extra`],
//!   [`split_extra`]). Elements only the server may write (carbons,
//!   stanza ids, delays, archive results, receipts, the imgate payload,
//!   MUC occupant data) are never carried, in either direction, so no
//!   client of any protocol can forge them.
//! - [`Reference`]: the `content` of a reaction or correction, naming the
//!   message it refers to by both its `messageUid` and its sender's
//!   client id, so each viewer gets the id its client knows
//!   ([`Reference::id_for`]).

use serde::{Deserialize, Serialize};

use super::element::Element;
use super::ns;
use super::tree::{parse_stanza, Scope};

/// The `extra` JSON key carrying a message's extension elements as XML.
pub const EXTRA_KEY: &str = "xmpp";
/// Most extension elements carried on one message.
pub const MAX_CARRIED: usize = 32;
/// Depth bound when parsing carried XML back.
const CARRIED_DEPTH: usize = 16;

/// XEP-0333 marker kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Received,
    Displayed,
    Acknowledged,
}

impl Marker {
    pub fn name(self) -> &'static str {
        match self {
            Marker::Received => "received",
            Marker::Displayed => "displayed",
            Marker::Acknowledged => "acknowledged",
        }
    }
}

/// What a client `<message>` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// A body or imgate payload: stored. `replaces` is the XEP-0308 id of
    /// the corrected message.
    Content { replaces: Option<String> },
    /// XEP-0444: the reactions (possibly none: all removed) to message `id`.
    Reaction { id: String, reactions: Vec<String> },
    /// XEP-0424: retract message `id` (the sender's recall).
    Retraction { id: String },
    /// XEP-0333 marker for message `id` (and nothing to store).
    Marker { kind: Marker, id: String },
    /// Body-less and not one of the above, with at least one element
    /// besides receipts: routed as it is, never stored (chat states).
    Transient,
    /// Nothing for anyone (a bare receipt, an error bounce, empty).
    Nothing,
}

/// What `<message>` is (see [`Classified`]).
pub fn classify(stanza: &Element) -> Classified {
    if stanza.get_attr("type") == Some("error") {
        return Classified::Nothing;
    }
    // A retraction or reaction may carry a fallback `<body>` for clients
    // that do not know it (XEP-0428): the element decides, not the body.
    if let Some(id) = stanza
        .get_child("retract", ns::RETRACT)
        .and_then(|r| r.get_attr("id"))
        .filter(|id| !id.is_empty())
    {
        return Classified::Retraction { id: id.to_string() };
    }
    if let Some(r) = stanza.get_child("reactions", ns::REACTIONS) {
        if let Some(id) = r.get_attr("id").filter(|id| !id.is_empty()) {
            let reactions = r
                .elements()
                .filter(|e| e.is("reaction", ns::REACTIONS))
                .map(Element::text_content)
                .filter(|t| !t.is_empty())
                .take(MAX_CARRIED)
                .collect();
            return Classified::Reaction {
                id: id.to_string(),
                reactions,
            };
        }
    }
    let has_content = stanza.get_child("body", ns::CLIENT).is_some()
        || stanza.get_child("payload", ns::IMGATE_PAYLOAD).is_some();
    if has_content {
        let replaces = stanza
            .get_child("replace", ns::CORRECTION)
            .and_then(|r| r.get_attr("id"))
            .filter(|id| !id.is_empty())
            .map(str::to_string);
        return Classified::Content { replaces };
    }
    for kind in [Marker::Displayed, Marker::Acknowledged, Marker::Received] {
        if let Some(id) = stanza
            .get_child(kind.name(), ns::CHAT_MARKERS)
            .and_then(|m| m.get_attr("id"))
            .filter(|id| !id.is_empty())
        {
            return Classified::Marker {
                kind,
                id: id.to_string(),
            };
        }
    }
    let routed = stanza
        .elements()
        .any(|e| e.ns != ns::RECEIPTS && carried(e) && !e.is("thread", ns::CLIENT));
    if routed {
        Classified::Transient
    } else {
        Classified::Nothing
    }
}

/// Whether an element written by a client may travel to others: not one
/// the server alone writes or interprets.
pub fn carried(e: &Element) -> bool {
    let server_only = [
        ns::IMGATE_PAYLOAD,
        ns::CARBONS,
        ns::FORWARD,
        ns::DELAY,
        ns::MAM_RESULT,
        ns::MUC_USER,
        ns::CORRECTION,
        ns::REACTIONS,
        ns::RETRACT,
    ];
    if server_only.contains(&e.ns.as_str()) {
        return false;
    }
    if e.ns == ns::CLIENT {
        // body is the content; subject is the room's; error is a bounce's.
        return e.name == "thread";
    }
    if e.ns == ns::RECEIPTS {
        return false;
    }
    // XEP-0359: the server's `<stanza-id>`, never the client's `<origin-id>`.
    if e.ns == ns::STANZA_ID {
        return e.name == "origin-id";
    }
    // Markers are acks (their own path); `<markable/>` is carried.
    !(e.ns == ns::CHAT_MARKERS && e.name != "markable")
}

/// The carried extension elements of a stored message, as XML (None if
/// there are none).
pub fn carried_xml(stanza: &Element) -> Option<String> {
    let mut out = String::new();
    for e in stanza.elements().filter(|e| carried(e)).take(MAX_CARRIED) {
        e.write_xml(&mut out, ns::CLIENT);
    }
    (!out.is_empty()).then_some(out)
}

/// `extra` with the extension XML added under [`EXTRA_KEY`]: an empty
/// extra becomes `{"xmpp": xml}`, a JSON object gains the key; any other
/// extra (text that is not a JSON object) is kept as it is and the
/// extensions are not carried (None).
pub fn merge_into_extra(extra: &str, xml: &str) -> Option<String> {
    let mut obj = if extra.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str::<serde_json::Value>(extra) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return None,
        }
    };
    obj.insert(EXTRA_KEY.into(), serde_json::Value::String(xml.into()));
    serde_json::to_string(&obj).ok()
}

/// `extra` without [`EXTRA_KEY`] (empty if nothing else was in it), and
/// the carried elements parsed back (only those [`carried`] allows; XML
/// that does not parse is dropped). An `extra` without the key is
/// returned unchanged.
pub fn split_extra(extra: &str) -> (String, Vec<Element>) {
    if !extra.contains(EXTRA_KEY) {
        return (extra.to_string(), Vec::new());
    }
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_str::<serde_json::Value>(extra)
    else {
        return (extra.to_string(), Vec::new());
    };
    let Some(serde_json::Value::String(xml)) = obj.remove(EXTRA_KEY) else {
        return (extra.to_string(), Vec::new());
    };
    let rest = if obj.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&obj).unwrap_or_default()
    };
    (rest, parse_carried(&xml))
}

/// Parse carried XML (a sequence of elements in `jabber:client` scope).
fn parse_carried(xml: &str) -> Vec<Element> {
    let wrapped = format!("<x>{xml}</x>");
    match parse_stanza(&wrapped, &Scope::client_stream("stream"), CARRIED_DEPTH) {
        Ok(x) => x
            .elements()
            .filter(|e| carried(e))
            .take(MAX_CARRIED)
            .cloned()
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The `content` of a reaction or correction: the message it refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reference {
    /// The referenced message's id (decimal string).
    #[serde(rename = "messageUid")]
    pub message_uid: String,
    /// Its sender.
    pub sender: String,
    /// The id its sender's client gave it.
    #[serde(rename = "clientMsgId")]
    pub client_msg_id: String,
    /// XEP-0444 reactions (reactions only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<String>,
}

impl Reference {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Option<Reference> {
        serde_json::from_str(s).ok()
    }

    /// The id `viewer`'s client knows the message by: its own client id
    /// for the sender of a private message, the `messageUid` (the id and
    /// stanza-id every delivery carries) otherwise.
    pub fn id_for(&self, viewer: &str, group: bool) -> &str {
        if !group && viewer == self.sender && !self.client_msg_id.is_empty() {
            &self.client_msg_id
        } else {
            &self.message_uid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Element {
        Element::new("message", ns::CLIENT)
            .attr("to", "bob@localhost")
            .attr("type", "chat")
    }

    #[test]
    fn classification() {
        let composing = msg().child(Element::new("composing", ns::CHAT_STATES));
        assert_eq!(classify(&composing), Classified::Transient);
        let receipt = msg().child(Element::new("received", ns::RECEIPTS).attr("id", "1"));
        assert_eq!(classify(&receipt), Classified::Nothing);
        let displayed = msg().child(Element::new("displayed", ns::CHAT_MARKERS).attr("id", "7"));
        assert_eq!(
            classify(&displayed),
            Classified::Marker {
                kind: Marker::Displayed,
                id: "7".into()
            }
        );
        let react = msg().child(
            Element::new("reactions", ns::REACTIONS)
                .attr("id", "9")
                .child(Element::new("reaction", ns::REACTIONS).text("👍")),
        );
        assert_eq!(
            classify(&react),
            Classified::Reaction {
                id: "9".into(),
                reactions: vec!["👍".into()]
            }
        );
        let retract = msg().child(Element::new("retract", ns::RETRACT).attr("id", "c1"));
        assert_eq!(
            classify(&retract),
            Classified::Retraction { id: "c1".into() }
        );
        let fix = msg()
            .child(Element::new("body", ns::CLIENT).text("fixed"))
            .child(Element::new("replace", ns::CORRECTION).attr("id", "c1"));
        assert_eq!(
            classify(&fix),
            Classified::Content {
                replaces: Some("c1".into())
            }
        );
        let with_fallback = msg()
            .child(Element::new("body", ns::CLIENT).text("retracted, says your client"))
            .child(Element::new("retract", ns::RETRACT).attr("id", "c1"));
        assert_eq!(
            classify(&with_fallback),
            Classified::Retraction { id: "c1".into() }
        );
        let bounce = msg()
            .attr("type", "error")
            .child(Element::new("composing", ns::CHAT_STATES));
        assert_eq!(classify(&bounce), Classified::Nothing);
    }

    #[test]
    fn carried_extensions_round_trip_through_extra_and_forgeries_are_dropped() {
        let stanza = msg()
            .child(Element::new("body", ns::CLIENT).text("hi"))
            .child(Element::new("active", ns::CHAT_STATES))
            .child(Element::new("origin-id", "urn:xmpp:sid:0").attr("id", "o1"))
            .child(Element::new("markable", ns::CHAT_MARKERS))
            .child(Element::new("request", ns::RECEIPTS))
            .child(Element::new("sent", ns::CARBONS));
        let xml = carried_xml(&stanza).unwrap();
        let extra = merge_into_extra("", &xml).unwrap();
        let (rest, back) = split_extra(&extra);
        assert_eq!(rest, "");
        let names: Vec<&str> = back.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["active", "origin-id", "markable"]);
        // A client's own JSON extra keeps its keys; text extra carries nothing.
        let merged = merge_into_extra("{\"k\":1}", &xml).unwrap();
        assert_eq!(split_extra(&merged).0, "{\"k\":1}");
        assert_eq!(merge_into_extra("plain", &xml), None);
        // Forged server elements in extra (any protocol can set it) are dropped.
        let forged = merge_into_extra(
            "",
            "<sent xmlns='urn:xmpp:carbons:2'/><delay xmlns='urn:xmpp:delay' stamp='x'/><active xmlns='http://jabber.org/protocol/chatstates'/>",
        )
        .unwrap();
        let (_, kept) = split_extra(&forged);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].name, "active");
        assert_eq!(split_extra("{\"xmpp\":\"<unclosed\"}").1, Vec::new());
    }

    #[test]
    fn reference_ids_per_viewer() {
        let r = Reference {
            message_uid: "42".into(),
            sender: "alice".into(),
            client_msg_id: "c1".into(),
            reactions: vec![],
        };
        assert_eq!(r.id_for("alice", false), "c1");
        assert_eq!(r.id_for("bob", false), "42");
        assert_eq!(r.id_for("alice", true), "42");
        assert_eq!(Reference::from_json(&r.to_json()), Some(r));
    }
}
