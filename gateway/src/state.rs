//! The gateway's state: the sessions' context (`sessions::SessionCtx`:
//! config, store, pipeline, tokens, metrics, registry, shutdown, ...) and
//! what only the HTTP and admin side holds (the admin secret and its
//! nonces, the topic ACL, the review hook, readiness).

use std::sync::Arc;

use imgate_adapters::HttpReviewHook;

use crate::sessions::SessionCtx;

/// A handle on the shared state: one pointer, so the many places that
/// keep one (every session, often twice) cost 8 bytes each and a clone is
/// one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to: the sessions' context and what only the
/// HTTP and admin side uses. Field access and methods of the context
/// (`state.store`, `state.send(..)`) reach it through `Deref`.
pub struct Shared {
    /// What client sessions get (`sessions::SessionCtx`).
    pub ctx: SessionCtx,
    pub admin_secret: Arc<str>,
    /// Admin signatures seen within the window (replays refused).
    pub admin_nonces: crate::admin_nonces::NonceCache,
    /// The topic ACL of generic MQTT topics (the admin API replaces it).
    pub mqtt_acl: Arc<crate::mqtt::acl::TopicAcl>,
    /// The review hook, if configured (its counters are exported).
    pub review: Option<Arc<HttpReviewHook>>,
    /// False once shutdown began: `/readyz` answers 503.
    pub ready: std::sync::atomic::AtomicBool,
}

impl std::ops::Deref for Shared {
    type Target = SessionCtx;
    fn deref(&self) -> &SessionCtx {
        &self.ctx
    }
}
