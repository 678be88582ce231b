//! The room owner's side of XEP-0045, mapped onto the group model (one
//! owner, a member list, DESIGN §2; see docs/xmpp.md):
//!
//! - `muc#owner` configuration (§10.1): `get` gives the room form (name,
//!   and the fixed members-only, persistent, non-anonymous settings);
//!   a submitted form (an instant room's empty one included) is
//!   accepted and its room name renames the group; `cancel` is
//!   accepted; `<destroy/>` is refused (groups are deleted through the
//!   admin API).
//! - `muc#admin` affiliations (§9): `member` adds the user to the group,
//!   `none` and `outcast` remove them (there is no ban list: a removed
//!   user may be added again); `owner` and `admin` are refused (a group
//!   has one owner). Changes are announced like the admin API's, so
//!   every node's rooms show a removed occupant leaving (321).
//! - roles (§8): `none` kicks the occupant (every resource of that user
//!   leaves the room with 307, stays a member and may join again);
//!   `participant` is what every occupant is; other roles are refused.
//!   Lists: `get` of `owner` or `member` affiliations, for members.
//!
//! Only the group's owner may configure the room, change affiliations
//! or kick.

use imgate_codecs::xmpp::{ns, Element, Jid};
use imgate_core::store::Group;

use super::errors::{condition_element, error_reply};
use super::muc::affiliation_of;
use super::muc_occupants::{self as occupants, Change, OccupantNotice};
use super::session::Session;
use crate::group_events::{self, GroupChange};

pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
/// Items in one affiliation/role change at most.
pub const MAX_ITEMS: usize = 100;

struct Refusal(&'static str, &'static str, &'static str);

const NOT_OWNER: Refusal = Refusal("forbidden", "auth", "248 only the group's owner");

fn field(var: &str, kind: &str, label: &str, value: &str) -> Element {
    Element::new("field", ns::DATA_FORMS)
        .attr("var", var)
        .attr("type", kind)
        .attr("label", label)
        .child(Element::new("value", ns::DATA_FORMS).text(value.to_string()))
}

/// The room configuration form (§10.2).
fn config_form(g: &Group) -> Element {
    Element::new("x", ns::DATA_FORMS)
        .attr("type", "form")
        .child(Element::new("title", ns::DATA_FORMS).text(format!("Configuration of {}", g.id)))
        .child(field("FORM_TYPE", "hidden", "", ROOMCONFIG))
        .child(field(
            "muc#roomconfig_roomname",
            "text-single",
            "Room name",
            &g.name,
        ))
        .child(field(
            "muc#roomconfig_persistentroom",
            "boolean",
            "Persistent (always)",
            "1",
        ))
        .child(field(
            "muc#roomconfig_membersonly",
            "boolean",
            "Members only (always)",
            "1",
        ))
        .child(field(
            "muc#roomconfig_whois",
            "list-single",
            "Real JIDs shown to (always anyone)",
            "anyone",
        ))
}

fn submitted(form: &Element, var: &str) -> Option<String> {
    form.elements()
        .find(|f| f.name == "field" && f.get_attr("var") == Some(var))
        .and_then(|f| f.get_child("value", ns::DATA_FORMS))
        .map(Element::text_content)
}

impl Session {
    /// A `muc#owner` or `muc#admin` IQ to the room of `group`.
    pub(super) async fn handle_room_admin(
        &mut self,
        iq: &Element,
        group: &str,
        q: &Element,
    ) -> bool {
        let outcome = match self.state.store.group(group).await {
            Ok(Some(g)) if g.members.contains(&self.principal.user_id) => {
                if q.ns == NS_OWNER {
                    self.room_owner(iq, g, q).await
                } else {
                    self.room_affiliations(iq, g, q).await
                }
            }
            Ok(_) => Err(Refusal(
                "item-not-found",
                "cancel",
                "253 no such group of yours",
            )),
            Err(_) => Err(Refusal("internal-server-error", "wait", "500 store")),
        };
        let reply = match outcome {
            Ok(r) => r,
            Err(Refusal(c, k, t)) => error_reply(iq, &self.jid, condition_element(c, k, t)),
        };
        self.send_stanza(&reply, None)
    }

    async fn room_owner(
        &mut self,
        iq: &Element,
        mut g: Group,
        q: &Element,
    ) -> Result<Element, Refusal> {
        if g.owner != self.principal.user_id {
            return Err(NOT_OWNER);
        }
        let set = iq.get_attr("type") == Some("set");
        if !set {
            return Ok(self
                .iq_result(iq)
                .child(Element::new("query", NS_OWNER).child(config_form(&g))));
        }
        if q.elements().any(|e| e.name == "destroy") {
            return Err(Refusal(
                "not-allowed",
                "cancel",
                "248 groups are deleted through the admin API",
            ));
        }
        let Some(form) = q.get_child("x", ns::DATA_FORMS) else {
            return Err(Refusal("bad-request", "modify", "2 a form is needed"));
        };
        if form.get_attr("type") == Some("submit") {
            let name = submitted(form, "muc#roomconfig_roomname")
                .map(|n| n.trim().chars().take(128).collect::<String>())
                .filter(|n| !n.is_empty() && *n != g.name);
            if let Some(name) = name {
                g.name = name;
                if self.state.store.put_group(g).await.is_err() {
                    return Err(Refusal("internal-server-error", "wait", "500 not stored"));
                }
            }
        }
        Ok(self.iq_result(iq))
    }

    async fn room_affiliations(
        &mut self,
        iq: &Element,
        mut g: Group,
        q: &Element,
    ) -> Result<Element, Refusal> {
        let items: Vec<&Element> = q
            .elements()
            .filter(|e| e.name == "item")
            .take(MAX_ITEMS + 1)
            .collect();
        if items.is_empty() || items.len() > MAX_ITEMS {
            return Err(Refusal("bad-request", "modify", "2 one to 100 items"));
        }
        if iq.get_attr("type") != Some("set") {
            return Ok(self.iq_result(iq).child(self.affiliation_list(&g, &items)));
        }
        if g.owner != self.principal.user_id {
            return Err(NOT_OWNER);
        }
        let domain = self.ctx.normalizer.domain().to_string();
        let (mut added, mut removed, mut kicked) = (Vec::new(), Vec::new(), Vec::new());
        for item in items {
            let by_nick = item
                .get_attr("nick")
                .and_then(|n| self.ctx.occupants.user_of(&g.id, n));
            let by_jid = item
                .get_attr("jid")
                .and_then(Jid::parse)
                .and_then(|j| match j.local {
                    Some(l) if j.domain == domain => Some(l),
                    _ => None,
                });
            let Some(user) = by_jid.or(by_nick) else {
                return Err(Refusal(
                    "item-not-found",
                    "cancel",
                    "253 no such user or nick",
                ));
            };
            if let Some(role) = item.get_attr("role") {
                match role {
                    "none" if user == g.owner => {
                        return Err(Refusal(
                            "not-allowed",
                            "cancel",
                            "248 the owner cannot be kicked",
                        ))
                    }
                    "none" => kicked.push(user.clone()),
                    "participant" => {}
                    _ => {
                        return Err(Refusal(
                            "not-allowed",
                            "cancel",
                            "248 every occupant is a participant",
                        ))
                    }
                }
            }
            if let Some(aff) = item.get_attr("affiliation") {
                match aff {
                    "member" if user == g.owner => {
                        return Err(Refusal(
                            "not-allowed",
                            "cancel",
                            "248 the owner stays the owner",
                        ))
                    }
                    "member" => {
                        if g.members.insert(user.clone()) {
                            added.push(user);
                        }
                    }
                    "none" | "outcast" if user == g.owner => {
                        return Err(Refusal(
                            "not-allowed",
                            "cancel",
                            "248 the owner stays a member",
                        ))
                    }
                    "none" | "outcast" => {
                        if g.members.remove(&user) {
                            removed.push(user);
                        }
                    }
                    _ => {
                        return Err(Refusal(
                            "not-allowed",
                            "cancel",
                            "248 a group has one owner",
                        ))
                    }
                }
            }
        }
        if !added.is_empty() || !removed.is_empty() {
            let change = GroupChange {
                group: g.id.clone(),
                owner: g.owner.clone(),
                members: g.members.iter().cloned().collect(),
                added,
                removed,
            };
            if self.state.store.put_group(g.clone()).await.is_err() {
                return Err(Refusal("internal-server-error", "wait", "500 not stored"));
            }
            group_events::announce(self.state.store.as_ref(), change).await;
        }
        for user in kicked {
            let entry = self
                .ctx
                .occupants
                .of(&g.id)
                .into_iter()
                .find(|o| o.user == user);
            if let Some(occupant) = entry {
                let n = OccupantNotice {
                    group: g.id.clone(),
                    occupant,
                    change: Change::Kicked,
                };
                let _ = occupants::change(self.state.store.as_ref(), &self.ctx, n, None).await;
            }
        }
        Ok(self.iq_result(iq))
    }

    /// The members or owner asked for (§9.5, §10.5), as `muc#admin` items.
    fn affiliation_list(&self, g: &Group, asked: &[&Element]) -> Element {
        let mut q = Element::new("query", NS_ADMIN);
        for item in asked {
            let wanted = item.get_attr("affiliation").unwrap_or_default();
            for m in g.members.iter().filter(|m| affiliation_of(g, m) == wanted) {
                q = q.child(
                    Element::new("item", NS_ADMIN)
                        .attr("affiliation", wanted.to_string())
                        .attr("jid", self.ctx.normalizer.user_jid(m)),
                );
            }
        }
        q
    }
}
