//! Client `<iq>` stanzas. Addressed to another client's full JID they are
//! routed there, answers included ([`super::routing`], RFC 6120
//! §10.5.3.2; `<service-unavailable/>` when that resource is not
//! connected). Addressed to another account's bare JID the server answers
//! on its behalf (§10.5.3.1: disco#info with an account identity,
//! anything else `<service-unavailable/>`). Addressed to the server or
//! the sender's own JID: XEP-0199 ping, XEP-0030 disco (which features
//! this server supports), the roster, the legacy session element,
//! XEP-0313 MAM queries ([`super::mam`]). Anything else is
//! `<service-unavailable/>`; answers to the server's own pings are
//! dropped.

use imgate_codecs::xmpp::{ns, Element};

use super::errors::{condition_element, error_element, error_reply};
use super::mam;
use super::routing::{self, Addressee, Routed};
use super::session::Session;
use super::{pep, private_storage, vcard};

/// The features answered to disco#info, in the order listed.
pub const FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::PING,
    ns::RECEIPTS,
    ns::SM,
    ns::MAM,
    ns::RSM,
    ns::STANZA_ID,
    ns::CARBONS,
    ns::CHAT_MARKERS,
    ns::REACTIONS,
    ns::CORRECTION,
    ns::RETRACT,
    ns::BLOCKING,
    vcard::NS,
    private_storage::NS,
    ns::IMGATE_PAYLOAD,
];

impl Session {
    pub(super) async fn handle_iq(&mut self, el: &Element) -> bool {
        let kind = el.get_attr("type").unwrap_or_default();
        let answer = kind == "result" || kind == "error";
        match self.addressee_of(el) {
            Addressee::Server => {}
            Addressee::Resource { user, resource } => {
                return self.route_iq(el, &user, &resource).await;
            }
            Addressee::Account { .. } if answer => return true,
            Addressee::Account { user } => {
                if let Some(p) = el.elements().next().filter(|p| for_account(p)) {
                    let p = p.clone();
                    return self.answer_account_data(el, &p, &user).await;
                }
                return self.answer_for_account(el).await;
            }
            Addressee::Room { .. } | Addressee::RoomService => {
                return self.handle_room_iq(el).await;
            }
            Addressee::Elsewhere if answer => return true,
            Addressee::Elsewhere => {
                let err =
                    condition_element("remote-server-not-found", "cancel", "253 no such server");
                return self.send_stanza(&error_reply(el, &self.jid, err), None);
            }
        }
        if answer {
            return true;
        }
        let Some(payload) = el.elements().next() else {
            let err = condition_element("bad-request", "modify", "2 an iq needs one child");
            return self.send_stanza(&error_reply(el, &self.jid, err), None);
        };
        let payload_ns = payload.ns.clone();
        let result = || {
            Element::new("iq", ns::CLIENT)
                .attr("type", "result")
                .attr_opt("id", el.get_attr("id"))
                .attr_opt("from", el.get_attr("to"))
                .attr("to", self.jid.clone())
        };
        let reply = match (kind, payload_ns.as_str(), payload.name.as_str()) {
            ("get", ns::PING, "ping") => result(),
            ("get", ns::DISCO_INFO, "query") => {
                let own_account = el
                    .get_attr("to")
                    .and_then(imgate_codecs::xmpp::Jid::parse)
                    .is_some_and(|j| j.local.is_some());
                result().child(disco_info(payload.get_attr("node"), own_account))
            }
            ("get", ns::DISCO_ITEMS, "query") => {
                result().child(Element::new("query", ns::DISCO_ITEMS))
            }
            (_, ns::ROSTER, "query") => return self.handle_roster(el).await,
            (_, _, _) if for_account(payload) => {
                let (p, own) = (payload.clone(), self.principal.user_id.clone());
                return self.answer_account_data(el, &p, &own).await;
            }
            (_, private_storage::NS, "query") => {
                let p = payload.clone();
                return self.handle_private(el, &p).await;
            }
            ("set", ns::SESSION, "session") => result(),
            // XEP-0280: every device of a user always gets the messages
            // sent to it and, as `<sent>` carbons, the ones its other
            // devices sent (DESIGN §2 multi-device sync), so carbons are
            // on from the start and cannot be turned off.
            ("set", ns::CARBONS, "enable") => result(),
            ("set", ns::CARBONS, "disable") => error_reply(
                el,
                &self.jid,
                condition_element(
                    "not-allowed",
                    "cancel",
                    "248 every device of a user gets every message",
                ),
            ),
            (_, ns::BLOCKING, _) => return self.handle_blocking(el, payload).await,
            ("set", ns::MAM, "query") => {
                return self.handle_mam(el, payload, None).await;
            }
            ("get", ns::MAM, "query") => result().child(mam::form()),
            ("set", ns::BIND, "bind") => error_reply(
                el,
                &self.jid,
                condition_element("not-allowed", "cancel", "2 the resource is already bound"),
            ),
            _ => error_reply(
                el,
                &self.jid,
                condition_element("service-unavailable", "cancel", "254 not supported"),
            ),
        };
        self.send_stanza(&reply, None)
    }

    /// Where a stanza from this session is addressed.
    pub(super) fn addressee_of(&self, el: &Element) -> Addressee {
        routing::addressee(
            el.get_attr("to"),
            self.ctx.normalizer.domain(),
            self.ctx.normalizer.group_domain(),
            &self.principal.user_id,
            &self.principal.device_id,
        )
    }

    /// An IQ for another client's resource: routed with this session's
    /// full JID as `from`; a request for a resource that is not connected
    /// is answered `<service-unavailable/>` (RFC 6120 §10.5.3.2), on a
    /// cluster once no node took it ([`routing::route_request`]).
    async fn route_iq(&mut self, el: &Element, user: &str, resource: &str) -> bool {
        let request = matches!(el.get_attr("type"), Some("get") | Some("set"));
        if !self.route_budget.take() {
            if !request {
                return true;
            }
            let err =
                condition_element("resource-constraint", "wait", "250 too many stanzas routed");
            return self.send_stanza(&error_reply(el, &self.jid, err), None);
        }
        let mut stamped = el.clone();
        stamped.set_attr("from", self.jid.clone());
        if !request {
            routing::route(
                self.state.store.as_ref(),
                &self.ctx,
                user,
                Some(resource),
                stamped,
            )
            .await;
            return true;
        }
        let routed = routing::route_request(
            self.state.store.as_ref(),
            &self.ctx,
            (user, resource),
            el,
            stamped,
            (&self.principal.user_id, &self.principal.device_id),
        )
        .await;
        if routed == Routed::Nowhere {
            let err = condition_element(
                "service-unavailable",
                "cancel",
                "253 that resource is not connected",
            );
            return self.send_stanza(&error_reply(el, &self.jid, err), None);
        }
        true
    }

    /// A vCard or PEP request for `owner`'s account.
    async fn answer_account_data(&mut self, iq: &Element, payload: &Element, owner: &str) -> bool {
        if payload.is("vCard", vcard::NS) {
            self.handle_vcard(iq, payload, owner).await
        } else {
            self.handle_pep(iq, payload, owner).await
        }
    }

    /// A request to another account's bare JID, answered by the server on
    /// its behalf (RFC 6120 §10.5.3.1).
    async fn answer_for_account(&mut self, el: &Element) -> bool {
        let payload = el.elements().next();
        let reply = match payload {
            Some(q) if el.get_attr("type") == Some("get") && q.is("query", ns::DISCO_INFO) => {
                Element::new("iq", ns::CLIENT)
                    .attr("type", "result")
                    .attr_opt("id", el.get_attr("id"))
                    .attr_opt("from", el.get_attr("to"))
                    .attr("to", self.jid.clone())
                    .child(
                        Element::new("query", ns::DISCO_INFO)
                            .attr_opt("node", q.get_attr("node"))
                            .child(
                                Element::new("identity", ns::DISCO_INFO)
                                    .attr("category", "account")
                                    .attr("type", "registered"),
                            )
                            .child(pep_identity())
                            .with_pep_features(),
                    )
            }
            _ => error_reply(
                el,
                &self.jid,
                condition_element("service-unavailable", "cancel", "254 not supported"),
            ),
        };
        self.send_stanza(&reply, None)
    }

    /// A MAM query of the user's archive, or (`room`) of a room's.
    pub(super) async fn handle_mam(
        &mut self,
        iq: &Element,
        query: &Element,
        room: Option<mam::RoomArchive<'_>>,
    ) -> bool {
        let outcome = mam::query(
            &self.state,
            &self.ctx.normalizer,
            &self.principal.user_id,
            &self.jid,
            query,
            room,
        )
        .await;
        match outcome {
            Ok(page) => {
                for m in &page.results {
                    self.send_stanza(m, None);
                }
                let fin = Element::new("iq", ns::CLIENT)
                    .attr("type", "result")
                    .attr_opt("id", iq.get_attr("id"))
                    .attr_opt("from", iq.get_attr("to"))
                    .attr("to", self.jid.clone())
                    .child(page.fin);
                self.send_stanza(&fin, None)
            }
            Err(e) => {
                let reply = error_reply(iq, &self.jid, error_element(&e));
                self.send_stanza(&reply, None)
            }
        }
    }
}

/// Whether an IQ payload is one of the account's data (vCard, PEP).
fn for_account(payload: &Element) -> bool {
    payload.is("vCard", vcard::NS)
        || payload.is("pubsub", pep::NS)
        || payload.is("pubsub", pep::NS_OWNER)
}

fn pep_identity() -> Element {
    Element::new("identity", ns::DISCO_INFO)
        .attr("category", "pubsub")
        .attr("type", "pep")
}

trait WithPepFeatures {
    fn with_pep_features(self) -> Self;
}

impl WithPepFeatures for Element {
    fn with_pep_features(self) -> Element {
        pep::FEATURES.iter().fold(self, |q, f| {
            q.child(Element::new("feature", ns::DISCO_INFO).attr("var", *f))
        })
    }
}

/// The disco#info answer: an IM server and the [`FEATURES`]; asked of
/// the user's own bare JID, also the PEP service (XEP-0163 §6.1).
fn disco_info(node: Option<&str>, own_account: bool) -> Element {
    let mut q = Element::new("query", ns::DISCO_INFO)
        .attr_opt("node", node)
        .child(
            Element::new("identity", ns::DISCO_INFO)
                .attr("category", "server")
                .attr("type", "im")
                .attr("name", "imgate"),
        );
    if own_account {
        q = q.child(pep_identity()).with_pep_features();
    }
    for f in FEATURES {
        q = q.child(Element::new("feature", ns::DISCO_INFO).attr("var", *f));
    }
    q
}
