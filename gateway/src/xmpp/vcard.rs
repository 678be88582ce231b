//! XEP-0054 vCard-temp: a user's vCard, kept per user
//! ([`super::user_data`], kind `vcard`, at most
//! [`user_data::MAX_VALUE`] bytes, photos included: XEP-0153 avatars
//! live there). The user sets it (`set` to the own bare JID or none);
//! anyone on the server gets it (`get` to the user's bare JID); a user
//! without one gets an empty `<vCard/>`.

use imgate_codecs::xmpp::Element;

use super::errors::{condition_element, error_reply};
use super::session::Session;
use super::user_data::{self, NotKept};

/// The vCard-temp namespace.
pub const NS: &str = "vcard-temp";
const KIND: &str = "vcard";

impl Session {
    /// A vCard IQ for `owner`'s vCard (the sender's own when it is the
    /// sender): `get` answers it, `set` (own only) replaces it.
    pub(super) async fn handle_vcard(
        &mut self,
        iq: &Element,
        vcard: &Element,
        owner: &str,
    ) -> bool {
        let store = self.state.store.clone();
        let reply = match iq.get_attr("type") {
            Some("get") => {
                let kept = user_data::load(store.as_ref(), KIND, owner)
                    .await
                    .and_then(|x| user_data::parse(&x))
                    .filter(|v| v.is("vCard", NS))
                    .unwrap_or_else(|| Element::new("vCard", NS));
                self.iq_result(iq).child(kept)
            }
            Some("set") if owner == self.principal.user_id => {
                let empty = vcard.elements().next().is_none();
                let value = if empty {
                    String::new()
                } else {
                    vcard.to_standalone_xml()
                };
                match user_data::save(store.as_ref(), KIND, owner, value).await {
                    Ok(()) => self.iq_result(iq),
                    Err(NotKept::TooLarge) => error_reply(
                        iq,
                        &self.jid,
                        condition_element("not-acceptable", "modify", "2 the vCard is too large"),
                    ),
                    Err(NotKept::Store) => error_reply(
                        iq,
                        &self.jid,
                        condition_element("internal-server-error", "wait", "500 not stored"),
                    ),
                }
            }
            _ => error_reply(
                iq,
                &self.jid,
                condition_element("forbidden", "auth", "248 only the user sets its vCard"),
            ),
        };
        self.send_stanza(&reply, None)
    }

    /// An empty result to the IQ `iq`, from where it was sent to.
    pub(super) fn iq_result(&self, iq: &Element) -> Element {
        Element::new("iq", imgate_codecs::xmpp::ns::CLIENT)
            .attr("type", "result")
            .attr_opt("id", iq.get_attr("id"))
            .attr_opt("from", iq.get_attr("to"))
            .attr("to", self.jid.clone())
    }
}
