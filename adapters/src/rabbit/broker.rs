//! One supervised AMQP connection: connects, re-connects with backoff when
//! the broker closes it or goes away, and tells everyone which connection
//! is current.
//!
//! lapin's own auto-recovery is not used on purpose: the store must decide
//! what happens to in-flight confirms (fail them, the sender retries and is
//! deduplicated), where the log consumer resumes (its own offset), and how
//! device consumers come back. Users of a [`Broker`] watch
//! [`Broker::current`] and rebuild their channels on a new connection.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::{Connection, ConnectionProperties, Event};
use tokio::sync::watch;

use super::config::RabbitConfig;
use super::topology::{self, Names};
use imgate_core::StoreError;

/// A live connection and its generation (1, 2, ... per reconnect).
#[derive(Clone)]
pub struct Live {
    pub conn: Arc<Connection>,
    pub generation: u64,
}

#[derive(Clone)]
pub struct Broker {
    current: watch::Receiver<Option<Live>>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Broker {
    /// Start supervising a connection named `name` (shown by
    /// `rabbitmqctl list_connections client_properties`). The first
    /// connection is made before this returns, so a wrong URL or a broker
    /// that is down fails `open` at once.
    pub async fn start(
        uri: lapin::uri::AMQPUri,
        name: String,
        names: Names,
        config: Arc<RabbitConfig>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(Broker, tokio::task::JoinHandle<()>), StoreError> {
        let props = ConnectionProperties::default().with_connection_name(name.clone().into());
        let first = connect(&uri, props.clone(), &names, &config)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot reach RabbitMQ: {e}")))?;
        let (tx, rx) = watch::channel(Some(Live {
            conn: Arc::new(first),
            generation: 1,
        }));
        let task = tokio::spawn(async move {
            let mut generation = 1;
            loop {
                let Some(live) = tx.borrow().clone() else {
                    break;
                };
                tokio::select! {
                    _ = wait_closed(&live.conn) => {}
                    _ = shutdown.changed() => {
                        let _ = live.conn.close(200, "imgate store closed".into()).await;
                        tx.send_replace(None);
                        return;
                    }
                }
                tracing::warn!(connection = %name, "RabbitMQ connection lost; reconnecting");
                tx.send_replace(None);
                let mut backoff = BACKOFF_MIN;
                let conn = loop {
                    tokio::select! {
                        r = connect(&uri, props.clone(), &names, &config) => match r {
                            Ok(c) => break c,
                            Err(e) => tracing::warn!(connection = %name, error = %e, "RabbitMQ reconnect failed"),
                        },
                        _ = shutdown.changed() => return,
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                };
                generation += 1;
                tracing::info!(connection = %name, generation, "RabbitMQ connection re-established");
                tx.send_replace(Some(Live {
                    conn: Arc::new(conn),
                    generation,
                }));
            }
        });
        Ok((Broker { current: rx }, task))
    }

    /// The current connection, waiting at most `wait` for one.
    pub async fn live(&self, wait: Duration) -> Result<Live, StoreError> {
        let mut rx = self.current.clone();
        let found = tokio::time::timeout(wait, async {
            loop {
                if let Some(l) = rx.borrow_and_update().clone() {
                    if l.conn.status().connected() {
                        return Some(l);
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match found {
            Ok(Some(l)) => Ok(l),
            Ok(None) => Err(StoreError::Unavailable("RabbitMQ store closed".into())),
            Err(_) => Err(StoreError::Unavailable(
                "RabbitMQ unreachable (reconnecting); try again".into(),
            )),
        }
    }

    /// Wait until a connection newer than `generation` is up (or the store
    /// closes: `None`).
    pub async fn next_after(&self, generation: u64) -> Option<Live> {
        let mut rx = self.current.clone();
        loop {
            if let Some(l) = rx.borrow_and_update().clone() {
                if l.generation > generation && l.conn.status().connected() {
                    return Some(l);
                }
            }
            rx.changed().await.ok()?;
        }
    }
}

async fn connect(
    uri: &lapin::uri::AMQPUri,
    props: ConnectionProperties,
    names: &Names,
    config: &RabbitConfig,
) -> Result<Connection, lapin::Error> {
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: match &config.tls_ca_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                lapin::Error::from(std::io::Error::other(format!(
                    "cannot read tls_ca_file {}: {e}",
                    path.display()
                )))
            })?),
            None => None,
        },
    };
    let connect = Connection::connect_uri_with_config(
        uri.clone(),
        props,
        tls,
        lapin::runtime::default_runtime()?,
    );
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| lapin::Error::from(std::io::Error::other("connect timed out")))??;
    // Declare the shared topology on every (re)connect: idempotent, and it
    // brings it back if someone deleted it.
    topology::declare_core(&conn, names, config).await?;
    Ok(conn)
}

/// Resolves when the connection is no longer usable.
async fn wait_closed(conn: &Connection) {
    let mut events = conn.events_listener();
    loop {
        if !conn.status().connected() {
            return;
        }
        tokio::select! {
            ev = events.next() => match ev {
                Some(Event::Error(e)) => {
                    tracing::debug!(error = %e, "RabbitMQ connection error");
                    return;
                }
                Some(_) => {}
                None => return,
            },
            // The status is the truth; events are only the fast path.
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
