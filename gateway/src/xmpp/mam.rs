//! XEP-0313 message archive management over the store's history, with
//! XEP-0059 paging: `with` (a user or group JID), RSM `max`, `before`
//! (empty = the newest page) and `after` (a `messageUid`). Result ids are
//! `messageUid`s, so a client pages with the ids it got.
//!
//! `with` + `before` reads `Store::history` (newest first, reversed to
//! chronological order). `after` (or no RSM position) reads forward with
//! `Store::sync`, keeping the conversation's messages. `start`/`end` time
//! filters are not supported: such a query is answered
//! `<feature-not-implemented/>` rather than silently ignored.

use std::sync::Arc;

use imgate_codecs::xmpp::{ns, timestamp::xep0082, Element, Jid, XmppNormalizer};
use imgate_core::{ErrorCode, ImError, Message};

use crate::state::AppState;

/// Default and largest page size.
const DEFAULT_MAX: usize = 50;
const LARGEST_MAX: usize = 200;
/// Sync pages scanned at most for one forward query.
const MAX_SCAN_PAGES: usize = 50;

/// The messages to send and the `<fin>` for the iq result.
pub struct MamPage {
    pub results: Vec<Element>,
    pub fin: Element,
}

struct Request {
    with: Option<String>,
    max: usize,
    before: Option<u64>,
    after: Option<u64>,
    query_id: Option<String>,
}

/// The query form (answer to an iq get).
pub fn form() -> Element {
    let field = |var: &str, kind: &str| {
        Element::new("field", ns::DATA_FORMS)
            .attr("var", var)
            .attr("type", kind)
    };
    Element::new("query", ns::MAM).child(
        Element::new("x", ns::DATA_FORMS)
            .attr("type", "form")
            .child(
                field("FORM_TYPE", "hidden")
                    .child(Element::new("value", ns::DATA_FORMS).text(ns::MAM)),
            )
            .child(field("with", "jid-single")),
    )
}

fn bad(msg: &str) -> ImError {
    ImError::invalid_parameter(msg)
}

fn parse_id(text: &str) -> Result<u64, ImError> {
    text.trim()
        .parse()
        .map_err(|_| ImError::new(ErrorCode::NotExist, format!("unknown archive id {text:?}")))
}

fn parse_request(query: &Element) -> Result<Request, ImError> {
    let mut req = Request {
        with: None,
        max: DEFAULT_MAX,
        before: None,
        after: None,
        query_id: query.get_attr("queryid").map(str::to_string),
    };
    if let Some(form) = query.get_child("x", ns::DATA_FORMS) {
        for field in form.elements().filter(|f| f.name == "field") {
            let value = field
                .get_child("value", ns::DATA_FORMS)
                .map(Element::text_content)
                .unwrap_or_default();
            match field.get_attr("var") {
                Some("with") => req.with = Some(value.trim().to_string()),
                Some("start") | Some("end") => {
                    return Err(ImError::new(
                        ErrorCode::NotImplemented,
                        "time filters are not supported; page with RSM",
                    ))
                }
                _ => {}
            }
        }
    }
    if let Some(set) = query.get_child("set", ns::RSM) {
        if let Some(max) = set.get_child("max", ns::RSM) {
            let n: usize = max
                .text_content()
                .trim()
                .parse()
                .map_err(|_| bad("RSM max is not a number"))?;
            req.max = n.clamp(1, LARGEST_MAX);
        }
        if let Some(before) = set.get_child("before", ns::RSM) {
            let t = before.text_content();
            req.before = Some(if t.trim().is_empty() {
                0
            } else {
                parse_id(&t)?
            });
        }
        if let Some(after) = set.get_child("after", ns::RSM) {
            req.after = Some(parse_id(&after.text_content())?);
        }
    }
    Ok(req)
}

pub async fn query(
    state: &AppState,
    normalizer: &XmppNormalizer,
    user: &str,
    own_jid: &str,
    query: &Element,
) -> Result<MamPage, ImError> {
    let req = parse_request(query)?;
    let conversation = match &req.with {
        None => None,
        Some(with) => {
            let jid = Jid::parse(with).ok_or_else(|| bad("malformed 'with' JID"))?;
            Some(normalizer.conversation_of(&jid).ok_or_else(|| {
                ImError::new(
                    ErrorCode::NotExist,
                    format!("no such user or group: {with}"),
                )
            })?)
        }
    };
    let (messages, complete) = match (req.before, &conversation) {
        (Some(before), Some(conv)) => {
            let page = state.store.history(user, conv, before, req.max).await?;
            let mut msgs = page.messages;
            msgs.reverse();
            (msgs, !page.has_more)
        }
        (Some(_), None) => {
            return Err(ImError::new(
                ErrorCode::NotImplemented,
                "paging backwards needs a 'with' conversation",
            ))
        }
        (None, _) => {
            let key = conversation.as_ref().map(|c| c.history_key(user));
            forward(state, user, key.as_deref(), req.after.unwrap_or(0), req.max).await?
        }
    };
    let results = messages
        .iter()
        .map(|m| result_message(normalizer, m, user, own_jid, req.query_id.as_deref()))
        .collect();
    let mut set = Element::new("set", ns::RSM);
    if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
        set = set
            .child(Element::new("first", ns::RSM).text(first.message_id.to_string()))
            .child(Element::new("last", ns::RSM).text(last.message_id.to_string()));
    }
    let mut fin = Element::new("fin", ns::MAM).attr_opt("queryid", req.query_id.clone());
    if complete {
        fin = fin.attr("complete", "true");
    }
    Ok(MamPage {
        results,
        fin: fin.child(set),
    })
}

/// Up to `max` messages after `since` (of the conversation with history
/// key `key`, if given), oldest first, and whether the end was reached.
async fn forward(
    state: &AppState,
    user: &str,
    key: Option<&str>,
    mut since: u64,
    max: usize,
) -> Result<(Vec<Arc<Message>>, bool), ImError> {
    let mut out = Vec::new();
    for _ in 0..MAX_SCAN_PAGES {
        let page = state.store.sync(user, since, LARGEST_MAX).await?;
        for m in &page.messages {
            since = since.max(m.message_id);
            let matches = key.is_none_or(|k| m.conversation.history_key(&m.sender) == k);
            if matches {
                if out.len() == max {
                    return Ok((out, false));
                }
                out.push(m.clone());
            }
        }
        if !page.has_more {
            return Ok((out, true));
        }
    }
    Ok((out, false))
}

fn result_message(
    normalizer: &XmppNormalizer,
    m: &Message,
    user: &str,
    own_jid: &str,
    query_id: Option<&str>,
) -> Element {
    let forwarded = Element::new("forwarded", ns::FORWARD)
        .child(Element::new("delay", ns::DELAY).attr("stamp", xep0082(m.server_ts)))
        .child(normalizer.archived_stanza(m, user));
    Element::new("message", ns::CLIENT)
        .attr("to", own_jid)
        .attr("from", normalizer.user_jid(user))
        .child(
            Element::new("result", ns::MAM)
                .attr_opt("queryid", query_id)
                .attr("id", m.message_id.to_string())
                .child(forwarded),
        )
}
