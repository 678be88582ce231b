//! Per-user XML kept for XMPP clients (vCard-temp, private XML storage,
//! PEP nodes): one store setting per user and kind (`xmpp.<kind>:<user>`),
//! so it is durable, on both stores, and the same on every node. Each
//! kind bounds its own value ([`MAX_VALUE`] at most); an empty value is
//! no data.

use imgate_codecs::xmpp::tree::{parse_stanza, Scope};
use imgate_codecs::xmpp::{Element, DEFAULT_MAX_DEPTH};
use imgate_core::Store;

/// The largest value kept for one user and kind (bytes of XML or JSON).
pub const MAX_VALUE: usize = 128 * 1024;

fn key(kind: &str, user: &str) -> String {
    format!("xmpp.{kind}:{user}")
}

/// `user`'s value of `kind`; None when there is none or it is unreadable.
pub async fn load(store: &dyn Store, kind: &str, user: &str) -> Option<String> {
    match store.setting(&key(kind, user)).await {
        Ok(Some(v)) if !v.is_empty() => Some(v),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, kind, "xmpp: user data not read");
            None
        }
    }
}

/// Why a value was not kept.
#[derive(Debug, PartialEq, Eq)]
pub enum NotKept {
    TooLarge,
    Store,
}

/// Keep `value` ("" for none) as `user`'s `kind`.
pub async fn save(store: &dyn Store, kind: &str, user: &str, value: String) -> Result<(), NotKept> {
    if value.len() > MAX_VALUE {
        return Err(NotKept::TooLarge);
    }
    store
        .put_setting(key(kind, user), value)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, kind, "xmpp: user data not stored");
            NotKept::Store
        })
}

/// An element kept as XML (`Element::to_standalone_xml`).
pub fn parse(xml: &str) -> Option<Element> {
    parse_stanza(xml, &Scope::client_stream("stream"), DEFAULT_MAX_DEPTH).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgate_codecs::xmpp::ns;

    #[test]
    fn elements_come_back_as_kept() {
        let el = Element::new("vCard", "vcard-temp")
            .child(Element::new("TITLE", "vcard-temp").text("a & b"));
        let back = parse(&el.to_standalone_xml()).expect("parsed");
        assert!(back.is("vCard", "vcard-temp"));
        assert_eq!(
            back.get_child("TITLE", "vcard-temp")
                .unwrap()
                .text_content(),
            "a & b"
        );
        let other = Element::new("query", ns::DISCO_INFO);
        assert!(parse(&other.to_standalone_xml())
            .unwrap()
            .is("query", ns::DISCO_INFO));
    }
}
