//! `imgate serve`: open the store, build the pipeline, bind every listener
//! of the listener table (`crate::listeners`), print `listening <name>
//! <addr>` lines and `ready`, run until SIGINT or SIGTERM, then drain
//! (DESIGN §5, §5.6, §8).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use imgate_adapters::HttpReviewHook;
use imgate_adapters::{EmbeddedConfig, EmbeddedStore};
use imgate_core::pipeline::{build_pipeline, PolicyParts, ReviewHook};
use imgate_core::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::http::{admin_router, client_router};
use crate::listeners::{ListenerSpec, Service, LISTENERS};
use crate::metrics::Metrics;
use crate::mqtt;
use crate::pb;
use crate::policy::PolicyState;
use crate::secrets;
use crate::sessions::ctx::{SessionCtx, SessionShared};
use crate::sessions::listener::Handler;
use crate::sessions::{run_listener, ConnLimiter, OrderedAppends, SessionRegistry};
use crate::state::{AppState, Shared};
use crate::token::TokenIssuer;
use crate::xmpp;

/// The store, and the RabbitMQ store again when it is one (its MQTT
/// cluster bus is started once the MQTT broker exists).
async fn open_store(
    config: &Config,
) -> anyhow::Result<(Arc<dyn Store>, Option<imgate_adapters::RabbitStore>)> {
    if config.store == "embedded" || config.store.is_empty() {
        let mut ec = EmbeddedConfig::new(&config.data_dir);
        ec.node_id = config.node_id;
        ec.max_batch = config.embedded_max_batch;
        ec.cache_bytes = config.store_cache_mb.max(1) << 20;
        ec.dedupe_capacity = config.dedupe_capacity.max(1);
        ec.device_window = config.device_window.max(1);
        ec.dedupe_window = Duration::from_secs(config.dedupe_window_secs);
        let store = EmbeddedStore::open(ec).context("opening the embedded store")?;
        return Ok((Arc::new(store), None));
    }
    if config.store.starts_with("amqp://") || config.store.starts_with("amqps://") {
        // Store knobs (name prefix, retention, ...) are query
        // parameters of the URL: see imgate_adapters::rabbit::config.
        let mut rc = imgate_adapters::RabbitConfig::from_url(
            &config.store,
            &config.data_dir,
            config.node_id,
        )
        .context("RabbitMQ store settings")?;
        rc.dedupe_window = Duration::from_secs(config.dedupe_window_secs);
        let store = imgate_adapters::RabbitStore::open(rc)
            .await
            .context("opening the RabbitMQ store")?;
        return Ok((Arc::new(store.clone()), Some(store)));
    }
    bail!(
        "unknown store {:?}: use \"embedded\" or an amqp:// URL",
        config.store
    )
}

/// Bind every enabled row of the listener table, in its order.
async fn bind_all(
    config: &Config,
    have_cert: bool,
) -> anyhow::Result<Vec<(&'static ListenerSpec, TcpListener)>> {
    let mut bound = Vec::new();
    for spec in LISTENERS.iter().filter(|l| l.enabled(config, have_cert)) {
        let addr = (spec.addr)(config).trim();
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen for {} on {addr} (set IMGATE_{}_ADDR; empty disables it)",
                spec.name,
                spec.name.to_uppercase()
            )
        })?;
        bound.push((spec, listener));
    }
    Ok(bound)
}

/// The handler of each service (one per protocol, shared by every
/// listener and transport that carries it).
struct Handlers {
    pb: Handler,
    mqtt: Handler,
    xmpp: Handler,
    http: Handler,
    admin: Handler,
}

impl Handlers {
    fn of(&self, service: Service) -> Handler {
        match service {
            Service::Pb => self.pb.clone(),
            Service::Mqtt => self.mqtt.clone(),
            Service::Xmpp => self.xmpp.clone(),
            Service::Http => self.http.clone(),
            Service::Admin => self.admin.clone(),
            Service::WebSocket => self.websocket(),
        }
    }

    /// The WebSocket listener: the upgrade picks the protocol by path, then
    /// that protocol's handler runs on the WebSocket stream.
    fn websocket(&self) -> Handler {
        let (pb, mqtt, xmpp) = (self.pb.clone(), self.mqtt.clone(), self.xmpp.clone());
        Arc::new(move |stream, peer, state: SessionCtx| {
            let (pb, mqtt, xmpp) = (pb.clone(), mqtt.clone(), xmpp.clone());
            Box::pin(async move {
                let limit = state.login_timeout();
                let upgraded = crate::transport::websocket::accept(stream, &state.config, limit);
                let Some((service, stream)) = Box::pin(upgraded).await else {
                    tracing::debug!(%peer, "websocket upgrade refused");
                    return;
                };
                let handler = match service {
                    Service::Pb => pb,
                    Service::Mqtt => mqtt,
                    _ => xmpp,
                };
                let _conn = service.protocol().map(|p| state.metrics.connection(p));
                handler(stream, peer, state).await
            })
        })
    }
}

fn http_handler(router: axum::Router, state: AppState) -> Handler {
    Arc::new(move |stream, peer, _ctx| {
        Box::pin(crate::http::serve::serve_connection(
            stream,
            peer,
            router.clone(),
            state.clone(),
        ))
    })
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Before anything can print `ready`.
    let mut signals = Signals::register();
    crate::transport::write_deadline::set_limit(Duration::from_secs(
        config.write_timeout_secs.max(1),
    ));
    // Certificate problems stop the start before anything else happens.
    let tls = crate::transport::tls::acceptor(&config)?;
    // Ports next: a port that is taken stops the start before anything is
    // written (the admin secret of a first start is generated, and
    // printed, only by the start that succeeds).
    let listeners = bind_all(&config, tls.is_some()).await?;
    let (secret, generated) = secrets::admin_secret(&config.admin_secret, &config.data_dir)?;
    let (store, rabbit) = open_store(&config).await?;
    let policy = Arc::new(PolicyState::load(store.as_ref(), &config.data_dir).await?);
    // A bad ACL file stops the start here, with its line.
    let mqtt_acl =
        Arc::new(mqtt::acl::TopicAcl::load(&config.mqtt_acl_file, store.as_ref()).await?);
    let credentials = Arc::new(
        crate::device_secrets::DeviceCredentials::load(
            store.as_ref(),
            config.device_secret_limits(),
        )
        .await?,
    );
    let review = match config.review_config()? {
        Some(rc) => {
            let signer = imgate_adapters::review_hook::HookSigner::new(&config.hook_secret);
            if signer.is_none() {
                tracing::warn!(
                    "hook_secret is not set: review-hook requests are unsigned \
                     (the review service cannot tell them from forged ones)"
                );
            }
            let hook = HttpReviewHook::start(&config.review_url, config.review_queue, signer)
                .map_err(anyhow::Error::msg)?;
            Some((hook, rc))
        }
        None => None,
    };
    let parts = PolicyParts {
        policy: policy.book.clone(),
        words: policy.words.clone(),
        word_strategies: config.word_strategies()?,
        hits: policy.hits.clone(),
        review: review.clone().map(|(h, rc)| (h as Arc<dyn ReviewHook>, rc)),
    };
    // Sessions pipeline their sends; the pipeline's appends keep each
    // session's order (see sessions::append_order). Both stores fix an
    // append's place when it is queued (`Store::append_queued`).
    let metrics = Arc::new(Metrics::default());
    let ordered: Arc<dyn Store> =
        Arc::new(OrderedAppends::new(store.clone()).with_metrics(metrics.clone()));
    let pipeline = build_pipeline(&config.pipeline(), ordered, &parts);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let webhooks = crate::webhooks::Webhooks::from_config(&config)?;
    let sessions = Arc::new(SessionRegistry::new(config.multi_endpoint));
    if let Some(w) = &webhooks {
        sessions.set_webhooks(w.clone());
    }
    let ctx = SessionCtx::new(SessionShared {
        tokens: TokenIssuer::new(&secret, config.token_ttl_secs),
        config: Arc::new(config.clone()),
        store,
        pipeline,
        metrics,
        sessions,
        conn_limiter: Arc::new(
            ConnLimiter::new(
                config.conn_rate_per_ip,
                config.max_connections,
                config.max_connections_per_ip,
            )
            .with_proxy_protocol(
                &config.proxy_protocol_listeners()?,
                Duration::from_secs(config.login_timeout_secs.max(1)),
            ),
        ),
        policy,
        credentials,
        webhooks,
        tls,
        shutdown: shutdown_rx,
        delivery_acks: tokio::sync::broadcast::channel(1024).0,
    });
    let state = AppState::new(Shared {
        ctx,
        admin_secret: Arc::from(secret.as_str()),
        admin_nonces: crate::admin_nonces::NonceCache::new(
            config.admin_sign_window_secs as i64 * 1000,
            config.admin_nonce_capacity,
        ),
        mqtt_acl: mqtt_acl.clone(),
        review: review.map(|(h, _)| h),
        ready: std::sync::atomic::AtomicBool::new(true),
    });
    // Policy changes made on any node (admin API) apply here too.
    let sessions = state.sessions.clone();
    tokio::spawn(
        state
            .policy
            .clone()
            .follow(state.store.clone(), move |user| {
                crate::sessions::enforce::kick_forbidden(&sessions, user)
            }),
    );
    // Topic ACL changes made on any node (admin API) apply here too.
    tokio::spawn(mqtt_acl.clone().follow(state.store.clone()));
    // Device secrets issued or revoked on any node apply here too.
    let sessions = state.sessions.clone();
    tokio::spawn(
        state
            .credentials
            .clone()
            .follow(state.store.clone(), move |revoked| {
                crate::sessions::enforce::kick_revoked(&sessions, &revoked)
            }),
    );
    // The login kick rule across nodes.
    state.sessions.join_cluster(state.store.clone());
    // Expired messages and the retention (docs/messages.md).
    tokio::spawn(crate::pruning::run(
        state.store.clone(),
        crate::pruning::retention_ms(config.retention_days),
        Duration::from_secs(config.prune_interval_secs),
        state.shutdown.clone(),
    ));

    let mqtt_broker = mqtt::Broker::open(
        &config.data_dir,
        config.mqtt_max_queued,
        config.pipeline().rate,
    )?;
    mqtt_broker.configure(&config);
    mqtt_broker.set_acl(mqtt_acl);
    if let Some(rabbit) = &rabbit {
        // Generic MQTT topics across nodes; retained messages are caught
        // up before `ready`.
        let bus = rabbit
            .mqtt_bus(mqtt::cluster::sink(&mqtt_broker))
            .await
            .context("starting the MQTT cluster bus on RabbitMQ")?;
        mqtt_broker.set_bus(Arc::new(mqtt::cluster::RabbitBus(bus)));
        // Shared subscriptions: one copy per message across the nodes.
        mqtt::cluster::share_groups(&mqtt_broker, state.store.clone(), config.node_id);
    }
    for (spec, listener) in &listeners {
        println!("listening {} {}", spec.name, listener.local_addr()?);
    }
    if generated {
        println!("admin-secret {secret}");
        tracing::info!(
            path = %secrets::secret_path(&config.data_dir).display(),
            "generated the admin secret and stored it in the data directory"
        );
    }
    if state.tls.is_some() {
        tracing::info!(
            admin_https = state.config.admin_tls,
            "TLS listeners open next to the plain ones; STARTTLS required on plain xmpp"
        );
        if !state.config.admin_tls {
            tracing::warn!("admin_tls = false: the admin API is plain HTTP");
        }
    }
    println!("ready");
    tracing::info!(data_dir = %config.data_dir.display(), store = %config.store, "imgate is ready");

    let handlers = Handlers {
        pb: Arc::new(|stream, peer, state| Box::pin(pb::handle_connection(stream, peer, state))),
        mqtt: mqtt::start(&state, mqtt_broker),
        xmpp: xmpp::connection_handler(&state),
        http: http_handler(client_router(state.clone()), state.clone()),
        admin: http_handler(admin_router(state.clone()), state.clone()),
    };
    // Every listener runs the one accept loop (admission, PROXY header,
    // TLS, then its service's handler); the admin API has its own cap but
    // no per-IP limits, so it stays reachable under a flood from one
    // address.
    let mut servers: JoinSet<()> = JoinSet::new();
    for (spec, listener) in listeners {
        let tls = state.tls.clone().filter(|_| spec.tls(&state.config, true));
        servers.spawn(run_listener(
            spec,
            listener,
            state.ctx.clone(),
            tls,
            handlers.of(spec.service),
        ));
    }

    signals.next().await;
    state
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let delay = Duration::from_secs(state.config.shutdown_ready_delay_secs);
    if !delay.is_zero() {
        // Load balancers see /readyz fail and take the node out while
        // everything still serves (a second signal cuts it short).
        tracing::info!(
            secs = delay.as_secs(),
            "shutting down: not ready, still serving"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = signals.next() => {}
        }
    }
    tracing::info!("shutting down: draining sessions");
    let _ = shutdown_tx.send(true);
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT, listened to from the start (before `ready` is
/// printed): a signal that comes right after `ready` drains like any
/// other instead of killing the process with the default action.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.term) => {}
                _ = recv(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
