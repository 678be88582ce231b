//! Who is in each room (XEP-0045 occupants): the XMPP resources of a
//! group's members that joined its room, each under the nick its client
//! chose (one nick per user in a room; a user's resources share it).
//! Every node keeps the whole table: a change is applied where it is
//! made and announced (`Store::announce`, topic [`OCCUPANT_TOPIC`]), and
//! every node shows it as room presence to its own occupants of that
//! room ([`show`]). Like every announcement it is transient: a node that
//! starts later learns a room's occupants as they join again.
//!
//! Bounds: [`MAX_OCCUPANTS`] per room, [`MAX_ENTRIES`] in all, nicks of
//! at most [`MAX_NICK`] bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use imgate_codecs::xmpp::{ns, Element};
use imgate_core::Store;
use serde::{Deserialize, Serialize};

use super::XmppContext;
use crate::sessions::cluster::follow_topic;

pub const OCCUPANT_TOPIC: &str = "xmpp.muc.occupant";
/// Occupant entries (resources) per room at most.
pub const MAX_OCCUPANTS: usize = 500;
/// Occupant entries on all rooms at most.
pub const MAX_ENTRIES: usize = 100_000;
/// The longest nick.
pub const MAX_NICK: usize = 64;

/// One joined resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occupant {
    pub user: String,
    pub resource: String,
    pub nick: String,
    /// `owner` (the group's owner) or `member`.
    pub affiliation: String,
}

impl Occupant {
    pub fn role(&self) -> &'static str {
        if self.affiliation == "owner" {
            "moderator"
        } else {
            "participant"
        }
    }
}

/// What happened to an occupant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The resource joined (or updated its presence).
    Joined,
    /// The resource left, with the status text its client gave.
    Left { status: Option<String> },
    /// The user's nick changed from `old` (every resource of the user).
    Renamed { old: String },
    /// The owner kicked the user (every resource; XEP-0045 §8.2, 307).
    Kicked,
    /// The user is no longer a member (321).
    Removed,
    /// The resource's session ended.
    Gone,
}

/// One change as announced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OccupantNotice {
    pub group: String,
    pub occupant: Occupant,
    pub change: Change,
}

type Rooms = HashMap<String, Vec<Occupant>>;

/// This node's view of every room's occupants.
#[derive(Default)]
pub struct Occupants {
    rooms: Mutex<Rooms>,
}

fn lock(m: &Mutex<Rooms>) -> MutexGuard<'_, Rooms> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Why a join was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Another user has that nick in the room.
    NickTaken,
    /// The room or the table is full.
    Full,
}

impl Occupants {
    /// The room's occupants (every resource).
    pub fn of(&self, group: &str) -> Vec<Occupant> {
        lock(&self.rooms).get(group).cloned().unwrap_or_default()
    }

    /// The entry of `user`'s `resource` in the room.
    pub fn entry(&self, group: &str, user: &str, resource: &str) -> Option<Occupant> {
        lock(&self.rooms)
            .get(group)?
            .iter()
            .find(|o| o.user == user && o.resource == resource)
            .cloned()
    }

    /// `user`'s nick in the room, while one of its resources is in.
    pub fn nick_of(&self, group: &str, user: &str) -> Option<String> {
        lock(&self.rooms)
            .get(group)?
            .iter()
            .find(|o| o.user == user)
            .map(|o| o.nick.clone())
    }

    /// The user whose nick in the room is `nick`.
    pub fn user_of(&self, group: &str, nick: &str) -> Option<String> {
        lock(&self.rooms)
            .get(group)?
            .iter()
            .find(|o| o.nick == nick)
            .map(|o| o.user.clone())
    }

    /// Whether `nick` can be `user`'s in the room (free, or the user's).
    pub fn check_nick(&self, group: &str, user: &str, nick: &str) -> Result<(), Refused> {
        match self.user_of(group, nick) {
            Some(u) if u != user => Err(Refused::NickTaken),
            _ => Ok(()),
        }
    }

    /// Apply a change; the entries it ended (for the presence shown).
    fn apply(&self, n: &OccupantNotice) -> Result<Vec<Occupant>, Refused> {
        let mut rooms = lock(&self.rooms);
        let total: usize = rooms.values().map(Vec::len).sum();
        let o = &n.occupant;
        let room = rooms.entry(n.group.clone()).or_default();
        let ended = match &n.change {
            Change::Joined => {
                match room
                    .iter_mut()
                    .find(|e| e.user == o.user && e.resource == o.resource)
                {
                    Some(e) => *e = o.clone(),
                    None => {
                        if room.len() >= MAX_OCCUPANTS || total >= MAX_ENTRIES {
                            return Err(Refused::Full);
                        }
                        room.push(o.clone());
                    }
                }
                Vec::new()
            }
            Change::Left { .. } | Change::Gone => {
                let (gone, kept) = room
                    .drain(..)
                    .partition(|e| e.user == o.user && e.resource == o.resource);
                *room = kept;
                gone
            }
            Change::Renamed { .. } => {
                for e in room.iter_mut().filter(|e| e.user == o.user) {
                    e.nick = o.nick.clone();
                }
                Vec::new()
            }
            Change::Kicked | Change::Removed => {
                let (gone, kept) = room.drain(..).partition(|e| e.user == o.user);
                *room = kept;
                gone
            }
        };
        if room.is_empty() {
            rooms.remove(&n.group);
        }
        Ok(ended)
    }

    /// Every room `user`'s `resource` is in.
    pub fn rooms_of(&self, user: &str, resource: &str) -> Vec<(String, Occupant)> {
        lock(&self.rooms)
            .iter()
            .flat_map(|(g, list)| {
                list.iter()
                    .filter(|o| o.user == user && o.resource == resource)
                    .map(|o| (g.clone(), o.clone()))
            })
            .collect()
    }
}

/// The `<x xmlns='…muc#user'>` of an occupant's presence.
pub fn occupant_x(ctx: &XmppContext, o: &Occupant, role: &str, codes: &[&str]) -> Element {
    let mut x = Element::new("x", ns::MUC_USER).child(
        Element::new("item", ns::MUC_USER)
            .attr("affiliation", o.affiliation.clone())
            .attr("role", role)
            .attr(
                "jid",
                format!("{}@{}/{}", o.user, ctx.normalizer.domain(), o.resource),
            ),
    );
    for c in codes {
        x = x.child(Element::new("status", ns::MUC_USER).attr("code", *c));
    }
    x
}

/// Make a change here and tell the other nodes; the presences it causes
/// go to this node's occupants (except `quiet`, the resource that made
/// the change and is answered by its own session).
pub async fn change(
    store: &dyn Store,
    ctx: &XmppContext,
    notice: OccupantNotice,
    quiet: Option<(&str, &str)>,
) -> Result<(), Refused> {
    let ended = ctx.occupants.apply(&notice)?;
    show(ctx, &notice, &ended, quiet);
    if ctx.clustered {
        match serde_json::to_string(&notice) {
            Ok(p) => {
                if let Err(e) = store.announce(OCCUPANT_TOPIC.to_string(), p).await {
                    tracing::debug!(error = %e, "xmpp: an occupant change was not announced");
                }
            }
            Err(e) => tracing::warn!(error = %e, "xmpp: occupant change not encodable"),
        }
    }
    Ok(())
}

/// Room presence for a change, to this node's occupants of the room
/// and to the resources the change ended.
fn show(ctx: &XmppContext, n: &OccupantNotice, ended: &[Occupant], quiet: Option<(&str, &str)>) {
    let room = format!("{}@{}", n.group, ctx.normalizer.group_domain());
    let o = &n.occupant;
    let mut watchers = ctx.occupants.of(&n.group);
    watchers.extend(ended.iter().cloned());
    for w in watchers {
        if quiet.is_some_and(|(u, r)| u == w.user && r == w.resource) {
            continue;
        }
        let to = format!("{}@{}/{}", w.user, ctx.normalizer.domain(), w.resource);
        let own = w.user == o.user;
        let with_self = |codes: &[&'static str]| {
            let mut c = codes.to_vec();
            if own {
                c.push("110");
            }
            c
        };
        let presences: Vec<Element> = match &n.change {
            Change::Joined => vec![Element::new("presence", ns::CLIENT)
                .attr("from", format!("{room}/{}", o.nick))
                .child(occupant_x(ctx, o, o.role(), &[]))],
            Change::Left { status } => {
                let mut p = Element::new("presence", ns::CLIENT)
                    .attr("from", format!("{room}/{}", o.nick))
                    .attr("type", "unavailable")
                    .child(occupant_x(ctx, o, "none", &with_self(&[])));
                if let Some(s) = status {
                    p = p.child(Element::new("status", ns::CLIENT).text(s.clone()));
                }
                vec![p]
            }
            Change::Gone => vec![Element::new("presence", ns::CLIENT)
                .attr("from", format!("{room}/{}", o.nick))
                .attr("type", "unavailable")
                .child(occupant_x(ctx, o, "none", &[]))],
            Change::Kicked | Change::Removed => {
                let code = if n.change == Change::Kicked {
                    "307"
                } else {
                    "321"
                };
                let aff = if n.change == Change::Kicked {
                    o.affiliation.as_str()
                } else {
                    "none"
                };
                let mut gone = o.clone();
                gone.affiliation = aff.to_string();
                vec![Element::new("presence", ns::CLIENT)
                    .attr("from", format!("{room}/{}", o.nick))
                    .attr("type", "unavailable")
                    .child(occupant_x(ctx, &gone, "none", &with_self(&[code])))]
            }
            Change::Renamed { old } => {
                let mut x = occupant_x(ctx, o, o.role(), &with_self(&["303"]));
                // §7.6: the old nick's unavailable presence names the new one.
                if let Some(item) = x.children.iter_mut().find_map(|c| match c {
                    imgate_codecs::xmpp::Node::Element(e) if e.name == "item" => Some(e),
                    _ => None,
                }) {
                    item.set_attr("nick", o.nick.clone());
                }
                vec![
                    Element::new("presence", ns::CLIENT)
                        .attr("from", format!("{room}/{old}"))
                        .attr("type", "unavailable")
                        .child(x),
                    Element::new("presence", ns::CLIENT)
                        .attr("from", format!("{room}/{}", o.nick))
                        .child(occupant_x(ctx, o, o.role(), &with_self(&[]))),
                ]
            }
        };
        for mut p in presences {
            p.set_attr("to", to.clone());
            ctx.router.send_to_resource(&w.user, &w.resource, p);
        }
    }
}

/// Apply a change that every node applies itself (not announced).
pub fn apply_here(ctx: &XmppContext, n: &OccupantNotice) {
    if let Ok(ended) = ctx.occupants.apply(n) {
        show(ctx, n, &ended, None);
    }
}

/// Apply the other nodes' occupant changes until the store closes.
pub async fn follow(store: Arc<dyn Store>, ctx: Arc<XmppContext>) {
    follow_topic(store, OCCUPANT_TOPIC, |n: OccupantNotice, local| {
        if local {
            return;
        }
        if let Ok(ended) = ctx.occupants.apply(&n) {
            show(&ctx, &n, &ended, None);
        }
    })
    .await;
}

/// A session ended: it leaves every room it was in (in the background).
pub fn session_ended(store: Arc<dyn Store>, ctx: &Arc<XmppContext>, user: &str, resource: &str) {
    let joined = ctx.occupants.rooms_of(user, resource);
    if joined.is_empty() {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        for (group, occupant) in joined {
            let n = OccupantNotice {
                group,
                occupant,
                change: Change::Gone,
            };
            let _ = change(store.as_ref(), &ctx, n, None).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occ(user: &str, resource: &str, nick: &str) -> Occupant {
        Occupant {
            user: user.into(),
            resource: resource.into(),
            nick: nick.into(),
            affiliation: "member".into(),
        }
    }

    fn notice(o: Occupant, change: Change) -> OccupantNotice {
        OccupantNotice {
            group: "g".into(),
            occupant: o,
            change,
        }
    }

    #[test]
    fn joins_renames_kicks_and_leaves() {
        let t = Occupants::default();
        t.apply(&notice(occ("a", "pc", "alice"), Change::Joined))
            .unwrap();
        t.apply(&notice(occ("a", "phone", "alice"), Change::Joined))
            .unwrap();
        t.apply(&notice(occ("b", "pc", "bob"), Change::Joined))
            .unwrap();
        assert_eq!(t.of("g").len(), 3);
        assert_eq!(t.check_nick("g", "b", "alice"), Err(Refused::NickTaken));
        assert_eq!(t.check_nick("g", "a", "alice"), Ok(()));
        t.apply(&notice(
            occ("a", "pc", "al"),
            Change::Renamed {
                old: "alice".into(),
            },
        ))
        .unwrap();
        assert_eq!(t.user_of("g", "al").as_deref(), Some("a"));
        assert_eq!(t.user_of("g", "alice"), None);
        let ended = t
            .apply(&notice(occ("a", "pc", "al"), Change::Kicked))
            .unwrap();
        assert_eq!(ended.len(), 2, "every resource of the kicked user");
        let ended = t
            .apply(&notice(
                occ("b", "pc", "bob"),
                Change::Left { status: None },
            ))
            .unwrap();
        assert_eq!(ended.len(), 1);
        assert!(t.of("g").is_empty());
        assert!(t.rooms_of("b", "pc").is_empty());
    }

    #[test]
    fn a_room_is_bounded() {
        let t = Occupants::default();
        for i in 0..MAX_OCCUPANTS {
            t.apply(&notice(
                occ(&format!("u{i}"), "r", &format!("n{i}")),
                Change::Joined,
            ))
            .unwrap();
        }
        assert_eq!(
            t.apply(&notice(occ("late", "r", "late"), Change::Joined)),
            Err(Refused::Full)
        );
    }
}
