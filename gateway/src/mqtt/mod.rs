//! MQTT 3.1.1 and 5 sessions (DESIGN §5.3): the IM topic namespace on top
//! of a generic broker for IoT devices.
//!
//! - [`connect`]: the checks and refusals of CONNECT (first packet only).
//! - [`session`]: one connection's state machine on the session driver
//!   (`sessions::driver`): CONNECT/CONNACK, broker queue, IM
//!   deliveries, kick, drain, keepalive ×1.5.
//! - [`inbound`]: PUBLISH / SUBSCRIBE / acks from the client.
//! - [`im`]: `im/send` through the pipeline, `im/inbox/<user>` deliveries
//!   from the store, `im/ack/<clientId>` results.
//! - [`acl`]: who may publish or subscribe what; the topic ACL of generic
//!   topics, whose mosquitto `acl_file` format is parsed in [`acl_file`].
//! - [`broker`]: sessions, subscription trie, retained messages, queues,
//!   wills; durable in `<data_dir>/mqtt.redb`.

pub mod acl;
pub mod acl_file;
mod broker;
mod connect;
mod im;
mod inbound;
mod session;

use std::sync::Arc;
use std::time::Duration;

pub use broker::{cluster, Broker};

use crate::sessions::listener::Handler;
use crate::sessions::SessionCtx;

/// How often delayed wills and session expiry are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// The MQTT connection handler of every listener that carries MQTT
/// (`mqtt`, `mqtts`, `/mqtt` on `ws`/`wss`), and the broker's sweeper
/// (delayed wills, session expiry), which runs until the gateway drains.
pub fn start(state: &SessionCtx, broker: Arc<Broker>) -> Handler {
    let sweeper = broker.clone();
    let st = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => sweeper.sweep(),
                _ = st.draining() => return,
            }
        }
    });
    Arc::new(move |stream, peer, state| {
        Box::pin(session::handle_connection(
            stream,
            peer,
            state,
            broker.clone(),
        ))
    })
}
