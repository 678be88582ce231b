//! XEP-0163 Personal Eventing Protocol, the basics clients use for
//! avatars (XEP-0084), bookmarks (XEP-0402) and private PEP data
//! (XEP-0223): each user's account is a pubsub service of its own nodes.
//!
//! - publish (`pubsub/publish`, with `publish-options`
//!   `pubsub#access_model` and `pubsub#max_items`): the node is made on
//!   first publish; an item with the id of a kept one replaces it; the
//!   node keeps its newest `max_items` (default 1, `max` = [`MAX_ITEMS`]).
//! - items (`pubsub/items`, optionally naming item ids or `max_items`),
//!   retract, and node delete (`pubsub#owner/delete`).
//! - who may read: the owner always; others by the node's access model:
//!   `open` anyone on the server, `presence`/`roster` (the default) the
//!   owner's contacts ([`super::roster::contacts`]), `whitelist` no one.
//! - notifications: a published item goes as a `headline` message with
//!   `<event xmlns='…pubsub#event'>` to the owner's available resources
//!   and, unless the node is `whitelist`, to the contacts' available
//!   resources, on every node ([`super::routing::route`]).
//!
//! Kept per user ([`super::user_data`], kind `pep`, JSON), at most
//! [`MAX_NODES`] nodes of [`MAX_ITEMS`] items, [`user_data::MAX_VALUE`]
//! bytes in all. Not built: subscriptions other than the contacts'
//! (`+notify` filtering of XEP-0115 caps), sending the last item on
//! presence, node configuration forms.

use std::collections::BTreeMap;

use imgate_codecs::xmpp::{ns, Element, Node as XmlNode};
use serde::{Deserialize, Serialize};

use super::errors::{condition_element, error_reply};
use super::roster::contacts;
use super::routing;
use super::session::Session;
use super::user_data::{self, NotKept};

pub const NS: &str = "http://jabber.org/protocol/pubsub";
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const KIND: &str = "pep";
/// Nodes per user at most.
pub const MAX_NODES: usize = 32;
/// Items per node at most.
pub const MAX_ITEMS: usize = 64;
/// The longest node name or item id.
pub const MAX_NAME: usize = 256;

/// The disco#info features of a PEP account.
pub const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-whitelist",
];

#[derive(Debug, Default, Serialize, Deserialize)]
struct Nodes {
    nodes: BTreeMap<String, PepNode>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PepNode {
    access: String,
    max_items: usize,
    /// Oldest first: (id, the `<item>` as XML).
    items: Vec<(String, String)>,
}

/// What a request did wrong, as a stanza error.
struct Refusal(&'static str, &'static str, &'static str);

const NOT_FOUND: Refusal = Refusal("item-not-found", "cancel", "253 no such node or item");

/// The `<publish-options>` field `var`, if given.
fn option(pubsub: &Element, var: &str) -> Option<String> {
    let form = pubsub
        .get_child("publish-options", NS)?
        .get_child("x", ns::DATA_FORMS)?;
    form.elements()
        .filter(|f| f.name == "field" && f.get_attr("var") == Some(var))
        .find_map(|f| f.get_child("value", ns::DATA_FORMS))
        .map(Element::text_content)
}

/// `item` re-made in namespace `to_ns` (pubsub or pubsub#event).
fn item_in(item: &Element, to_ns: &str) -> Element {
    let mut out = Element::new("item", to_ns).attr_opt("id", item.get_attr("id"));
    for c in item.elements() {
        out.children.push(XmlNode::Element(c.clone()));
    }
    out
}

fn may_read(access: &str, is_contact: bool) -> bool {
    match access {
        "open" => true,
        "whitelist" | "authorize" => false,
        _ => is_contact,
    }
}

impl Session {
    async fn load_pep(&self, owner: &str) -> Nodes {
        user_data::load(self.state.store.as_ref(), KIND, owner)
            .await
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default()
    }

    async fn save_pep(&self, nodes: &Nodes) -> Result<(), Refusal> {
        let value = if nodes.nodes.is_empty() {
            String::new()
        } else {
            serde_json::to_string(nodes).unwrap_or_default()
        };
        let user = &self.principal.user_id;
        match user_data::save(self.state.store.as_ref(), KIND, user, value).await {
            Ok(()) => Ok(()),
            Err(NotKept::TooLarge) => Err(Refusal(
                "resource-constraint",
                "wait",
                "250 too much PEP data",
            )),
            Err(NotKept::Store) => Err(Refusal("internal-server-error", "wait", "500 not stored")),
        }
    }

    /// A pubsub IQ to `owner`'s account (the sender's own when it is
    /// the sender).
    pub(super) async fn handle_pep(&mut self, iq: &Element, pubsub: &Element, owner: &str) -> bool {
        let mine = owner == self.principal.user_id;
        let set = iq.get_attr("type") == Some("set");
        let outcome = match (set, mine, pubsub.ns.as_str()) {
            (false, _, NS) => self.pep_items(iq, pubsub, owner).await,
            (true, true, NS) => self.pep_publish_or_retract(iq, pubsub).await,
            (true, true, NS_OWNER) => self.pep_delete(iq, pubsub).await,
            (true, false, _) => Err(Refusal("forbidden", "auth", "248 not your node")),
            _ => Err(Refusal(
                "feature-not-implemented",
                "cancel",
                "254 not supported",
            )),
        };
        let reply = match outcome {
            Ok(r) => r,
            Err(Refusal(c, k, t)) => error_reply(iq, &self.jid, condition_element(c, k, t)),
        };
        self.send_stanza(&reply, None)
    }

    async fn pep_items(
        &mut self,
        iq: &Element,
        pubsub: &Element,
        owner: &str,
    ) -> Result<Element, Refusal> {
        let items = pubsub.get_child("items", NS).ok_or(Refusal(
            "bad-request",
            "modify",
            "2 items expected",
        ))?;
        let name =
            items
                .get_attr("node")
                .ok_or(Refusal("bad-request", "modify", "2 a node is needed"))?;
        let nodes = self.load_pep(owner).await;
        let node = nodes.nodes.get(name).ok_or(NOT_FOUND)?;
        if owner != self.principal.user_id {
            let contact = !matches!(node.access.as_str(), "open" | "whitelist" | "authorize")
                && contacts(self.state.store.as_ref(), owner)
                    .await
                    .contains(&self.principal.user_id);
            if !may_read(&node.access, contact) {
                return Err(Refusal(
                    "not-authorized",
                    "auth",
                    "248 not allowed to read this node",
                ));
            }
        }
        let wanted: Vec<&str> = items
            .elements()
            .filter(|i| i.name == "item")
            .filter_map(|i| i.get_attr("id"))
            .collect();
        let max = items
            .get_attr("max_items")
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(MAX_ITEMS);
        let mut out = Element::new("items", NS).attr("node", name);
        let chosen: Vec<&(String, String)> = if wanted.is_empty() {
            node.items.iter().rev().take(max).collect()
        } else {
            node.items
                .iter()
                .filter(|(id, _)| wanted.contains(&id.as_str()))
                .collect()
        };
        if !wanted.is_empty() && chosen.is_empty() {
            return Err(NOT_FOUND);
        }
        for (_, xml) in chosen {
            if let Some(item) = user_data::parse(xml) {
                out = out.child(item_in(&item, NS));
            }
        }
        Ok(self
            .iq_result(iq)
            .child(Element::new("pubsub", NS).child(out)))
    }

    async fn pep_publish_or_retract(
        &mut self,
        iq: &Element,
        pubsub: &Element,
    ) -> Result<Element, Refusal> {
        if let Some(retract) = pubsub.get_child("retract", NS) {
            let name = retract.get_attr("node").ok_or(Refusal(
                "bad-request",
                "modify",
                "2 a node is needed",
            ))?;
            let ids: Vec<&str> = retract
                .elements()
                .filter_map(|i| i.get_attr("id"))
                .collect();
            let mut nodes = self.load_pep(&self.principal.user_id).await;
            let node = nodes.nodes.get_mut(name).ok_or(NOT_FOUND)?;
            let before = node.items.len();
            node.items.retain(|(id, _)| !ids.contains(&id.as_str()));
            if node.items.len() == before {
                return Err(NOT_FOUND);
            }
            self.save_pep(&nodes).await?;
            return Ok(self.iq_result(iq));
        }
        let publish = pubsub.get_child("publish", NS).ok_or(Refusal(
            "bad-request",
            "modify",
            "2 publish expected",
        ))?;
        let name = publish
            .get_attr("node")
            .filter(|n| !n.is_empty() && n.len() <= MAX_NAME)
            .ok_or(Refusal("bad-request", "modify", "2 a node name is needed"))?
            .to_string();
        let given = publish.get_child("item", NS);
        let id = given
            .and_then(|i| i.get_attr("id"))
            .filter(|i| !i.is_empty())
            .map(str::to_string)
            .unwrap_or_else(super::random_id);
        if id.len() > MAX_NAME {
            return Err(Refusal("bad-request", "modify", "2 item id too long"));
        }
        let mut item = Element::new("item", NS).attr("id", id.clone());
        if let Some(i) = given {
            for c in i.elements() {
                item.children.push(XmlNode::Element(c.clone()));
            }
        }
        let mut nodes = self.load_pep(&self.principal.user_id).await;
        if !nodes.nodes.contains_key(&name) && nodes.nodes.len() >= MAX_NODES {
            return Err(Refusal("resource-constraint", "wait", "250 too many nodes"));
        }
        let access_opt = option(pubsub, "pubsub#access_model");
        let max_opt = option(pubsub, "pubsub#max_items").map(|m| {
            if m == "max" {
                MAX_ITEMS
            } else {
                m.parse::<usize>().unwrap_or(1).clamp(1, MAX_ITEMS)
            }
        });
        let node = nodes.nodes.entry(name.clone()).or_insert_with(|| PepNode {
            access: "presence".to_string(),
            max_items: 1,
            items: Vec::new(),
        });
        if let Some(a) =
            access_opt.filter(|a| ["open", "presence", "roster", "whitelist"].contains(&a.as_str()))
        {
            node.access = a;
        }
        if let Some(m) = max_opt {
            node.max_items = m;
        }
        node.items.retain(|(i, _)| *i != id);
        node.items.push((id.clone(), item.to_standalone_xml()));
        let excess = node.items.len().saturating_sub(node.max_items);
        node.items.drain(..excess);
        let access = node.access.clone();
        self.save_pep(&nodes).await?;
        self.pep_notify(&name, &item, &access).await;
        Ok(self.iq_result(iq).child(
            Element::new("pubsub", NS).child(
                Element::new("publish", NS)
                    .attr("node", name)
                    .child(Element::new("item", NS).attr("id", id)),
            ),
        ))
    }

    async fn pep_delete(&mut self, iq: &Element, pubsub: &Element) -> Result<Element, Refusal> {
        let name = pubsub
            .get_child("delete", NS_OWNER)
            .and_then(|d| d.get_attr("node"))
            .ok_or(Refusal("bad-request", "modify", "2 delete names a node"))?;
        let mut nodes = self.load_pep(&self.principal.user_id).await;
        if nodes.nodes.remove(name).is_none() {
            return Err(NOT_FOUND);
        }
        self.save_pep(&nodes).await?;
        Ok(self.iq_result(iq))
    }

    /// The published `item` of `node` to the owner's and (unless
    /// whitelisted) the contacts' available resources.
    async fn pep_notify(&mut self, node: &str, item: &Element, access: &str) {
        if !self.route_budget.take() {
            return;
        }
        let user = self.principal.user_id.clone();
        let from = self.ctx.normalizer.user_jid(&user);
        let mut to = vec![user.clone()];
        if access != "whitelist" {
            to.extend(contacts(self.state.store.as_ref(), &user).await);
        }
        let event = Element::new("event", NS_EVENT).child(
            Element::new("items", NS_EVENT)
                .attr("node", node)
                .child(item_in(item, NS_EVENT)),
        );
        for u in to {
            let m = Element::new("message", ns::CLIENT)
                .attr("from", from.clone())
                .attr("to", self.ctx.normalizer.user_jid(&u))
                .attr("type", "headline")
                .attr("id", super::random_id())
                .child(event.clone());
            routing::route(self.state.store.as_ref(), &self.ctx, &u, None, m).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_models() {
        assert!(may_read("open", false));
        assert!(may_read("presence", true));
        assert!(!may_read("presence", false));
        assert!(!may_read("whitelist", true));
    }

    #[test]
    fn publish_options_are_read_from_the_form() {
        let form = Element::new("x", ns::DATA_FORMS)
            .attr("type", "submit")
            .child(
                Element::new("field", ns::DATA_FORMS)
                    .attr("var", "pubsub#access_model")
                    .child(Element::new("value", ns::DATA_FORMS).text("whitelist")),
            );
        let pubsub =
            Element::new("pubsub", NS).child(Element::new("publish-options", NS).child(form));
        assert_eq!(
            option(&pubsub, "pubsub#access_model").as_deref(),
            Some("whitelist")
        );
        assert_eq!(option(&pubsub, "pubsub#max_items"), None);
    }
}
