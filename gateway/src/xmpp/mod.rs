//! The XMPP-lite listener (DESIGN §5.4): one session task per TCP
//! connection, framed by `imgate_codecs::xmpp::XmppFramer`.
//!
//! Layout:
//! - [`protocol`]: the state machine the session driver runs
//!   (`sessions::driver`): frames in, steps and XML out; [`reader`]: the
//!   framer it reads with; [`outbox`]: the XML it writes.
//! - [`login`]: stream header, STARTTLS, SASL (PLAIN with the user id +
//!   token, SCRAM), resource binding (the token's device) or XEP-0198
//!   resumption.
//! - [`session`]: the bound session's state and handlers, XEP-0198
//!   counting.
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
//! required before SASL (see [`login`]); without them TLS is not
//! offered (run XMPP behind a TLS-terminating proxy or on a trusted
//! network).

mod blocking;
mod chat_markers;
mod errors;
mod inbound;
mod iq;
mod login;
mod mam;
mod muc;
mod muc_admin;
mod muc_occupants;
mod outbox;
mod pep;
mod private_storage;
mod protocol;
#[cfg(test)]
mod protocol_tests;
mod reader;
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

use crate::sessions::{driver, SessionCtx};
use outbox::XmppEncoder;
use protocol::Xmpp;
use reader::XmppReader;
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

impl XmppContext {
    /// The shared state, without the tasks that follow the store.
    fn new(state: &SessionCtx) -> Arc<XmppContext> {
        // Other nodes exist only on a shared store: only then are there
        // remote cursor moves to follow and SM states to tell.
        let clustered = state.config.store != "embedded";
        Arc::new(XmppContext {
            normalizer: XmppNormalizer::new(&state.config.xmpp_domain),
            router: XmppRouter::default(),
            sm: SmRegistry::new(clustered),
            receipts: receipts::PendingReceipts::default(),
            clustered,
            acks: route_acks::PendingAcks::default(),
            occupants: muc_occupants::Occupants::default(),
        })
    }
}

/// The per-connection handler of every listener that carries XMPP
/// (`xmpp`, `xmpps`, `/xmpp-websocket` on `ws`/`wss`), sharing one
/// [`XmppContext`] between all their sessions (routing, stream
/// management and receipts see every one).
pub fn connection_handler(state: &SessionCtx) -> crate::sessions::listener::Handler {
    let ctx = XmppContext::new(state);
    let clustered = ctx.clustered;
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

/// An XMPP connection on the session driver (not an `async fn`: see
/// `driver::run`).
fn handle_connection(
    stream: ClientStream,
    peer: SocketAddr,
    state: SessionCtx,
    ctx: Arc<XmppContext>,
) -> impl std::future::Future<Output = ()> + Send {
    let websocket = stream.websocket().is_some();
    // Plain TCP only: a direct-TLS connection (`xmpps`, XEP-0368) is
    // encrypted already, and a WebSocket has no STARTTLS (`wss` is its TLS).
    let starttls = state.tls.is_some() && matches!(stream, ClientStream::Plain(_));
    let reader = XmppReader::new(
        websocket,
        DEFAULT_MAX_STANZA,
        DEFAULT_MAX_DEPTH,
        state.config.xmpp_preauth_max_stanza,
    );
    let proto = Xmpp::new(state.clone(), ctx, websocket, starttls);
    driver::run(stream, peer, state, proto, reader, XmppEncoder)
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
