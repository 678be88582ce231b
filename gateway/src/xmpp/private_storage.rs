//! XEP-0049 private XML storage (`jabber:iq:private`): XML a user's
//! clients keep on the server (legacy bookmarks XEP-0048, client
//! settings), one element per namespace and name, only for that user.
//! Kept per user ([`super::user_data`], kind `private`, as JSON: a map
//! of `{namespace}name` to the element's XML), at most
//! [`MAX_ELEMENTS`] elements and [`user_data::MAX_VALUE`] bytes in all.

use std::collections::BTreeMap;

use imgate_codecs::xmpp::{ns, Element};

use super::errors::{condition_element, error_reply};
use super::session::Session;
use super::user_data::{self, NotKept};

/// The private XML storage namespace.
pub const NS: &str = "jabber:iq:private";
const KIND: &str = "private";
/// Elements kept per user at most.
pub const MAX_ELEMENTS: usize = 64;

fn slot(el: &Element) -> String {
    format!("{{{}}}{}", el.ns, el.name)
}

/// Namespaces a client may not store under (RFC 6120's and this one).
fn reserved(el: &Element) -> bool {
    el.ns == ns::CLIENT || el.ns == NS || el.ns.is_empty()
}

impl Session {
    /// A `jabber:iq:private` IQ to the user's own account.
    pub(super) async fn handle_private(&mut self, iq: &Element, query: &Element) -> bool {
        let store = self.state.store.clone();
        let user = self.principal.user_id.clone();
        let Some(asked) = query.elements().next().cloned() else {
            return self
                .private_error(iq, "bad-request", "modify", "2 name one element")
                .await;
        };
        if reserved(&asked) {
            return self
                .private_error(iq, "not-acceptable", "modify", "2 reserved namespace")
                .await;
        }
        let mut kept: BTreeMap<String, String> = user_data::load(store.as_ref(), KIND, &user)
            .await
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default();
        match iq.get_attr("type") {
            Some("get") => {
                let found = kept
                    .get(&slot(&asked))
                    .and_then(|x| user_data::parse(x))
                    .unwrap_or_else(|| Element::new(asked.name.clone(), asked.ns.clone()));
                let reply = self
                    .iq_result(iq)
                    .child(Element::new("query", NS).child(found));
                self.send_stanza(&reply, None)
            }
            Some("set") => {
                for el in query.elements() {
                    if reserved(el) {
                        return self
                            .private_error(iq, "not-acceptable", "modify", "2 reserved namespace")
                            .await;
                    }
                    if el.elements().next().is_none() && el.text_content().is_empty() {
                        kept.remove(&slot(el));
                    } else {
                        kept.insert(slot(el), el.to_standalone_xml());
                    }
                }
                if kept.len() > MAX_ELEMENTS {
                    return self
                        .private_error(iq, "resource-constraint", "wait", "250 too many elements")
                        .await;
                }
                let value = if kept.is_empty() {
                    String::new()
                } else {
                    serde_json::to_string(&kept).unwrap_or_default()
                };
                match user_data::save(store.as_ref(), KIND, &user, value).await {
                    Ok(()) => {
                        let reply = self.iq_result(iq);
                        self.send_stanza(&reply, None)
                    }
                    Err(NotKept::TooLarge) => {
                        self.private_error(
                            iq,
                            "resource-constraint",
                            "wait",
                            "250 too much private data",
                        )
                        .await
                    }
                    Err(NotKept::Store) => {
                        self.private_error(iq, "internal-server-error", "wait", "500 not stored")
                            .await
                    }
                }
            }
            _ => {
                self.private_error(iq, "bad-request", "modify", "2 get or set")
                    .await
            }
        }
    }

    async fn private_error(
        &mut self,
        iq: &Element,
        condition: &str,
        kind: &str,
        text: &str,
    ) -> bool {
        let reply = error_reply(iq, &self.jid, condition_element(condition, kind, text));
        self.send_stanza(&reply, None)
    }
}
