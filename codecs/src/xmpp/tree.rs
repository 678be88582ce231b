//! quick-xml → [`Element`]: parse the text of one complete stanza (already
//! delimited by the framer) into a tree with namespaces resolved, refusing
//! everything RFC 6120 §11.1 forbids.
//!
//! quick-xml checks tag balance, attribute syntax and duplicate attributes;
//! this layer adds namespace resolution (starting from the scope the stream
//! header declared), the depth bound, refusal of DTDs, comments, processing
//! instructions and entities other than the five predefined ones and
//! character references, and the XML 1.0 `Char` rule for every text and
//! attribute value, so that whatever is accepted can be written out again
//! as valid XML.

use std::collections::HashSet;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::element::{is_xml_char, Element, Node};
use super::error::XmppCodecError;
use super::ns;

/// Namespace bindings in effect: the default namespace and prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub default_ns: String,
    pub prefixes: Vec<(String, String)>,
}

impl Scope {
    /// The scope of a client stream: default `jabber:client`, `stream:`
    /// bound to the stream namespace under `stream_prefix`.
    pub fn client_stream(stream_prefix: &str) -> Scope {
        Scope {
            default_ns: ns::CLIENT.to_string(),
            prefixes: vec![
                ("xml".to_string(), ns::XML.to_string()),
                (stream_prefix.to_string(), ns::STREAM.to_string()),
            ],
        }
    }

    fn resolve(&self, prefix: Option<&str>) -> Option<&str> {
        match prefix {
            None => Some(self.default_ns.as_str()),
            Some(p) => self
                .prefixes
                .iter()
                .rev()
                .find(|(k, _)| k == p)
                .map(|(_, v)| v.as_str()),
        }
    }
}

fn not_well_formed(e: impl std::fmt::Display) -> XmppCodecError {
    XmppCodecError::NotWellFormed(e.to_string())
}

fn check_chars(s: &str) -> Result<(), XmppCodecError> {
    match s.chars().find(|c| !is_xml_char(*c)) {
        None => Ok(()),
        Some(c) => Err(XmppCodecError::NotWellFormed(format!(
            "character U+{:04X} is not allowed in XML",
            c as u32
        ))),
    }
}

/// Attributes one element may carry. XMPP elements have a handful; the
/// busiest real ones (stream headers, MUC items) stay far below this.
pub const MAX_ATTRIBUTES: usize = 64;

/// Elements one stanza may hold. Building the tree costs about half a
/// microsecond per element: the cap keeps the worst stanza the size limit
/// allows (256 KiB of `<x/>`, 60,000 elements, tens of ms) to about a
/// millisecond on the runtime's thread. Client stanzas (forms, bookmarks,
/// vCards) hold a few hundred.
pub const MAX_ELEMENTS: usize = 2048;

fn split_qname(q: &str) -> (Option<&str>, &str) {
    match q.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, q),
    }
}

/// An element's start tag turned into an [`Element`] (no children yet) and
/// the scope its children see.
fn open_element(
    start: &BytesStart<'_>,
    parent: &Scope,
) -> Result<(Element, Scope), XmppCodecError> {
    let qname = std::str::from_utf8(start.name().as_ref())
        .map_err(|_| XmppCodecError::InvalidUtf8)?
        .to_string();
    let mut scope = parent.clone();
    let mut attrs = Vec::new();
    // quick-xml's own duplicate check compares each attribute with every
    // earlier one (quadratic: 20,000 attributes cost seconds of CPU); the
    // count is capped and duplicates found through a hash set instead.
    let mut seen = HashSet::new();
    for attr in start.attributes().with_checks(false) {
        let attr = attr.map_err(not_well_formed)?;
        if seen.len() == MAX_ATTRIBUTES {
            return Err(XmppCodecError::TooManyAttributes {
                max: MAX_ATTRIBUTES,
            });
        }
        if !seen.insert(attr.key.as_ref().to_vec()) {
            return Err(not_well_formed(format!(
                "duplicate attribute {}",
                String::from_utf8_lossy(attr.key.as_ref())
            )));
        }
        let key = std::str::from_utf8(attr.key.as_ref())
            .map_err(|_| XmppCodecError::InvalidUtf8)?
            .to_string();
        let value = attr.unescape_value().map_err(not_well_formed)?.into_owned();
        check_chars(&value)?;
        if key == "xmlns" {
            scope.default_ns = value;
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            if value.is_empty() {
                return Err(not_well_formed(format!("prefix {prefix} bound to nothing")));
            }
            scope.prefixes.push((prefix.to_string(), value));
        } else {
            attrs.push((key, value));
        }
    }
    let (prefix, local) = split_qname(&qname);
    let ns = scope
        .resolve(prefix)
        .ok_or_else(|| not_well_formed(format!("unbound prefix in <{qname}>")))?
        .to_string();
    for (k, _) in &attrs {
        if let (Some(p), _) = split_qname(k) {
            if scope.resolve(Some(p)).is_none() {
                return Err(not_well_formed(format!("unbound prefix in attribute {k}")));
            }
        }
    }
    // Namespaced attributes other than `xml:` mean nothing to this server;
    // they are dropped so the tree never needs prefix declarations to be
    // written again.
    attrs.retain(|(k, _)| !k.contains(':') || k.starts_with("xml:"));
    let mut el = Element::new(local, ns);
    el.attrs = attrs;
    Ok((el, scope))
}

fn reader(text: &str) -> Reader<&[u8]> {
    let mut r = Reader::from_str(text);
    let c = r.config_mut();
    c.trim_text(false);
    c.check_end_names = true;
    c.check_comments = true;
    c.expand_empty_elements = false;
    r
}

/// Parse one complete stanza in the stream's `scope`, at most `max_depth`
/// levels deep.
pub fn parse_stanza(
    text: &str,
    scope: &Scope,
    max_depth: usize,
) -> Result<Element, XmppCodecError> {
    let mut r = reader(text);
    // Open elements with the scope their children see.
    let mut stack: Vec<(Element, Scope)> = Vec::new();
    let mut text_buf = String::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    loop {
        let event = r.read_event().map_err(not_well_formed)?;
        if matches!(event, Event::Start(_) | Event::Empty(_)) {
            elements += 1;
            if elements > MAX_ELEMENTS {
                return Err(XmppCodecError::TooManyElements { max: MAX_ELEMENTS });
            }
        }
        // Text and references accumulate until the next markup.
        match &event {
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {}
            _ => {
                if !text_buf.is_empty() {
                    let t = std::mem::take(&mut text_buf);
                    match stack.last_mut() {
                        Some((parent, _)) => parent.children.push(Node::Text(t)),
                        None if t.trim().is_empty() => {}
                        None => return Err(not_well_formed("text outside the stanza")),
                    }
                }
            }
        }
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(not_well_formed("more than one element in a stanza"));
            }
            Event::Start(start) => {
                if stack.len() >= max_depth {
                    return Err(XmppCodecError::TooDeep { max: max_depth });
                }
                let parent = stack.last().map(|(_, s)| s).unwrap_or(scope);
                let opened = open_element(&start, parent)?;
                stack.push(opened);
            }
            Event::Empty(start) => {
                if stack.len() >= max_depth {
                    return Err(XmppCodecError::TooDeep { max: max_depth });
                }
                let parent = stack.last().map(|(_, s)| s).unwrap_or(scope);
                let (el, _) = open_element(&start, parent)?;
                match stack.last_mut() {
                    Some((p, _)) => p.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let Some((el, _)) = stack.pop() else {
                    return Err(not_well_formed("unexpected end tag"));
                };
                match stack.last_mut() {
                    Some((p, _)) => p.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(not_well_formed)?;
                check_chars(&s)?;
                if stack.is_empty() && !s.trim().is_empty() {
                    return Err(not_well_formed("text outside the stanza"));
                }
                text_buf.push_str(&s);
            }
            Event::CData(t) => {
                let s = t.decode().map_err(not_well_formed)?;
                check_chars(&s)?;
                if stack.is_empty() {
                    return Err(not_well_formed("CDATA outside the stanza"));
                }
                text_buf.push_str(&s);
            }
            Event::GeneralRef(r) => {
                if stack.is_empty() {
                    return Err(not_well_formed("reference outside the stanza"));
                }
                if let Some(c) = r.resolve_char_ref().map_err(not_well_formed)? {
                    if !is_xml_char(c) {
                        return Err(not_well_formed(
                            "character reference to a non-XML character",
                        ));
                    }
                    text_buf.push(c);
                } else {
                    let name = r.decode().map_err(not_well_formed)?;
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(v) => text_buf.push_str(v),
                        None => return Err(XmppCodecError::RestrictedXml("an entity reference")),
                    }
                }
            }
            Event::Comment(_) => return Err(XmppCodecError::RestrictedXml("a comment")),
            Event::PI(_) | Event::Decl(_) => {
                return Err(XmppCodecError::RestrictedXml("a processing instruction"))
            }
            Event::DocType(_) => return Err(XmppCodecError::RestrictedXml("a DTD")),
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(not_well_formed("unclosed element"));
    }
    root.ok_or_else(|| not_well_formed("no element"))
}

/// The stream header `<stream:stream ...>` (RFC 6120 §4.7) as an element
/// (`name` = `stream`, `ns` = the stream namespace) and the prefix it
/// bound to the stream namespace.
pub fn parse_stream_header(text: &str) -> Result<(Element, String), XmppCodecError> {
    let mut r = reader(text);
    let bad = |m: &str| XmppCodecError::BadStreamHeader(m.to_string());
    loop {
        match r.read_event().map_err(not_well_formed)? {
            Event::Decl(_) => continue,
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => continue,
            Event::Start(start) => {
                let empty = Scope {
                    default_ns: String::new(),
                    prefixes: vec![("xml".to_string(), ns::XML.to_string())],
                };
                let (el, scope) = open_element(&start, &empty)?;
                let qname = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                let (prefix, local) = split_qname(&qname);
                if local != "stream" || el.ns != ns::STREAM {
                    return Err(bad(
                        "the root element must be <stream:stream> in the streams namespace",
                    ));
                }
                if scope.default_ns != ns::CLIENT {
                    return Err(XmppCodecError::InvalidNamespace(format!(
                        "default namespace {:?}; this server speaks {}",
                        scope.default_ns,
                        ns::CLIENT
                    )));
                }
                return Ok((el, prefix.unwrap_or("").to_string()));
            }
            Event::DocType(_) => return Err(XmppCodecError::RestrictedXml("a DTD")),
            Event::Comment(_) => return Err(XmppCodecError::RestrictedXml("a comment")),
            Event::PI(_) => return Err(XmppCodecError::RestrictedXml("a processing instruction")),
            _ => return Err(bad("expected the stream header")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_attrs(n: usize) -> String {
        let attrs: String = (0..n).map(|i| format!(" a{i}='x'")).collect();
        format!("<message to='a@b'{attrs}><body>x</body></message>")
    }

    #[test]
    fn element_count_is_capped() {
        let s = Scope::client_stream("stream");
        let with = |n: usize| format!("<message to='a@b'>{}</message>", "<x/>".repeat(n));
        // The message itself plus its children.
        assert!(parse_stanza(&with(MAX_ELEMENTS - 1), &s, 8).is_ok());
        let err = parse_stanza(&with(MAX_ELEMENTS), &s, 8).unwrap_err();
        assert!(
            matches!(err, XmppCodecError::TooManyElements { max: MAX_ELEMENTS }),
            "{err:?}"
        );
        assert_eq!(err.stream_condition(), "policy-violation");
        let err = parse_stanza(&with(60_000), &s, 8).unwrap_err();
        assert!(matches!(err, XmppCodecError::TooManyElements { .. }));
    }

    #[test]
    fn attribute_count_is_capped_and_duplicates_refused() {
        let s = Scope::client_stream("stream");
        // `to` plus 63 more: exactly at the cap.
        assert!(parse_stanza(&with_attrs(MAX_ATTRIBUTES - 1), &s, 8).is_ok());
        for n in [MAX_ATTRIBUTES, 20_000] {
            let err = parse_stanza(&with_attrs(n), &s, 8).unwrap_err();
            assert!(
                matches!(
                    err,
                    XmppCodecError::TooManyAttributes {
                        max: MAX_ATTRIBUTES
                    }
                ),
                "{n}: {err:?}"
            );
            assert_eq!(err.stream_condition(), "policy-violation");
        }
        let err = parse_stanza("<message a='1' b='2' a='3'/>", &s, 8).unwrap_err();
        assert!(
            matches!(&err, XmppCodecError::NotWellFormed(m) if m.contains("duplicate attribute a")),
            "{err:?}"
        );
    }

    #[test]
    fn resolves_namespaces_and_entities() {
        let s = Scope::client_stream("stream");
        let el = parse_stanza(
            "<message to='a@b'><body>x &amp; &#x41;<![CDATA[<y>]]></body><r xmlns='urn:x'><c/></r></message>",
            &s,
            8,
        )
        .unwrap();
        assert!(el.is("message", ns::CLIENT));
        assert_eq!(
            el.get_child("body", ns::CLIENT).unwrap().text_content(),
            "x & A<y>"
        );
        let r = el.get_child("r", "urn:x").unwrap();
        assert!(r.get_child("c", "urn:x").is_some());
    }

    #[test]
    fn refuses_unknown_entities_comments_and_depth() {
        let s = Scope::client_stream("stream");
        assert!(matches!(
            parse_stanza("<m>&lol;</m>", &s, 8),
            Err(XmppCodecError::RestrictedXml(_))
        ));
        assert!(matches!(
            parse_stanza("<m><!-- x --></m>", &s, 8),
            Err(XmppCodecError::RestrictedXml(_))
        ));
        assert!(matches!(
            parse_stanza("<a><b><c/></b></a>", &s, 2),
            Err(XmppCodecError::TooDeep { max: 2 })
        ));
        assert!(parse_stanza("<a><b></a>", &s, 8).is_err());
        assert!(parse_stanza("<a>&#1;</a>", &s, 8).is_err());
    }

    #[test]
    fn stream_header_checks_namespaces() {
        let (h, prefix) = parse_stream_header(
            "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
        )
        .unwrap();
        assert_eq!(prefix, "stream");
        assert_eq!(h.get_attr("to"), Some("localhost"));
        assert!(matches!(
            parse_stream_header("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"),
            Err(XmppCodecError::InvalidNamespace(_))
        ));
    }
}
