//! `imgate load-mqtt`: a generic-topic MQTT load generator that works
//! against any broker (imgate's MQTT listener or a peer such as
//! Mosquitto), so the two can be compared in the same run (STYLE:
//! performance is measured against a named peer).
//!
//! M subscribers subscribe to `<prefix>/#`; N publishers publish K
//! messages in total to `<prefix>/p<i>` at QoS 0 or 1. A QoS 1 publisher
//! keeps at most `--window` PUBLISHes unacknowledged. Every payload starts
//! with the send time (nanoseconds since the run's start, big endian) and
//! the message's sequence number, so subscribers measure end-to-end
//! latency and check that each of the K messages arrived exactly once.
//!
//! Credentials: none (anonymous), one shared `--username/--password`, or
//! `--credentials FILE` with one `user client_id password` line per
//! connection (subscribers take the first lines, then publishers), which
//! is what imgate needs (username = user id, password = token, client id =
//! the token's device; one user per connection avoids the kick rule).
//!
//! The report is one JSON line on stdout.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use futures_util::{FutureExt, SinkExt, StreamExt};
use imgate_codecs::mqtt::{
    Connect, MqttFramer, Packet, Properties, Property, PubResp, PubRespKind, Publish, QoS,
    SubOptions, Subscribe, SubscribeFilter, Version, DEFAULT_MAX_PACKET,
};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::Framed;

type Conn = Framed<TcpStream, MqttFramer>;

/// Bounded wait for a CONNACK, SUBACK or the next PUBACK.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Timestamp + sequence number at the start of every payload.
const HEADER: usize = 16;

#[derive(Args, Debug)]
pub struct LoadMqttArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// One username for every connection (omit for anonymous access).
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long, env = "IMGATE_LOAD_MQTT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// File of `user client_id password` lines, one per connection.
    #[arg(long, conflicts_with_all = ["username", "password"])]
    pub credentials: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Total messages over all publishers.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// 0 or 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Payload bytes (at least 16: timestamp and sequence number).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Topic prefix; default `bench/<random>`.
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Unacknowledged QoS 1 PUBLISHes per publisher.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Protocol level: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub mqtt_version: u8,
    /// How long subscribers may still wait after the last publish.
    #[arg(long, default_value_t = 10)]
    pub wait_secs: u64,
    /// A name for the report (e.g. the broker under test).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Subscribers keep a persistent session (clean session 0; MQTT 5: a
    /// session expiry of 300 s), so the broker must keep their QoS 1
    /// messages across a crash.
    #[arg(long)]
    pub persistent_subscribers: bool,
}

/// Who a connection logs in as.
#[derive(Debug, Clone)]
struct Login {
    username: Option<String>,
    client_id: String,
    password: Option<String>,
}

/// What every task shares.
struct Ctx {
    addr: String,
    version: Version,
    qos: QoS,
    messages: usize,
    publishers: usize,
    size: usize,
    window: usize,
    prefix: String,
    /// The clock payload timestamps are relative to.
    base: Instant,
    errors: Mutex<Vec<String>>,
}

impl Ctx {
    fn error(&self, e: impl std::fmt::Display) {
        if let Ok(mut v) = self.errors.lock() {
            v.push(e.to_string());
        }
    }
}

#[derive(Default)]
struct PubResult {
    sent: usize,
    acked: usize,
    /// When this publisher's last message was sent (QoS 0) or acked (QoS 1).
    finished: Option<Duration>,
}

#[derive(Default)]
struct SubResult {
    received: usize,
    unique: usize,
    duplicates: usize,
    latencies_us: Vec<u64>,
    last: Option<Duration>,
}

pub fn run(args: LoadMqttArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

fn logins(args: &LoadMqttArgs, run_id: &str) -> anyhow::Result<Vec<Login>> {
    let total = args.subscribers + args.publishers;
    let mut out = Vec::with_capacity(total);
    if let Some(path) = &args.credentials {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let lines: Vec<Login> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some(Login {
                    username: Some(f.next()?.to_owned()),
                    client_id: f.next()?.to_owned(),
                    password: Some(f.next()?.to_owned()),
                })
            })
            .collect();
        anyhow::ensure!(
            lines.len() >= total,
            "{} has {} credential lines, {total} connections need one each",
            path.display(),
            lines.len()
        );
        out.extend(lines.into_iter().take(total));
    } else {
        for i in 0..total {
            out.push(Login {
                username: args.username.clone(),
                client_id: format!("load-{run_id}-{i}"),
                password: args.password.clone(),
            });
        }
    }
    Ok(out)
}

async fn run_async(args: LoadMqttArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.publishers > 0, "--publishers must be at least 1");
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    let run_id = crate::secrets::random_hex(4)?;
    let prefix = args
        .topic_prefix
        .clone()
        .unwrap_or_else(|| format!("bench/{run_id}"));
    let logins = logins(&args, &run_id)?;
    let ctx = Arc::new(Ctx {
        addr: format!("{}:{}", args.host, args.port),
        version: if args.mqtt_version == 5 {
            Version::V5
        } else {
            Version::V4
        },
        qos: if args.qos == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        },
        messages: args.messages,
        publishers: args.publishers,
        size: args.size.max(HEADER),
        window: args.window.min(usize::from(u16::MAX) - 1),
        prefix,
        base: Instant::now(),
        errors: Mutex::new(Vec::new()),
    });

    // Everyone connected and subscribed before the clock starts.
    let mut sub_conns = Vec::new();
    for login in &logins[..args.subscribers] {
        let mut c = connect(&ctx, login, args.persistent_subscribers).await?;
        subscribe(&ctx, &mut c).await?;
        sub_conns.push(c);
    }
    let mut pub_conns = Vec::new();
    for login in &logins[args.subscribers..] {
        pub_conns.push(connect(&ctx, login, false).await?);
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let started = ctx.base.elapsed();
    let subs: Vec<_> = sub_conns
        .into_iter()
        .map(|c| tokio::spawn(subscriber(c, ctx.clone(), stop_rx.clone())))
        .collect();
    let pubs: Vec<_> = pub_conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(publisher(c, i, ctx.clone())))
        .collect();
    let mut published = PubResult::default();
    let mut publish_end = started;
    for h in pubs {
        let r = h.await.context("a publisher task panicked")?;
        published.sent += r.sent;
        published.acked += r.acked;
        publish_end = publish_end.max(r.finished.unwrap_or(started));
    }
    let wait = Duration::from_secs(args.wait_secs);
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let _ = stop_tx.send(true);
    });
    let mut delivered = SubResult::default();
    let mut all_arrived = true;
    for h in subs {
        let r = h.await.context("a subscriber task panicked")?;
        all_arrived &= r.unique == args.messages;
        delivered.received += r.received;
        delivered.unique += r.unique;
        delivered.duplicates += r.duplicates;
        delivered.latencies_us.extend(r.latencies_us);
        delivered.last = delivered.last.max(r.last);
    }
    delivered.latencies_us.sort_unstable();
    let lat = &delivered.latencies_us;
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        round2(lat[i.min(lat.len() - 1)] as f64 / 1000.0)
    };
    let rate = |n: usize, end: Duration| -> f64 {
        let secs = end.saturating_sub(started).as_secs_f64();
        if secs > 0.0 {
            (n as f64 / secs).round()
        } else {
            0.0
        }
    };
    let publish_ok = if ctx.qos == QoS::AtMostOnce {
        published.sent
    } else {
        published.acked
    };
    let errors = ctx.errors.lock().map(|v| v.clone()).unwrap_or_default();
    let report = json!({
        "label": args.label,
        "target": ctx.addr,
        "mqtt_version": args.mqtt_version,
        "qos": args.qos,
        "persistent_subscribers": args.persistent_subscribers,
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "messages": args.messages,
        "size": ctx.size,
        "window": ctx.window,
        "publish": {
            "sent": published.sent,
            "acked": published.acked,
            "seconds": round3(publish_end.saturating_sub(started).as_secs_f64()),
            "msgs_per_sec": rate(publish_ok, publish_end),
        },
        "delivery": {
            "expected": args.messages * args.subscribers,
            "received": delivered.received,
            "unique": delivered.unique,
            "duplicates": delivered.duplicates,
            "seconds": round3(delivered.last.unwrap_or(started).saturating_sub(started).as_secs_f64()),
            "msgs_per_sec": rate(delivered.received, delivered.last.unwrap_or(started)),
            "latency_p50_ms": pct(0.5),
            "latency_p99_ms": pct(0.99),
            "latency_max_ms": pct(1.0),
        },
        "all_arrived": all_arrived,
        "errors": errors.len(),
        "error_samples": errors.iter().take(5).collect::<Vec<_>>(),
    });
    println!(
        "{}",
        serde_json::to_string(&report).context("formatting the report")?
    );
    Ok(())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

async fn next_packet(conn: &mut Conn, what: &str) -> anyhow::Result<Packet> {
    match tokio::time::timeout(REPLY_TIMEOUT, conn.next()).await {
        Err(_) => anyhow::bail!("no {what} within {REPLY_TIMEOUT:?}"),
        Ok(None) => anyhow::bail!("connection closed while waiting for {what}"),
        Ok(Some(Err(e))) => anyhow::bail!("bad packet while waiting for {what}: {e}"),
        Ok(Some(Ok(p))) => Ok(p),
    }
}

async fn connect(ctx: &Ctx, login: &Login, persistent: bool) -> anyhow::Result<Conn> {
    let stream = TcpStream::connect(&ctx.addr)
        .await
        .with_context(|| format!("connecting to {}", ctx.addr))?;
    stream.set_nodelay(true)?;
    let mut conn = Framed::new(
        stream,
        MqttFramer::with_version(DEFAULT_MAX_PACKET, ctx.version),
    );
    conn.send(Packet::Connect(Connect {
        version: ctx.version,
        client_id: login.client_id.clone(),
        clean_start: !persistent,
        keep_alive: 120,
        username: login.username.clone(),
        password: login.password.clone().map(Bytes::from),
        will: None,
        properties: if persistent && ctx.version == Version::V5 {
            Properties(vec![Property::SessionExpiryInterval(300)])
        } else {
            Properties::default()
        },
    }))
    .await?;
    match next_packet(&mut conn, "CONNACK").await? {
        Packet::ConnAck(a) if a.code == 0 => Ok(conn),
        Packet::ConnAck(a) => anyhow::bail!(
            "CONNACK code {:#04x} for {:?}/{}",
            a.code,
            login.username,
            login.client_id
        ),
        other => anyhow::bail!("expected CONNACK, got {}", other.type_name()),
    }
}

async fn subscribe(ctx: &Ctx, conn: &mut Conn) -> anyhow::Result<()> {
    conn.send(Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter {
            filter: format!("{}/#", ctx.prefix),
            options: SubOptions {
                qos: ctx.qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        }],
        properties: Properties::default(),
    }))
    .await?;
    match next_packet(conn, "SUBACK").await? {
        Packet::SubAck(a) if a.reasons.first().is_some_and(|r| *r < 0x80) => Ok(()),
        Packet::SubAck(a) => anyhow::bail!("SUBACK refused: {:?}", a.reasons),
        other => anyhow::bail!("expected SUBACK, got {}", other.type_name()),
    }
}

fn payload(ctx: &Ctx, seq: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(ctx.size);
    b.put_u64(ctx.base.elapsed().as_nanos() as u64);
    b.put_u64(seq as u64);
    b.resize(ctx.size, b'x');
    b.freeze()
}

async fn publisher(mut conn: Conn, index: usize, ctx: Arc<Ctx>) -> PubResult {
    let mut r = PubResult::default();
    if let Err(e) = publish_all(&mut conn, index, &ctx, &mut r).await {
        ctx.error(format!("publisher {index}: {e:#}"));
    }
    let _ = conn
        .send(Packet::Disconnect(
            imgate_codecs::mqtt::Disconnect::default(),
        ))
        .await;
    r
}

async fn publish_all(
    conn: &mut Conn,
    index: usize,
    ctx: &Ctx,
    r: &mut PubResult,
) -> anyhow::Result<()> {
    let topic = format!("{}/p{index}", ctx.prefix);
    let qos1 = ctx.qos == QoS::AtLeastOnce;
    let mut seqs = (index..ctx.messages).step_by(ctx.publishers).peekable();
    let mut pending = vec![false; usize::from(u16::MAX) + 1];
    let mut inflight = 0usize;
    let mut pkid: u16 = 0;
    loop {
        let mut wrote = false;
        while !qos1 || inflight < ctx.window {
            let Some(seq) = seqs.next() else { break };
            let id = if qos1 {
                loop {
                    pkid = pkid.wrapping_add(1);
                    if pkid != 0 && !pending[usize::from(pkid)] {
                        break pkid;
                    }
                }
            } else {
                0
            };
            conn.feed(Packet::Publish(Publish {
                dup: false,
                qos: ctx.qos,
                retain: false,
                topic: topic.clone(),
                pkid: id,
                properties: Properties::default(),
                payload: payload(ctx, seq),
            }))
            .await?;
            r.sent += 1;
            wrote = true;
            if qos1 {
                pending[usize::from(id)] = true;
                inflight += 1;
            }
        }
        if wrote {
            conn.flush().await?;
        }
        if !qos1 {
            r.finished = Some(ctx.base.elapsed());
            return Ok(());
        }
        if inflight == 0 && seqs.peek().is_none() {
            return Ok(());
        }
        // At least one acknowledgement, then whatever else is buffered.
        let mut packet = Some(next_packet(conn, "PUBACK").await?);
        while let Some(p) = packet {
            match p {
                Packet::PubResp(a) if a.kind == PubRespKind::PubAck => {
                    let slot = usize::from(a.pkid);
                    if !pending[slot] {
                        anyhow::bail!("PUBACK for unknown packet id {}", a.pkid);
                    }
                    pending[slot] = false;
                    inflight -= 1;
                    if a.reason >= 0x80 {
                        ctx.error(format!("PUBACK reason {:#04x}", a.reason));
                    } else {
                        r.acked += 1;
                        r.finished = Some(ctx.base.elapsed());
                    }
                }
                Packet::PingResp => {}
                Packet::Disconnect(d) => {
                    anyhow::bail!("server DISCONNECT reason {:#04x}", d.reason)
                }
                other => anyhow::bail!("unexpected {} on a publisher", other.type_name()),
            }
            packet = match conn.next().now_or_never() {
                Some(Some(Ok(p))) => Some(p),
                Some(Some(Err(e))) => anyhow::bail!("bad packet: {e}"),
                Some(None) => anyhow::bail!("connection closed"),
                None => None,
            };
        }
    }
}

async fn subscriber(mut conn: Conn, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) -> SubResult {
    let mut r = SubResult {
        latencies_us: Vec::with_capacity(ctx.messages),
        ..SubResult::default()
    };
    let mut seen = vec![false; ctx.messages];
    'outer: while r.unique < ctx.messages {
        let mut next = tokio::select! {
            p = conn.next() => p,
            _ = stop.changed() => break,
        };
        let mut acks = false;
        loop {
            let p = match next {
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    ctx.error(format!("subscriber: bad packet: {e}"));
                    break 'outer;
                }
                None => {
                    ctx.error("subscriber: connection closed");
                    break 'outer;
                }
            };
            match p {
                Packet::Publish(p) => {
                    on_message(&ctx, &p, &mut seen, &mut r);
                    if p.qos == QoS::AtLeastOnce {
                        acks = true;
                        let ack = PubResp::new(PubRespKind::PubAck, p.pkid);
                        if let Err(e) = conn.feed(Packet::PubResp(ack)).await {
                            ctx.error(format!("subscriber: sending PUBACK: {e}"));
                            break 'outer;
                        }
                    }
                }
                Packet::PingResp => {}
                other => ctx.error(format!("subscriber: unexpected {}", other.type_name())),
            }
            match conn.next().now_or_never() {
                Some(n) => next = n,
                None => break,
            }
        }
        if acks {
            if let Err(e) = conn.flush().await {
                ctx.error(format!("subscriber: flushing PUBACKs: {e}"));
                break;
            }
        }
    }
    let _ = conn
        .send(Packet::Disconnect(
            imgate_codecs::mqtt::Disconnect::default(),
        ))
        .await;
    r
}

fn on_message(ctx: &Ctx, p: &Publish, seen: &mut [bool], r: &mut SubResult) {
    let now = ctx.base.elapsed();
    let head = p.payload.get(..HEADER).and_then(|h| {
        let ts = u64::from_be_bytes(h.get(..8)?.try_into().ok()?);
        let seq = u64::from_be_bytes(h.get(8..16)?.try_into().ok()?);
        Some((ts, seq))
    });
    let Some((ts, seq)) = head else {
        ctx.error(format!("subscriber: short payload on {}", p.topic));
        return;
    };
    let Some(slot) = usize::try_from(seq).ok().and_then(|s| seen.get_mut(s)) else {
        ctx.error(format!("subscriber: unknown sequence number {seq}"));
        return;
    };
    r.received += 1;
    r.last = Some(now);
    if *slot {
        r.duplicates += 1;
        return;
    }
    *slot = true;
    r.unique += 1;
    r.latencies_us
        .push((now.as_nanos() as u64).saturating_sub(ts) / 1000);
}
