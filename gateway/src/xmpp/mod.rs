//! The XMPP-lite listener (DESIGN §5.4): one session task per TCP
//! connection, framed by `imgate_codecs::xmpp::XmppFramer`.
//!
//! Layout:
//! - [`connection`]: socket + buffer + framer; events in, XML out.
//! - [`negotiation`]: stream header, SASL PLAIN (user id + token),
//!   resource binding (the token's device) or XEP-0198 resumption.
//! - [`session`]: the bound session's loop (deliveries, kick, draining,
//!   idle pings) and XEP-0198 counting.
//! - [`inbound`]: client messages (pipeline, receipts) and presence.
//! - [`iq`]: ping, disco, roster, session; [`mam`]: XEP-0313 archive.
//! - [`stream_management`]: resumable XEP-0198 state; [`sm_cluster`]:
//!   resumption on another node.
//! - [`router`]: node-local routing of presence and receipts;
//!   [`receipts`]: receipts from acks on any node; [`routing`]: IQs and
//!   body-less messages to full and bare JIDs, on any node;
//!   [`route_acks`]: `<service-unavailable/>` for IQs no node took.
//! - [`references`]: reactions, corrections and retractions (the messages
//!   they name); [`chat_markers`]: XEP-0333 markers as delivery/read;
//!   [`blocking`]: XEP-0191 block lists in the policy.
//! - [`muc`]: groups as rooms; [`muc_occupants`]: who joined, on every
//!   node; [`muc_admin`]: the owner's configuration, affiliations, kicks.
//! - [`vcard`]: XEP-0054 vCards; [`private_storage`]: XEP-0049;
//!   [`pep`]: XEP-0163 PEP nodes; all kept per user by [`user_data`].
//! - [`errors`]: DESIGN §4 codes as XMPP stanza errors.
//! - [`scram`]: SASL SCRAM-SHA-1/-256 with device secrets.
//!
//! TLS: with `tls_cert`/`tls_key` configured, STARTTLS is offered and
//! required before SASL (see [`negotiation`]); without them TLS is not
//! offered (run XMPP behind a TLS-terminating proxy or on a trusted
//! network).

mod blocking;
mod chat_markers;
mod connection;
mod errors;
mod inbound;
mod iq;
mod mam;
mod muc;
mod muc_admin;
mod muc_occupants;
mod negotiation;
mod pep;
mod private_storage;
mod receipts;
mod references;
mod roster;
mod route_acks;
mod router;
mod routing;
pub(crate) mod scram;
mod session;
mod sm_cluster;
mod stream_management;
mod user_data;
mod vcard;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::transport::ClientStream;
use imgate_codecs::xmpp::{XmppNormalizer, DEFAULT_MAX_DEPTH, DEFAULT_MAX_STANZA};

use crate::sessions::SessionCtx;
use connection::XmppConnection;
use router::XmppRouter;
use stream_management::SmRegistry;

/// What the XMPP sessions of this node share beyond [`SessionCtx`].
pub struct XmppContext {
    pub normalizer: XmppNormalizer,
    pub router: XmppRouter,
    pub sm: SmRegistry,
    /// This node's XMPP senders' private messages awaiting a receipt.
    pub receipts: receipts::PendingReceipts,
    /// Whether other nodes share the store (routed stanzas are announced).
    pub clustered: bool,
    /// Every room's occupants, as this node knows them.
    pub occupants: muc_occupants::Occupants,
    /// This node's IQ requests routed to other nodes, awaiting an ack.
    pub acks: route_acks::PendingAcks,
}

/// The per-connection handler of every listener that carries XMPP
/// (`xmpp`, `xmpps`, `/xmpp-websocket` on `ws`/`wss`), sharing one
/// [`XmppContext`] between all their sessions (routing, stream
/// management and receipts see every one).
pub fn connection_handler(state: &SessionCtx) -> crate::sessions::listener::Handler {
    // Other nodes exist only on a shared store: only then are there
    // remote cursor moves to follow and SM states to tell.
    let clustered = state.config.store != "embedded";
    let ctx = Arc::new(XmppContext {
        normalizer: XmppNormalizer::new(&state.config.xmpp_domain),
        router: XmppRouter::default(),
        sm: SmRegistry::new(clustered),
        receipts: receipts::PendingReceipts::default(),
        clustered,
        acks: route_acks::PendingAcks::default(),
        occupants: muc_occupants::Occupants::default(),
    });
    tokio::spawn(receipts::follow_acks(state.clone(), ctx.clone()));
    tokio::spawn(muc::follow_group_changes(state.store.clone(), ctx.clone()));
    if clustered {
        let cursors = state.store.watch_cursors();
        tokio::spawn(receipts::follow_cursors(cursors, ctx.clone()));
        tokio::spawn(sm_cluster::follow(state.store.clone(), ctx.clone()));
        tokio::spawn(routing::follow(state.store.clone(), ctx.clone()));
        tokio::spawn(route_acks::follow(state.store.clone(), ctx.clone()));
        tokio::spawn(muc_occupants::follow(state.store.clone(), ctx.clone()));
        tokio::spawn(ctx.sm.cluster().clone().flush(state.store.clone()));
    }
    Arc::new(move |stream, peer, state| {
        Box::pin(handle_connection(stream, peer, state, ctx.clone()))
    })
}

async fn handle_connection(
    stream: ClientStream,
    peer: SocketAddr,
    state: SessionCtx,
    ctx: Arc<XmppContext>,
) {
    // Boxed: negotiation's state is not kept for the session's life (an
    // idle connection's memory is mostly its task's state).
    let Some(live) = Box::pin(open(stream, peer, state, ctx)).await else {
        return;
    };
    session::run(live).await;
}

/// Negotiate (within the login timeout) and build the bound session.
async fn open(
    stream: ClientStream,
    peer: SocketAddr,
    state: SessionCtx,
    ctx: Arc<XmppContext>,
) -> Option<Box<session::Live>> {
    let mut conn = XmppConnection::new(stream, DEFAULT_MAX_STANZA, DEFAULT_MAX_DEPTH)
        .with_preauth_limit(state.config.xmpp_preauth_max_stanza);
    let limit = state.login_timeout();
    let negotiated = match tokio::time::timeout(
        limit,
        Box::pin(negotiation::negotiate(&mut conn, &state, &ctx)),
    )
    .await
    {
        Ok(Ok(n)) => n,
        Ok(Err(negotiation::Refused)) => return None,
        Err(_) => {
            let domain = ctx.normalizer.domain().to_string();
            Box::pin(conn.stream_error(&domain, "connection-timeout", "249 log in faster")).await;
            return None;
        }
    };
    tracing::debug!(%peer, user = %negotiated.principal.user_id, device = %negotiated.principal.device_id, tls = conn.is_tls(), "xmpp login");
    session::start(conn, state, ctx, negotiated).await
}

/// A random identifier (stream ids, stream-management ids).
pub fn random_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No OS randomness: ids need only be unique, not secret, for
        // stream ids; SM ids are checked against the authenticated user.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes[..12].copy_from_slice(&nanos.to_le_bytes()[..12]);
    }
    hex::encode(bytes)
}
