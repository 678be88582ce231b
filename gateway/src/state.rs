//! What every listener and session shares: config, store, the pipeline,
//! the token issuer, the admin secret, metrics, and the shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use imgate_core::pipeline::{SendAck, SendCommand, SendService};
use imgate_core::store::StoreResult;
use imgate_core::{ImError, Store};
use tokio::sync::{broadcast, watch};
use tower::ServiceExt;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::PolicyState;
use crate::sessions::{ConnLimiter, SessionRegistry};
use crate::token::TokenIssuer;
use imgate_adapters::HttpReviewHook;

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

/// What [`AppState`] points to.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub pipeline: SendService,
    pub tokens: TokenIssuer,
    pub admin_secret: Arc<str>,
    /// Admin signatures seen within the window (replays refused).
    pub admin_nonces: crate::admin_nonces::NonceCache,
    pub metrics: Arc<Metrics>,
    /// Online sessions of this node (login kick rule).
    pub sessions: Arc<SessionRegistry>,
    /// Connection admission shared by every listener.
    pub conn_limiter: Arc<ConnLimiter>,
    /// Word list, user statuses, rate overrides, hit log.
    pub policy: Arc<PolicyState>,
    /// The topic ACL of generic MQTT topics (the admin API replaces it).
    pub mqtt_acl: Arc<crate::mqtt::acl::TopicAcl>,
    /// Device secrets and per-user token revocations.
    pub credentials: Arc<crate::device_secrets::DeviceCredentials>,
    /// The review hook, if configured (its counters are exported).
    pub review: Option<Arc<HttpReviewHook>>,
    /// The event webhooks, if configured (`crate::webhooks`).
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// False once shutdown began: `/readyz` answers 503.
    pub ready: std::sync::atomic::AtomicBool,
    /// TLS for the client listeners, if a certificate is configured.
    pub tls: Option<crate::transport::TlsAcceptor>,
    /// Turns true when the gateway starts draining.
    pub shutdown: watch::Receiver<bool>,
    /// Delivery acks of this node's devices, in any protocol (XMPP turns
    /// them into XEP-0184 receipts for the sender).
    pub delivery_acks: broadcast::Sender<DeliveryAck>,
}

/// A device acked a delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAck {
    pub user: String,
    pub device: String,
    pub message_id: u64,
}

impl AppState {
    /// The time a new connection has for its PROXY header, TLS handshake,
    /// WebSocket upgrade and login.
    pub fn login_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.config.login_timeout_secs.max(1))
    }

    /// Run one send through the pipeline and count it.
    pub async fn send(&self, cmd: SendCommand) -> Result<SendAck, ImError> {
        self.send_owned(cmd).await
    }

    /// [`Self::send`] as a future that owns what it needs, for a session's
    /// window of sends in flight ([`crate::sessions::SendWindow`]).
    pub fn send_owned(
        &self,
        cmd: SendCommand,
    ) -> impl Future<Output = Result<SendAck, ImError>> + Send + 'static {
        let pipeline = self.pipeline.clone();
        let metrics = self.metrics.clone();
        async move {
            let protocol = cmd.principal.protocol;
            let started = Instant::now();
            let result = pipeline.oneshot(cmd).await;
            match &result {
                Ok(ack) if !ack.duplicate => metrics.message_in(protocol, started.elapsed()),
                Ok(_) => {}
                Err(e) => metrics.rejection(e.code),
            }
            result
        }
    }

    /// A device acked a delivery: record it in the store, then tell the
    /// listeners of [`Self::delivery_acks`].
    pub async fn ack_delivery(&self, user: &str, device: &str, message_id: u64) -> StoreResult<()> {
        self.store.ack(user, device, message_id).await?;
        if let Some(hooks) = &self.webhooks {
            let protocol = self.sessions.protocol_of(user, device);
            hooks.delivered(user, device, protocol, message_id);
        }
        let _ = self.delivery_acks.send(DeliveryAck {
            user: user.to_string(),
            device: device.to_string(),
            message_id,
        });
        Ok(())
    }

    /// A client's own claim that it received `message_id` (a PB
    /// DeliverAck, an XMPP `<received id>`: ids the client chose, unlike
    /// an MQTT PUBACK or an XMPP `<a h>`, which the session maps to what it
    /// delivered). Honoured only if `user` is one of the message's
    /// recipients ([`Store::get_for`]); otherwise nothing is acked and no
    /// receipt goes to the sender: false, and the caller refuses it with
    /// code 253 (the same for an unknown id and someone else's message,
    /// so that the answer does not tell which ids exist).
    pub async fn ack_claimed(
        &self,
        user: &str,
        device: &str,
        message_id: u64,
    ) -> StoreResult<bool> {
        if self.store.get_for(message_id, user).await?.is_none() {
            return Ok(false);
        }
        self.ack_delivery(user, device, message_id).await?;
        Ok(true)
    }

    /// Resolves when the gateway starts shutting down.
    pub async fn draining(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|v| *v).await;
    }
}
