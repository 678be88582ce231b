//! [`Element`]: the tree of one stanza, with namespaces resolved, and its
//! serialization back to XML text.
//!
//! Every element carries its namespace URI, so `<body/>` inside a
//! `jabber:client` message and `<body/>` of some extension never mix up.
//! Attributes keep their qualified names (`xml:lang` stays `xml:lang`);
//! namespace declarations are not attributes here — the serializer writes
//! an `xmlns` wherever an element's namespace differs from its parent's.
//! Elements of the `stream:` namespace are written with the `stream:`
//! prefix the stream header declares.

use std::fmt::Write as _;

use super::ns;

/// One child of an element: a sub-element or a run of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An XML element with its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The local name (`message`, `body`, `features`).
    pub name: String,
    /// The namespace URI (`jabber:client`, `urn:xmpp:receipts`).
    pub ns: String,
    /// Attributes in document order, by qualified name.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    /// An empty element `name` in namespace `ns`.
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Element {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: set (or replace) an attribute.
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    /// Builder: set an attribute only when `value` is `Some`.
    pub fn attr_opt(self, name: &str, value: Option<impl Into<String>>) -> Element {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }

    /// Builder: append a child element.
    pub fn child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: append a text node.
    pub fn text(mut self, text: impl Into<String>) -> Element {
        let text = text.into();
        if !text.is_empty() {
            self.children.push(Node::Text(text));
        }
        self
    }

    /// Set (or replace) an attribute.
    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name.to_string(), value)),
        }
    }

    /// Remove an attribute, returning its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let at = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(at).1)
    }

    /// The value of attribute `name`.
    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is element `name` of namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// Child elements, in order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element `name` of namespace `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    /// The first child element of namespace `ns`, whatever its name.
    pub fn child_in_ns(&self, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.ns == ns)
    }

    /// The concatenated direct text of this element.
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Serialize as it appears inside a stream whose default namespace is
    /// `jabber:client`.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write_xml(&mut out, ns::CLIENT);
        out
    }

    /// Serialize as a document of its own, every namespace declared (one
    /// WebSocket message of RFC 7395 §3.3.3): the root says `xmlns`, a
    /// `stream:` root declares the `stream` prefix.
    pub fn to_standalone_xml(&self) -> String {
        let mut out = String::new();
        self.write_xml(&mut out, "");
        if self.ns == ns::STREAM {
            let at = "<stream:".len() + self.name.len();
            out.insert_str(at, &format!(" xmlns:stream='{}'", ns::STREAM));
        }
        out
    }

    /// Serialize, writing `xmlns` only where the namespace differs from
    /// `parent_ns`.
    pub fn write_xml(&self, out: &mut String, parent_ns: &str) {
        let stream_prefixed = self.ns == ns::STREAM;
        out.push('<');
        if stream_prefixed {
            out.push_str("stream:");
        }
        out.push_str(&self.name);
        // Children of a `stream:` element inherit the stream's default
        // namespace, not the stream namespace itself.
        let inherited = if stream_prefixed {
            parent_ns
        } else {
            if self.ns != parent_ns {
                out.push_str(" xmlns='");
                escape_attr_into(out, &self.ns);
                out.push('\'');
            }
            self.ns.as_str()
        };
        for (k, v) in &self.attrs {
            let _ = write!(out, " {k}='");
            escape_attr_into(out, v);
            out.push('\'');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_xml(out, inherited),
                Node::Text(t) => escape_text_into(out, t),
            }
        }
        out.push_str("</");
        if stream_prefixed {
            out.push_str("stream:");
        }
        out.push_str(&self.name);
        out.push('>');
    }
}

/// Escape character data. `\r` is written as a character reference so a
/// receiving parser's end-of-line normalization cannot turn it into `\n`.
pub fn escape_text_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// Escape an attribute value (single-quoted). Whitespace other than space
/// is written as character references: attribute-value normalization
/// would otherwise turn it into spaces.
pub fn escape_attr_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#xD;"),
            '\n' => out.push_str("&#xA;"),
            '\t' => out.push_str("&#x9;"),
            c => out.push(c),
        }
    }
}

/// Whether XML 1.0 can carry `c` at all (its `Char` production). Strings
/// with other characters are sent base64-encoded by the payload codec.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_xmlns_only_where_the_namespace_changes() {
        let m = Element::new("message", ns::CLIENT)
            .attr("to", "bob@localhost")
            .child(Element::new("body", ns::CLIENT).text("a<b & 'c'\r"))
            .child(Element::new("request", ns::RECEIPTS));
        assert_eq!(
            m.to_xml(),
            "<message to='bob@localhost'><body>a&lt;b &amp; 'c'&#xD;</body>\
             <request xmlns='urn:xmpp:receipts'/></message>"
        );
    }

    #[test]
    fn stream_elements_use_the_prefix() {
        let f = Element::new("features", ns::STREAM).child(Element::new("bind", ns::BIND));
        assert_eq!(
            f.to_xml(),
            "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        );
    }

    #[test]
    fn attribute_whitespace_and_quotes_are_escaped() {
        let e = Element::new("x", ns::CLIENT).attr("v", "a'b\"c\n\td");
        assert_eq!(e.to_xml(), "<x v='a&apos;b&quot;c&#xA;&#x9;d'/>");
    }

    #[test]
    fn standalone_xml_declares_every_namespace() {
        let m = Element::new("message", ns::CLIENT)
            .attr("to", "b@x")
            .child(Element::new("body", ns::CLIENT).text("hi"));
        assert_eq!(
            m.to_standalone_xml(),
            "<message xmlns='jabber:client' to='b@x'><body>hi</body></message>"
        );
        let f = Element::new("features", ns::STREAM).child(Element::new("bind", ns::BIND));
        assert_eq!(
            f.to_standalone_xml(),
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\
             <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        );
    }
}
