//! XEP-0191 blocking command: a user's block list, kept in the policy
//! (`PolicyBook::block`, stored with the user statuses and shared by every
//! node), so it holds for every protocol: a private message between two
//! users one of whom blocks the other is refused with code 245
//! (`<not-authorized/>` on XMPP) by the pipeline's auth layer. A local
//! user is listed by user id; any other JID (another server's: imgate
//! does not federate, so it only matters to the client) by its bare JID.
//! A change is pushed to the user's other resources on this node.

use imgate_codecs::xmpp::{ns, Element, Jid};
use imgate_core::ImError;

use super::errors::{condition_element, error_element, error_reply};
use super::session::Session;

impl Session {
    /// `<blocklist/>` get, `<block/>` and `<unblock/>` sets.
    pub(super) async fn handle_blocking(&mut self, iq: &Element, payload: &Element) -> bool {
        let user = self.principal.user_id.clone();
        let result = Element::new("iq", ns::CLIENT)
            .attr("type", "result")
            .attr_opt("id", iq.get_attr("id"))
            .attr("to", self.jid.clone());
        let kind = iq.get_attr("type").unwrap_or_default();
        match (kind, payload.name.as_str()) {
            ("get", "blocklist") => {
                let mut list = Element::new("blocklist", ns::BLOCKING);
                for b in self.state.policy.book.blocked_by(&user) {
                    let jid = if b.contains('@') {
                        b
                    } else {
                        self.ctx.normalizer.user_jid(&b)
                    };
                    list = list.child(Element::new("item", ns::BLOCKING).attr("jid", jid));
                }
                self.send_stanza(&result.child(list), None)
            }
            ("set", "block") | ("set", "unblock") => {
                let mut users = Vec::new();
                for item in payload.elements().filter(|e| e.is("item", ns::BLOCKING)) {
                    match item.get_attr("jid").and_then(Jid::parse) {
                        Some(j)
                            if j.domain == self.ctx.normalizer.domain() && j.local.is_some() =>
                        {
                            users.extend(j.local)
                        }
                        Some(j) => users.push(j.bare()),
                        None => {
                            let err = condition_element("jid-malformed", "modify", "251 not a JID");
                            return self.send_stanza(&error_reply(iq, &self.jid, err), None);
                        }
                    }
                }
                let blocking = payload.name == "block";
                if blocking && users.is_empty() {
                    let err = condition_element("bad-request", "modify", "251 block needs an item");
                    return self.send_stanza(&error_reply(iq, &self.jid, err), None);
                }
                let changed = if blocking {
                    self.state.policy.book.block(&user, &users)
                } else {
                    self.state.policy.book.unblock(&user, &users);
                    Ok(())
                };
                let saved = match changed {
                    Ok(()) => self
                        .state
                        .policy
                        .save(self.state.store.as_ref())
                        .await
                        .map_err(|e| ImError::server(e.to_string())),
                    Err(e) => Err(e),
                };
                if let Err(e) = saved {
                    return self.send_stanza(&error_reply(iq, &self.jid, error_element(&e)), None);
                }
                self.push_block_change(payload);
                self.send_stanza(&result, None)
            }
            _ => {
                let err = condition_element("bad-request", "modify", "2 not a blocking command");
                self.send_stanza(&error_reply(iq, &self.jid, err), None)
            }
        }
    }

    /// XEP-0191 §3.3: the change goes to the user's other resources.
    fn push_block_change(&self, change: &Element) {
        let user = self.principal.user_id.clone();
        let domain = self.domain();
        self.ctx
            .router
            .send_to_user(&user, Some(&self.route), |resource| {
                Element::new("iq", ns::CLIENT)
                    .attr("type", "set")
                    .attr("id", crate::xmpp::random_id())
                    .attr("to", format!("{user}@{domain}/{resource}"))
                    .child(change.clone())
            });
    }
}
