//! `imgate serve`: open the store, build the pipeline, bind every listener,
//! print `listening <proto> <addr>` lines and `ready`, run until SIGINT or
//! SIGTERM, then drain (DESIGN §5, §8).

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use imgate_adapters::{EmbeddedConfig, EmbeddedStore};
use imgate_core::pipeline::{build_pipeline, Protocol};
use imgate_core::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::http::{admin_router, client_router};
use crate::metrics::Metrics;
use crate::pb;
use crate::secrets;
use crate::sessions::{run_listener, SessionRegistry};
use crate::state::AppState;
use crate::token::TokenIssuer;

fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.store == "embedded" || config.store.is_empty() {
        let mut ec = EmbeddedConfig::new(&config.data_dir);
        ec.node_id = config.node_id;
        ec.max_batch = config.embedded_max_batch;
        ec.dedupe_window = Duration::from_secs(config.dedupe_window_secs);
        let store = EmbeddedStore::open(ec).context("opening the embedded store")?;
        return Ok(Arc::new(store));
    }
    if config.store.starts_with("amqp://") || config.store.starts_with("amqps://") {
        bail!("the RabbitMQ store is not built yet; run with store = \"embedded\" (the default)");
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
    let (secret, generated) = secrets::admin_secret(&config.admin_secret, &config.data_dir)?;
    let store = open_store(&config)?;
    let pipeline = build_pipeline(&config.pipeline(), store.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = AppState {
        tokens: TokenIssuer::new(&secret, config.token_ttl_secs),
        admin_secret: Arc::from(secret.as_str()),
        config: Arc::new(config.clone()),
        store,
        pipeline,
        metrics: Arc::new(Metrics::default()),
        sessions: Arc::new(SessionRegistry::new(config.multi_endpoint)),
        shutdown: shutdown_rx,
    };

    let pb = bind("pb", &config.pb_addr).await?;
    let http = bind("http", &config.http_addr).await?;
    let admin = bind("admin", &config.admin_addr).await?;
    println!("listening pb {}", pb.local_addr()?);
    println!("listening http {}", http.local_addr()?);
    println!("listening admin {}", admin.local_addr()?);
    if generated {
        println!("admin-secret {secret}");
        tracing::info!(
            path = %secrets::secret_path(&config.data_dir).display(),
            "generated the admin secret and stored it in the data directory"
        );
    }
    println!("ready");
    tracing::info!(data_dir = %config.data_dir.display(), store = %config.store, "imgate is ready");

    let mut servers = JoinSet::new();
    let st = state.clone();
    servers.spawn(async move {
        run_listener(Protocol::Pb, pb, st, pb::handle_connection).await;
        Ok(())
    });
    for (listener, router) in [
        (http, client_router(state.clone())),
        (admin, admin_router(state.clone())),
    ] {
        let st = state.clone();
        servers.spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { st.draining().await })
                .into_future(),
        );
    }

    wait_for_signal().await;
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
