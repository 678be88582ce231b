//! `imgate serve`: open the store, build the pipeline, bind every listener,
//! print `listening <proto> <addr>` lines and `ready`, run until SIGINT or
//! SIGTERM, then drain (DESIGN §5, §8).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use imgate_adapters::HttpReviewHook;
use imgate_adapters::{EmbeddedConfig, EmbeddedStore};
use imgate_core::pipeline::{build_pipeline, PolicyParts, Protocol, ReviewHook};
use imgate_core::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::http::{admin_router, client_router};
use crate::metrics::Metrics;
use crate::mqtt;
use crate::pb;
use crate::policy::PolicyState;
use crate::secrets;
use crate::sessions::{
    run_listener, AdmittingListener, ConnLimiter, OrderedAppends, SessionRegistry,
};
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

async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen for {what} on {addr} (set IMGATE_{}_ADDR)",
            what.to_uppercase()
        )
    })
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    crate::sessions::write_deadline::set_limit(Duration::from_secs(
        config.write_timeout_secs.max(1),
    ));
    // Certificate problems stop the start before anything else happens.
    let tls = crate::tls::acceptor(&config)?;
    // Ports next: a port that is taken stops the start before anything is
    // written (the admin secret of a first start is generated, and
    // printed, only by the start that succeeds).
    let pb = bind("pb", &config.pb_addr).await?;
    let mqtt_listener = bind("mqtt", &config.mqtt_addr).await?;
    let xmpp_listener = bind("xmpp", &config.xmpp_addr).await?;
    let http = bind("http", &config.http_addr).await?;
    let admin = bind("admin", &config.admin_addr).await?;
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
    let state = AppState::new(Shared {
        tokens: TokenIssuer::new(&secret, config.token_ttl_secs),
        admin_secret: Arc::from(secret.as_str()),
        admin_nonces: crate::admin_nonces::NonceCache::new(
            config.admin_sign_window_secs as i64 * 1000,
            config.admin_nonce_capacity,
        ),
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
        mqtt_acl: mqtt_acl.clone(),
        credentials,
        review: review.map(|(h, _)| h),
        webhooks,
        ready: std::sync::atomic::AtomicBool::new(true),
        tls,
        shutdown: shutdown_rx,
        delivery_acks: tokio::sync::broadcast::channel(1024).0,
    });
    // Policy changes made on any node (admin API) apply here too.
    tokio::spawn(
        state
            .policy
            .clone()
            .follow(state.store.clone(), state.sessions.clone()),
    );
    // Topic ACL changes made on any node (admin API) apply here too.
    tokio::spawn(mqtt_acl.clone().follow(state.store.clone()));
    // Device secrets issued or revoked on any node apply here too.
    tokio::spawn(
        state
            .credentials
            .clone()
            .follow(state.store.clone(), state.sessions.clone()),
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
    println!("listening pb {}", pb.local_addr()?);
    println!("listening mqtt {}", mqtt_listener.local_addr()?);
    println!("listening xmpp {}", xmpp_listener.local_addr()?);
    println!("listening http {}", http.local_addr()?);
    println!("listening admin {}", admin.local_addr()?);
    if generated {
        println!("admin-secret {secret}");
        tracing::info!(
            path = %secrets::secret_path(&config.data_dir).display(),
            "generated the admin secret and stored it in the data directory"
        );
    }
    let admin_tls = state.tls.clone().filter(|_| state.config.admin_tls);
    match (&state.tls, &admin_tls) {
        (Some(_), Some(_)) => {
            tracing::info!("TLS on pb, mqtt, http and admin; STARTTLS required on xmpp")
        }
        (Some(_), None) => tracing::warn!(
            "TLS on pb, mqtt and http; STARTTLS required on xmpp; admin_tls = false: \
             the admin API is plain HTTP"
        ),
        (None, _) => {}
    }
    println!("ready");
    tracing::info!(data_dir = %config.data_dir.display(), store = %config.store, "imgate is ready");

    let mut servers: JoinSet<std::io::Result<()>> = JoinSet::new();
    let st = state.clone();
    servers.spawn(async move {
        run_listener(Protocol::Pb, pb, st, true, pb::handle_connection).await;
        Ok(())
    });
    let st = state.clone();
    let xmpp_handler = xmpp::connection_handler(&state);
    servers.spawn(async move {
        // XMPP upgrades with STARTTLS inside the stream instead.
        run_listener(Protocol::Xmpp, xmpp_listener, st, false, xmpp_handler).await;
        Ok(())
    });
    let st = state.clone();
    servers.spawn(async move {
        mqtt::serve(mqtt_listener, st, mqtt_broker).await;
        Ok(())
    });
    // Client HTTP goes through connection admission like every protocol;
    // the admin API (localhost by default) has its own listener cap but
    // no per-IP limits, so it stays reachable under a flood from one
    // address. (With a certificate both are HTTPS, unless `admin_tls =
    // false`.) Both bound header and body times (http::serve).
    let client_http = AdmittingListener::new(
        http,
        state.conn_limiter.clone(),
        state.metrics.clone(),
        Protocol::Http,
        state.tls.clone().map(|a| (a, login_timeout(&state))),
    );
    let st = state.clone();
    let router = client_router(state.clone());
    servers.spawn(async move {
        crate::http::serve::serve(client_http, router, st).await;
        Ok(())
    });
    let admin = AdmittingListener::new(
        admin,
        state.conn_limiter.clone(),
        state.metrics.clone(),
        Protocol::Admin,
        admin_tls.map(|a| (a, login_timeout(&state))),
    )
    .without_per_ip_limits();
    let st = state.clone();
    let router = admin_router(state.clone());
    servers.spawn(async move {
        crate::http::serve::serve(admin, router, st).await;
        Ok(())
    });

    wait_for_signal().await;
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
            _ = wait_for_signal() => {}
        }
    }
    tracing::info!("shutting down: draining sessions");
    let _ = shutdown_tx.send(true);
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async {
        while let Some(r) = servers.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "listener ended with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The time a new connection has for its TLS handshake (and login).
pub fn login_timeout(state: &AppState) -> Duration {
    Duration::from_secs(state.config.login_timeout_secs.max(1))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
