//! Client `<iq>` requests: XEP-0199 ping, XEP-0030 disco (which features
//! this server supports), an empty roster, the legacy session element,
//! XEP-0313 MAM queries ([`super::mam`]). Anything else is
//! `<service-unavailable/>`; answers to the server's own pings are
//! dropped.

use imgate_codecs::xmpp::{ns, Element};

use super::errors::{condition_element, error_element, error_reply};
use super::mam;
use super::session::Session;

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
    ns::IMGATE_PAYLOAD,
];

impl Session {
    pub(super) async fn handle_iq(&mut self, el: &Element) -> bool {
        let kind = el.get_attr("type").unwrap_or_default();
        if kind == "result" || kind == "error" {
            return true;
        }
        let Some(payload) = el.elements().next() else {
            let err = condition_element("bad-request", "modify", "2 an iq needs one child");
            return self
                .send_stanza(&error_reply(el, &self.jid, err), None)
                .await;
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
                result().child(disco_info(payload.get_attr("node")))
            }
            ("get", ns::DISCO_ITEMS, "query") => {
                result().child(Element::new("query", ns::DISCO_ITEMS))
            }
            ("get", ns::ROSTER, "query") => result().child(Element::new("query", ns::ROSTER)),
            ("set", ns::SESSION, "session") => result(),
            ("set", ns::MAM, "query") => {
                return self.handle_mam(el, payload).await;
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
        self.send_stanza(&reply, None).await
    }

    async fn handle_mam(&mut self, iq: &Element, query: &Element) -> bool {
        let outcome = mam::query(
            &self.state,
            &self.ctx.normalizer,
            &self.principal.user_id,
            &self.jid,
            query,
        )
        .await;
        match outcome {
            Ok(page) => {
                for m in &page.results {
                    if !self.send_stanza(m, None).await {
                        return false;
                    }
                }
                let fin = Element::new("iq", ns::CLIENT)
                    .attr("type", "result")
                    .attr_opt("id", iq.get_attr("id"))
                    .attr("to", self.jid.clone())
                    .child(page.fin);
                self.send_stanza(&fin, None).await
            }
            Err(e) => {
                let reply = error_reply(iq, &self.jid, error_element(&e));
                self.send_stanza(&reply, None).await
            }
        }
    }
}

/// The disco#info answer: an IM server and the [`FEATURES`].
fn disco_info(node: Option<&str>) -> Element {
    let mut q = Element::new("query", ns::DISCO_INFO)
        .attr_opt("node", node)
        .child(
            Element::new("identity", ns::DISCO_INFO)
                .attr("category", "server")
                .attr("type", "im")
                .attr("name", "imgate"),
        );
    for f in FEATURES {
        q = q.child(Element::new("feature", ns::DISCO_INFO).attr("var", *f));
    }
    q
}
