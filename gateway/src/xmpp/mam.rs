//! XEP-0313 message archive management over the store's history, with
//! XEP-0059 paging: `with` (a user or group JID), `start`/`end`
//! (XEP-0082 times, inclusive), RSM `max`, `before` (empty = the newest
//! page) and `after` (a `messageUid`). Result ids are `messageUid`s, so a
//! client pages with the ids it got.
//!
//! `with` + `before` reads `Store::history` (newest first, reversed to
//! chronological order). `after` (or no RSM position) reads forward with
//! `Store::sync`, keeping the conversation's messages. Time filters
//! compare `serverTs`; ids are used only as safe bounds: an id is never
//! smaller than the first id of its message's millisecond
//! (`id::first_id_at`), so everything at or after `start` has an id at or
//! above `first_id_at(start)`. Scans are bounded ([`MAX_SCAN_PAGES`]); a
//! query that hits the bound is answered without `complete`, and the
//! client pages on from the last id.

use std::sync::Arc;

use imgate_codecs::xmpp::timestamp::{parse_xep0082, xep0082};
use imgate_codecs::xmpp::{ns, Element, Jid, XmppNormalizer};
use imgate_core::id::first_id_at;
use imgate_core::model::Conversation;
use imgate_core::{ErrorCode, ImError, Message};

use crate::sessions::SessionCtx;

/// Default and largest page size.
const DEFAULT_MAX: usize = 50;
const LARGEST_MAX: usize = 200;
/// Sync pages scanned at most for one forward query.
const MAX_SCAN_PAGES: usize = 50;
/// How far past `end` a backward query starts reading by id: ids can run
/// a little ahead of their timestamp (RabbitMQ final ids, clock steps).
const END_SLACK_MS: i64 = 60_000;

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
    /// Inclusive `serverTs` bounds (Unix ms).
    start: Option<i64>,
    end: Option<i64>,
    query_id: Option<String>,
}

impl Request {
    fn in_time(&self, m: &Message) -> bool {
        self.start.is_none_or(|s| m.server_ts >= s) && self.end.is_none_or(|e| m.server_ts <= e)
    }

    /// Ids below this cannot be at or after `start`.
    fn lowest_id(&self) -> u64 {
        self.start.map_or(0, first_id_at)
    }
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
            .child(field("with", "jid-single"))
            .child(field("start", "text-single"))
            .child(field("end", "text-single")),
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
        start: None,
        end: None,
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
                Some(var @ ("start" | "end")) => {
                    let at = parse_xep0082(&value)
                        .ok_or_else(|| bad(&format!("'{var}' is not an XEP-0082 date-time")))?;
                    if var == "start" {
                        req.start = Some(at);
                    } else {
                        req.end = Some(at);
                    }
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

/// A room's archive (XEP-0313 §4.1.3 "Querying a MUC archive"): the query
/// goes to the room's JID, reads only that group's messages (the caller
/// checked membership), and the results come from the room's JID.
pub struct RoomArchive<'a> {
    pub jid: &'a str,
    pub conversation: Conversation,
}

pub async fn query(
    state: &SessionCtx,
    normalizer: &XmppNormalizer,
    user: &str,
    own_jid: &str,
    query: &Element,
    room: Option<RoomArchive<'_>>,
) -> Result<MamPage, ImError> {
    let req = parse_request(query)?;
    let archive_jid = match &room {
        Some(r) => r.jid.to_string(),
        None => normalizer.user_jid(user),
    };
    let conversation = match (room, &req.with) {
        (Some(r), _) => Some(r.conversation),
        (None, None) => None,
        (None, Some(with)) => {
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
        (Some(before), Some(conv)) => backward(state, user, conv, before, &req).await?,
        (Some(_), None) => {
            return Err(ImError::new(
                ErrorCode::NotImplemented,
                "paging backwards needs a 'with' conversation",
            ))
        }
        (None, _) => {
            let key = conversation.as_ref().map(|c| c.history_key(user));
            forward(state, user, key.as_deref(), &req).await?
        }
    };
    let results = messages
        .iter()
        .map(|m| {
            result_message(
                normalizer,
                m,
                user,
                own_jid,
                &archive_jid,
                req.query_id.as_deref(),
            )
        })
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

/// The newest `max` messages of `conv` before id `before` (0 = the
/// newest) within the time filter, oldest first, and whether the start of
/// the range was reached.
async fn backward(
    state: &SessionCtx,
    user: &str,
    conv: &Conversation,
    before: u64,
    req: &Request,
) -> Result<(Vec<Arc<Message>>, bool), ImError> {
    let mut cursor = before;
    if let Some(end) = req.end {
        let hint = first_id_at(end.saturating_add(1 + END_SLACK_MS));
        if hint == 0 {
            return Ok((Vec::new(), true)); // ends before the first possible id
        }
        cursor = if cursor == 0 { hint } else { cursor.min(hint) };
    }
    let lowest = req.lowest_id();
    let mut out = Vec::new();
    let mut complete = false;
    'scan: for _ in 0..MAX_SCAN_PAGES {
        let page = state.store.history(user, conv, cursor, LARGEST_MAX).await?;
        for m in &page.messages {
            cursor = m.message_id;
            if m.message_id < lowest {
                complete = true;
                break 'scan;
            }
            if req.in_time(m) {
                if out.len() == req.max {
                    break 'scan;
                }
                out.push(m.clone());
            }
        }
        if !page.has_more || cursor == 0 {
            complete = true;
            break;
        }
    }
    out.reverse();
    Ok((out, complete))
}

/// Up to `max` messages after `after` (of the conversation with history
/// key `key`, if given) within the time filter, oldest first, and whether
/// the end was reached.
async fn forward(
    state: &SessionCtx,
    user: &str,
    key: Option<&str>,
    req: &Request,
) -> Result<(Vec<Arc<Message>>, bool), ImError> {
    let mut since = req
        .after
        .unwrap_or(0)
        .max(req.lowest_id().saturating_sub(1));
    let mut out = Vec::new();
    for _ in 0..MAX_SCAN_PAGES {
        let page = state.store.sync(user, since, LARGEST_MAX).await?;
        for m in &page.messages {
            since = since.max(m.message_id);
            if req.end.is_some_and(|e| m.server_ts > e) {
                return Ok((out, true));
            }
            let matches = key.is_none_or(|k| m.conversation.history_key(&m.sender) == k);
            if matches && req.in_time(m) {
                if out.len() == req.max {
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
    archive_jid: &str,
    query_id: Option<&str>,
) -> Element {
    let forwarded = Element::new("forwarded", ns::FORWARD)
        .child(Element::new("delay", ns::DELAY).attr("stamp", xep0082(m.server_ts)))
        .child(normalizer.archived_stanza(m, user));
    Element::new("message", ns::CLIENT)
        .attr("to", own_jid)
        .attr("from", archive_jid)
        .child(
            Element::new("result", ns::MAM)
                .attr_opt("queryid", query_id)
                .attr("id", m.message_id.to_string())
                .child(forwarded),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_with(fields: &[(&str, &str)]) -> Element {
        let mut form = Element::new("x", ns::DATA_FORMS).attr("type", "submit");
        for (var, value) in fields {
            form = form.child(
                Element::new("field", ns::DATA_FORMS)
                    .attr("var", *var)
                    .child(Element::new("value", ns::DATA_FORMS).text(*value)),
            );
        }
        Element::new("query", ns::MAM).child(form)
    }

    #[test]
    fn start_and_end_are_parsed_and_bound_the_ids() {
        let req = parse_request(&query_with(&[
            ("start", "2024-01-01T00:00:00Z"),
            ("end", "2024-01-01T00:00:01.500Z"),
        ]))
        .expect("valid");
        assert_eq!(req.start, Some(1_704_067_200_000));
        assert_eq!(req.end, Some(1_704_067_201_500));
        assert_eq!(req.lowest_id(), first_id_at(1_704_067_200_000));
        let at = |ts| Message {
            message_id: 1,
            sender: "a".into(),
            conversation: Conversation::private("b"),
            payload: imgate_core::model::MessagePayload::text("x"),
            server_ts: ts,
            client_msg_id: "c".into(),
            to_users: Vec::new(),
        };
        assert!(req.in_time(&at(1_704_067_200_000)));
        assert!(req.in_time(&at(1_704_067_201_500)));
        assert!(!req.in_time(&at(1_704_067_199_999)));
        assert!(!req.in_time(&at(1_704_067_201_501)));
    }

    #[test]
    fn malformed_times_are_bad_requests() {
        let err = match parse_request(&query_with(&[("start", "yesterday")])) {
            Err(e) => e,
            Ok(_) => panic!("accepted a malformed start"),
        };
        assert_eq!(err.code, ErrorCode::InvalidParameter);
    }
}
