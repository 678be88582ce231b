//! `imgate-bench idle`: what an idle connection costs the server. Opens K
//! connections from this process (MQTT CONNECT with a login — an imgate
//! user per connection from the admin API, or anonymous for a peer broker
//! — or a PB login, DESIGN §5.2), waits until every one is logged in and a
//! settle time has passed, and reads the server's RSS (`/proc/<pid>/status`
//! VmRSS) before the first and after the last: KB per connection.
//!
//! Each connection is held by its own task, which keeps reading (so the
//! server's pushes do not pile up in its socket) and sends the PB
//! heartbeat; a connection the server closes is counted as dropped.
//! This process needs one file descriptor per connection: the run refuses
//! to start when `ulimit -n` is too small (raise it, up to the hard limit).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use imgate_codecs::pb::{commands, proto, PbFrame, PbFramer, DEFAULT_MAX_FRAME};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_util::codec::Framed;

use crate::logins::LoginSource;
use crate::mqtt_client::{self, Login};
use crate::stats::{self, ProcSample};

/// Descriptors this process needs besides the connections.
const SPARE_FDS: usize = 64;
/// How often an idle PB connection sends its heartbeat.
const PB_HEARTBEAT: Duration = Duration::from_secs(20);
/// Bounded wait for a TCP connect or a login reply.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// PB platform of the idle logins (3 = pc).
const PB_PLATFORM: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdleProtocol {
    Mqtt,
    Pb,
    /// Logged in and bound, stream management on; server pings answered.
    Xmpp,
}

#[derive(Args, Debug)]
pub struct IdleArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    #[arg(long, value_enum, default_value_t = IdleProtocol::Mqtt)]
    pub protocol: IdleProtocol,
    /// Idle connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    #[command(flatten)]
    pub logins: LoginSource,
    /// The XMPP domain (`--protocol xmpp`).
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub mqtt_version: u8,
    /// The server's process id (its RSS is the measurement).
    #[arg(long)]
    pub server_pid: u32,
    /// Wait after the last login before reading RSS.
    #[arg(long, default_value_t = 3)]
    pub settle_secs: u64,
    #[arg(long, default_value = "")]
    pub label: String,
}

pub fn run(args: IdleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    check_fd_limit(args.connections)?;
    if matches!(args.protocol, IdleProtocol::Pb | IdleProtocol::Xmpp) {
        anyhow::ensure!(
            args.logins.admin_url.is_some() || args.logins.credentials.is_some(),
            "PB and XMPP logins need tokens: pass --admin-url (or --credentials)"
        );
    }
    let run_id = crate::admin::run_id();
    let logins = args.logins.logins(args.connections, &run_id)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, logins))
}

/// Refuse a run this process cannot hold open (see `ulimit -n`).
fn check_fd_limit(connections: usize) -> anyhow::Result<()> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    match soft {
        Some(soft) if soft < connections + SPARE_FDS => bail!(
            "{connections} connections need about {} open files, ulimit -n is {soft}: \
             raise it (up to `ulimit -Hn`) or run several processes",
            connections + SPARE_FDS
        ),
        _ => Ok(()),
    }
}

struct Counters {
    connected: AtomicUsize,
    dropped: AtomicUsize,
    failed: AtomicUsize,
    first_error: std::sync::Mutex<Option<String>>,
}

async fn run_async(args: IdleArgs, logins: Vec<Login>) -> anyhow::Result<()> {
    let addr = Arc::new(format!("{}:{}", args.host, args.port));
    let before = ProcSample::read(args.server_pid)
        .with_context(|| format!("reading /proc/{} (is the server running?)", args.server_pid))?;
    let counters = Arc::new(Counters {
        connected: AtomicUsize::new(0),
        dropped: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_error: std::sync::Mutex::new(None),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let opening = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let version = mqtt_client::version_of(args.mqtt_version);
    let started = Instant::now();
    let mut holders = Vec::with_capacity(logins.len());
    let mut logged_in = Vec::with_capacity(logins.len());
    for login in logins {
        let (addr, counters, opening, stop) = (
            addr.clone(),
            counters.clone(),
            opening.clone(),
            stop_rx.clone(),
        );
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        logged_in.push(ready_rx);
        let protocol = args.protocol;
        let domain = args.domain.clone();
        holders.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await;
            let outcome = match protocol {
                IdleProtocol::Mqtt => {
                    hold_mqtt(&addr, version, &login, ready_tx, stop, permit).await
                }
                IdleProtocol::Pb => hold_pb(&addr, &login, ready_tx, stop, permit).await,
                IdleProtocol::Xmpp => {
                    hold_xmpp(&addr, &domain, &login, ready_tx, stop, permit).await
                }
            };
            match outcome {
                Ok(Held::UntilStop) => {}
                Ok(Held::Dropped) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = counters.first_error.lock() {
                        first.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        }));
    }
    // A sender dropped without a signal = that connection failed.
    for ready in logged_in {
        if ready.await.is_ok() {
            counters.connected.fetch_add(1, Ordering::Relaxed);
        }
    }
    let connect_seconds = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let after = ProcSample::read(args.server_pid);
    let alive = counters
        .connected
        .load(Ordering::Relaxed)
        .saturating_sub(counters.dropped.load(Ordering::Relaxed));
    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }
    let (rss_after, per_conn) = match after {
        Some(a) if alive > 0 => (
            Some(a.rss_kb),
            Some(stats::round2(
                (a.rss_kb as f64 - before.rss_kb as f64) / alive as f64,
            )),
        ),
        Some(a) => (Some(a.rss_kb), None),
        None => (None, None),
    };
    let first_error = counters.first_error.lock().ok().and_then(|e| e.clone());
    let report = json!({
        "tool": "idle",
        "label": args.label,
        "target": *addr,
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "connections": args.connections,
        "connected": counters.connected.load(Ordering::Relaxed),
        "alive_at_measurement": alive,
        "failed": counters.failed.load(Ordering::Relaxed),
        "dropped": counters.dropped.load(Ordering::Relaxed),
        "connect_seconds": stats::round3(connect_seconds.as_secs_f64()),
        "server_pid": args.server_pid,
        "rss_kb_before": before.rss_kb,
        "rss_kb_after": rss_after,
        "kb_per_connection": per_conn,
        "all_connected": alive == args.connections,
        "first_error": first_error,
    });
    println!(
        "{}",
        serde_json::to_string(&report).context("formatting the report")?
    );
    Ok(())
}

/// A slot among the connections being opened at once (released after login).
type OpeningPermit = Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>;

enum Held {
    UntilStop,
    Dropped,
}

async fn hold_mqtt(
    addr: &str,
    version: imgate_codecs::mqtt::Version,
    login: &Login,
    ready: tokio::sync::oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
    permit: OpeningPermit,
) -> anyhow::Result<Held> {
    let mut conn = mqtt_client::connect(addr, version, login, false).await?;
    drop(permit);
    let _ = ready.send(());
    let held = loop {
        tokio::select! {
            _ = stop.changed() => break Held::UntilStop,
            p = conn.next() => match p {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break Held::Dropped,
            },
        }
    };
    mqtt_client::disconnect(&mut conn).await;
    Ok(held)
}

async fn hold_pb(
    addr: &str,
    login: &Login,
    ready: tokio::sync::oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
    permit: OpeningPermit,
) -> anyhow::Result<Held> {
    let stream = tokio::time::timeout(LOGIN_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("PB connect timed out")??;
    let mut conn = Framed::new(stream, PbFramer::new(DEFAULT_MAX_FRAME));
    let request = proto::LoginRequest {
        user_id: login.username.clone().unwrap_or_default(),
        token: login.password.clone().unwrap_or_default(),
        client_id: login.client_id.clone(),
        platform: PB_PLATFORM,
    };
    conn.send(PbFrame::response(commands::LOGIN_REQUEST, 1, &request))
        .await?;
    let reply = match tokio::time::timeout(LOGIN_TIMEOUT, conn.next()).await {
        Err(_) => bail!("no PB LoginResponse within {LOGIN_TIMEOUT:?}"),
        Ok(None) => bail!("PB connection closed before the LoginResponse"),
        Ok(Some(Err(e))) => bail!("bad PB frame: {e}"),
        Ok(Some(Ok(f))) => f,
    };
    if reply.command != commands::LOGIN_RESPONSE {
        bail!(
            "expected a PB LoginResponse, got command {:#06x}",
            reply.command
        );
    }
    let response = <proto::LoginResponse as prost::Message>::decode(reply.body)
        .context("decoding the PB LoginResponse")?;
    if response.code != 0 {
        bail!("PB login refused: code {}", response.code);
    }
    drop(permit);
    let _ = ready.send(());
    let mut heartbeat = tokio::time::interval(PB_HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(Held::UntilStop),
            _ = heartbeat.tick() => {
                if conn.send(PbFrame::new(commands::HEARTBEAT, 0, Bytes::new())).await.is_err() {
                    return Ok(Held::Dropped);
                }
            }
            f = conn.next() => match f {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ok(Held::Dropped),
            },
        }
    }
}

async fn hold_xmpp(
    addr: &str,
    domain: &str,
    login: &Login,
    ready: tokio::sync::oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
    permit: OpeningPermit,
) -> anyhow::Result<Held> {
    let xmpp_login = crate::xmpp_client::XmppLogin {
        user: login.username.clone().unwrap_or_default(),
        password: login.password.clone().unwrap_or_default(),
        resource: login.client_id.clone(),
    };
    let mut conn = tokio::time::timeout(
        LOGIN_TIMEOUT,
        crate::xmpp_client::XmppConn::login(addr, domain, &xmpp_login),
    )
    .await
    .context("XMPP login timed out")??;
    drop(permit);
    let _ = ready.send(());
    loop {
        tokio::select! {
            _ = stop.changed() => {
                conn.close().await;
                return Ok(Held::UntilStop);
            }
            // Pings and SM ack requests are answered by `next`'s queue.
            next = conn.next() => match next {
                Ok(Some(_)) => {
                    if conn.flush().await.is_err() {
                        return Ok(Held::Dropped);
                    }
                }
                Ok(None) | Err(_) => return Ok(Held::Dropped),
            },
        }
    }
}
