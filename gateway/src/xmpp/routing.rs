//! Routing of stanzas that are not stored (RFC 6120 §10.5, RFC 6121 §8.5):
//! IQs between clients, their answers, and body-less messages (chat
//! states, markers, jingle and other extensions) addressed to a full JID
//! (that one resource) or a bare JID (every available resource).
//!
//! Delivery is this node's sessions first ([`super::router::XmppRouter`]);
//! on a shared store the stanza is also announced (`Store::announce`,
//! topic [`ROUTE_TOPIC`]) so the node that holds the resource delivers it
//! ([`follow`]). Like every announcement it is transient: a node that is
//! down does not see it, and nothing is kept for an offline resource.
//! An IQ request to a resource that is on no node is answered
//! `<service-unavailable/>`: at once by a node that is alone; on a
//! cluster when no node acks it within a few seconds
//! ([`super::route_acks`], [`route_request`]).

use std::sync::Arc;

use imgate_codecs::xmpp::tree::{parse_stanza, Scope};
use imgate_codecs::xmpp::{Element, Jid, DEFAULT_MAX_DEPTH};
use imgate_core::store::Store;
use serde::{Deserialize, Serialize};

use super::{route_acks, XmppContext};
use crate::sessions::cluster::follow_topic;

/// Stanzas a session may route per [`BUDGET_WINDOW`] (IQs, chat states,
/// directed presence and presence changes to contacts); more are dropped,
/// so that one client cannot flood other sessions or, on a cluster, the
/// announcement stream. Stored messages have the pipeline's rate limit.
pub const ROUTE_BUDGET: u32 = 100;
pub const BUDGET_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// A session's routing budget (fixed window).
#[derive(Debug)]
pub struct RouteBudget {
    window_start: std::time::Instant,
    used: u32,
}

impl Default for RouteBudget {
    fn default() -> Self {
        RouteBudget {
            window_start: std::time::Instant::now(),
            used: 0,
        }
    }
}

impl RouteBudget {
    /// Whether one more stanza may be routed now.
    pub fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        if now.duration_since(self.window_start) >= BUDGET_WINDOW {
            self.window_start = now;
            self.used = 0;
        }
        if self.used >= ROUTE_BUDGET {
            return false;
        }
        self.used += 1;
        true
    }
}

/// The announcement topic of routed stanzas.
pub const ROUTE_TOPIC: &str = "xmpp.route";

/// Who a client stanza is addressed to, as this server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressee {
    /// The server itself, or the sender's own bare or full JID: answered
    /// by the server.
    Server,
    /// Another local account's bare JID: the server answers on its behalf
    /// (RFC 6120 §10.5.3.1) or, for messages, every available resource.
    Account { user: String },
    /// One resource of a local account (RFC 6120 §10.5.3.2).
    Resource { user: String, resource: String },
    /// A group (MUC room) `group@groups.<domain>[/nick]`.
    Room { group: String, nick: Option<String> },
    /// The groups service itself (`groups.<domain>`).
    RoomService,
    /// Another server, or a malformed address.
    Elsewhere,
}

/// Where `to` points for `user`'s session bound to `resource`.
pub fn addressee(
    to: Option<&str>,
    domain: &str,
    group_domain: &str,
    user: &str,
    resource: &str,
) -> Addressee {
    let Some(to) = to else {
        return Addressee::Server;
    };
    let Some(jid) = Jid::parse(to) else {
        return Addressee::Elsewhere;
    };
    if jid.domain == group_domain {
        return match jid.local {
            Some(group) => Addressee::Room {
                group,
                nick: jid.resource,
            },
            None => Addressee::RoomService,
        };
    }
    if jid.domain != domain {
        return Addressee::Elsewhere;
    }
    match (jid.local, jid.resource) {
        (None, _) => Addressee::Server,
        (Some(l), None) if l == user => Addressee::Server,
        (Some(l), None) => Addressee::Account { user: l },
        (Some(l), Some(r)) if l == user && r == resource => Addressee::Server,
        (Some(l), Some(r)) => Addressee::Resource {
            user: l,
            resource: r,
        },
    }
}

/// How far a routed stanza got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Queued for a session of this node (and, for a bare JID on a
    /// cluster, announced to the others too).
    Here,
    /// Not here; announced to the other nodes.
    Announced,
    /// No such resource here, and no other node to ask.
    Nowhere,
}

/// One routed stanza as announced.
#[derive(Debug, Serialize, Deserialize)]
struct RouteNotice {
    user: String,
    resource: Option<String>,
    xml: String,
    /// For an IQ request: the token the node that takes it announces
    /// back ([`route_acks`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ack: Option<String>,
}

/// Route `stanza` (its `from` already stamped) to `user`'s `resource`, or
/// to every available resource of `user`.
pub async fn route(
    store: &dyn Store,
    ctx: &XmppContext,
    user: &str,
    resource: Option<&str>,
    stanza: Element,
) -> Routed {
    route_acked(store, ctx, user, resource, stanza, None).await
}

/// Route the IQ request `stamped` (its `from` already stamped; `request`
/// as the client sent it) to `user`'s `resource`. When it is not on this
/// node and other nodes may have it, it is announced with a token, and
/// unless a node takes it within [`route_acks::ACK_WAIT`] the sender
/// (`sender`'s `sender_resource`) gets `<service-unavailable/>`; then
/// the result is [`Routed::Announced`] and the answer is on its way.
/// [`Routed::Nowhere`]: not on this node, no other node to ask.
pub async fn route_request(
    store: &dyn Store,
    ctx: &Arc<XmppContext>,
    (user, resource): (&str, &str),
    request: &Element,
    stamped: Element,
    (sender, sender_resource): (&str, &str),
) -> Routed {
    if deliver_here(ctx, user, Some(resource), &stamped) {
        return Routed::Here;
    }
    if !ctx.clustered {
        return Routed::Nowhere;
    }
    let Some((token, ack)) = route_acks::expect(ctx) else {
        return route_acked(store, ctx, user, Some(resource), stamped, None).await;
    };
    route_acks::answer_if_unclaimed(
        ctx.clone(),
        token.clone(),
        ack,
        request,
        sender,
        sender_resource,
    );
    route_acked(store, ctx, user, Some(resource), stamped, Some(token)).await
}

async fn route_acked(
    store: &dyn Store,
    ctx: &XmppContext,
    user: &str,
    resource: Option<&str>,
    stanza: Element,
    ack: Option<String>,
) -> Routed {
    if is_probe(&stanza) {
        Box::pin(answer_probe(store, ctx, user, &stanza)).await;
    }
    let here = !is_probe(&stanza) && deliver_here(ctx, user, resource, &stanza);
    // A full JID found here is done; a bare one may have resources on
    // other nodes too.
    if (here && resource.is_some()) || !ctx.clustered {
        return if here { Routed::Here } else { Routed::Nowhere };
    }
    let notice = RouteNotice {
        user: user.to_string(),
        resource: resource.map(str::to_string),
        xml: stanza.to_xml(),
        ack,
    };
    match serde_json::to_string(&notice) {
        Ok(payload) => {
            if let Err(e) = store.announce(ROUTE_TOPIC.to_string(), payload).await {
                tracing::debug!(error = %e, "xmpp: a routed stanza was not announced");
            }
        }
        Err(e) => tracing::warn!(error = %e, "xmpp: routed stanza not encodable"),
    }
    if here {
        Routed::Here
    } else {
        Routed::Announced
    }
}

fn is_probe(el: &Element) -> bool {
    el.name == "presence" && el.get_attr("type") == Some("probe")
}

/// A presence probe (RFC 6121 §4.3) for `user`, answered by the server
/// for the user's available resources on this node: their presence goes
/// to the prober's full JID.
async fn answer_probe(store: &dyn Store, ctx: &XmppContext, user: &str, probe: &Element) {
    let Some(prober) = probe.get_attr("from").and_then(Jid::parse) else {
        return;
    };
    let (Some(local), Some(resource)) = (prober.local.as_deref(), prober.resource.as_deref())
    else {
        return;
    };
    for mine in ctx.router.available_of(user) {
        let p = Element::new("presence", imgate_codecs::xmpp::ns::CLIENT)
            .attr("from", format!("{user}@{}/{mine}", ctx.normalizer.domain()))
            .attr("to", prober.to_string());
        route(store, ctx, local, Some(resource), p).await;
    }
}

fn deliver_here(ctx: &XmppContext, user: &str, resource: Option<&str>, stanza: &Element) -> bool {
    match resource {
        Some(r) => ctx.router.send_to_resource(user, r, stanza.clone()),
        None => ctx.router.send_to_available(user, |_| stanza.clone()) > 0,
    }
}

/// Deliver the other nodes' routed stanzas to this node's sessions until
/// the store closes.
pub async fn follow(store: Arc<dyn Store>, ctx: Arc<XmppContext>) {
    let watched = store.clone();
    follow_topic(watched, ROUTE_TOPIC, |n: RouteNotice, local| {
        if local {
            return;
        }
        match parse_stanza(&n.xml, &Scope::client_stream("stream"), DEFAULT_MAX_DEPTH) {
            Ok(el) if is_probe(&el) => {
                // Answered with this node's resources (announced back).
                let (store, ctx, user) = (store.clone(), ctx.clone(), n.user.clone());
                tokio::spawn(async move { answer_probe(store.as_ref(), &ctx, &user, &el).await });
            }
            Ok(el) => {
                let taken = deliver_here(&ctx, &n.user, n.resource.as_deref(), &el);
                if let (true, Some(token)) = (taken, n.ack) {
                    route_acks::announce(store.clone(), token);
                }
            }
            Err(e) => tracing::warn!(error = %e, "xmpp: undecodable routed stanza"),
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(to: Option<&str>) -> Addressee {
        addressee(to, "localhost", "groups.localhost", "alice", "pc")
    }

    #[test]
    fn the_budget_refuses_past_its_limit() {
        let mut b = RouteBudget::default();
        for _ in 0..ROUTE_BUDGET {
            assert!(b.take());
        }
        assert!(!b.take());
        b.window_start -= BUDGET_WINDOW;
        assert!(b.take(), "a new window");
    }

    #[test]
    fn addressees() {
        assert_eq!(of(None), Addressee::Server);
        assert_eq!(of(Some("localhost")), Addressee::Server);
        assert_eq!(of(Some("alice@localhost")), Addressee::Server);
        assert_eq!(of(Some("alice@localhost/pc")), Addressee::Server);
        assert_eq!(
            of(Some("alice@localhost/phone")),
            Addressee::Resource {
                user: "alice".into(),
                resource: "phone".into()
            }
        );
        assert_eq!(
            of(Some("bob@localhost")),
            Addressee::Account { user: "bob".into() }
        );
        assert_eq!(
            of(Some("g1@groups.localhost/bob")),
            Addressee::Room {
                group: "g1".into(),
                nick: Some("bob".into())
            }
        );
        assert_eq!(of(Some("groups.localhost")), Addressee::RoomService);
        assert_eq!(of(Some("bob@example.org")), Addressee::Elsewhere);
        assert_eq!(of(Some("@")), Addressee::Elsewhere);
    }
}
