//! [`SessionCtx`]: what a client session may use, built once from the
//! gateway's state (`state::AppState` holds it and adds what only the
//! HTTP and admin side needs: the admin secret, its nonce cache, the
//! review hook's counters, readiness). Listeners, the session driver and
//! every protocol get this, never the whole state.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgate_core::pipeline::{SendAck, SendCommand, SendService};
use imgate_core::store::StoreResult;
use imgate_core::{ImError, Store};
use tokio::sync::{broadcast, watch};
use tower::ServiceExt;

use super::{ConnLimiter, SessionRegistry};
use crate::config::Config;
use crate::device_secrets::DeviceCredentials;
use crate::metrics::Metrics;
use crate::policy::PolicyState;
use crate::token::TokenIssuer;
use crate::transport::TlsAcceptor;
use crate::webhooks::{ReadEvent, Webhooks};

/// A handle on the session context: one pointer, so every session (which
/// keeps one, often twice) pays 8 bytes and a clone is a reference count.
#[derive(Clone)]
pub struct SessionCtx(Arc<SessionShared>);

impl SessionCtx {
    pub fn new(shared: SessionShared) -> Self {
        SessionCtx(Arc::new(shared))
    }
}

impl std::ops::Deref for SessionCtx {
    type Target = SessionShared;
    fn deref(&self) -> &SessionShared {
        &self.0
    }
}

/// What [`SessionCtx`] points to.
pub struct SessionShared {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub pipeline: SendService,
    /// Verifies login tokens (and issues them for the HTTP login).
    pub tokens: TokenIssuer,
    pub metrics: Arc<Metrics>,
    /// Online sessions of this node (login kick rule).
    pub sessions: Arc<SessionRegistry>,
    /// Connection admission shared by every listener.
    pub conn_limiter: Arc<ConnLimiter>,
    /// Word list, user statuses, rate overrides, hit log.
    pub policy: Arc<PolicyState>,
    /// Device secrets and per-user token revocations.
    pub credentials: Arc<DeviceCredentials>,
    /// The event webhooks, if configured (`crate::webhooks`).
    pub webhooks: Option<Arc<Webhooks>>,
    /// TLS for the client listeners (and STARTTLS), if configured.
    pub tls: Option<TlsAcceptor>,
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

impl SessionShared {
    /// The time a new connection has for its PROXY header, TLS handshake,
    /// WebSocket upgrade and login.
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.config.login_timeout_secs.max(1))
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

    /// A user read a conversation (recorded by `conversations::read_by`):
    /// sends the `read` webhook event.
    pub fn conversation_read(&self, event: &ReadEvent) {
        if let Some(hooks) = &self.webhooks {
            hooks.read(event);
        }
    }

    /// Resolves when the gateway starts shutting down.
    pub async fn draining(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// A session context on an embedded store in `config.data_dir`, as the
/// gateway builds it (no TLS, no webhooks, no review hook): for state
/// machine tests that run handlers against a real store.
#[cfg(test)]
pub async fn for_tests(config: Config, admin_secret: &str) -> (SessionCtx, watch::Sender<bool>) {
    use imgate_adapters::{EmbeddedConfig, EmbeddedStore};
    use imgate_core::pipeline::{build_pipeline, PolicyParts};
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(EmbeddedConfig::new(&config.data_dir)).expect("embedded store"),
    );
    let policy = Arc::new(
        PolicyState::load(store.as_ref(), &config.data_dir)
            .await
            .expect("policy"),
    );
    let credentials = Arc::new(
        DeviceCredentials::load(store.as_ref(), config.device_secret_limits())
            .await
            .expect("device secrets"),
    );
    let parts = PolicyParts {
        policy: policy.book.clone(),
        words: policy.words.clone(),
        word_strategies: config.word_strategies().expect("word strategies"),
        hits: policy.hits.clone(),
        review: None,
    };
    let metrics = Arc::new(Metrics::default());
    let ordered: Arc<dyn Store> = Arc::new(super::OrderedAppends::new(store.clone()));
    let pipeline = build_pipeline(&config.pipeline(), ordered, &parts);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let ctx = SessionCtx::new(SessionShared {
        tokens: TokenIssuer::new(admin_secret, config.token_ttl_secs),
        sessions: Arc::new(SessionRegistry::new(config.multi_endpoint)),
        conn_limiter: Arc::new(ConnLimiter::new(100, 100, 100)),
        config: Arc::new(config),
        store,
        pipeline,
        metrics,
        policy,
        credentials,
        webhooks: None,
        tls: None,
        shutdown,
        delivery_acks: broadcast::channel(16).0,
    });
    (ctx, shutdown_tx)
}
