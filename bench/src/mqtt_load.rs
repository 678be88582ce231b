//! `imgate-bench mqtt`: a generic-topic MQTT load generator that works
//! against any broker (imgate's MQTT listener or a peer such as Mosquitto
//! or RabbitMQ's MQTT plugin), so they can be compared in the same run.
//!
//! S subscribers, P publishers, K messages in total at QoS 0 or 1. Routing:
//! `all` — every subscriber subscribes `<prefix>/#` and gets every message
//! (fan-out, K × S deliveries); `one` — subscriber j subscribes
//! `<prefix>/s<j>` and message `seq` goes to `<prefix>/s<seq mod S>`
//! (K deliveries, the shape of the IM path's 1:1 messages). A QoS 1
//! publisher keeps at most `--window` PUBLISHes unacknowledged. Every
//! payload starts with its send time (nanoseconds since the run's clock
//! base; the due time when `--rate` paces the run) and its sequence
//! number, so subscribers measure end-to-end latency and count each
//! delivery exactly once.
//!
//! Credentials: anonymous, one shared `--username/--password`,
//! `--credentials FILE` (`user client_id password` per line, subscribers
//! first), or `--admin-url` to have imgate's admin API issue one user per
//! connection. The report is one JSON line on stdout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Args, ValueEnum};
use imgate_codecs::mqtt::{Properties, QoS, Version};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::inbox;
use crate::logins::LoginSource;
use crate::mqtt_client::{self, Conn, WindowedPublisher};
use crate::schedule::{self, seqs_of, Schedule};
use crate::stats::{self, Arrivals, ProcSample};

/// Timestamp + sequence number at the start of every payload.
const HEADER: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Routing {
    /// Every subscriber gets every message.
    All,
    /// Each message goes to one subscriber (seq mod S).
    One,
}

#[derive(Args, Debug)]
pub struct MqttArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    #[command(flatten)]
    pub logins: LoginSource,
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
    #[arg(long, value_enum, default_value_t = Routing::All)]
    pub routing: Routing,
    /// Messages per second in total (paced mode); omit to flood.
    #[arg(long)]
    pub rate: Option<f64>,
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
    /// The broker's process id: report its CPU time per delivered message
    /// and its RSS (from /proc) over the run.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// What every task shares.
struct Ctx {
    addr: String,
    version: Version,
    qos: QoS,
    messages: usize,
    publishers: usize,
    subscribers: usize,
    routing: Routing,
    size: usize,
    window: usize,
    prefix: String,
    schedule: Schedule,
    errors: Mutex<Vec<String>>,
}

impl Ctx {
    fn error(&self, e: impl std::fmt::Display) {
        if let Ok(mut v) = self.errors.lock() {
            v.push(e.to_string());
        }
    }

    /// Deliveries expected in total: a sequence space the subscribers share.
    fn expected(&self) -> usize {
        match self.routing {
            Routing::All => self.messages * self.subscribers,
            Routing::One => self.messages,
        }
    }

    fn filter_of(&self, subscriber: usize) -> String {
        match self.routing {
            Routing::All => format!("{}/#", self.prefix),
            Routing::One => format!("{}/s{subscriber}", self.prefix),
        }
    }
}

#[derive(Default)]
struct PubResult {
    sent: usize,
    acked: usize,
    refused: usize,
    /// When this publisher's last message was sent (QoS 0) or acked (QoS 1).
    finished: Option<Duration>,
}

pub fn run(args: MqttArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: MqttArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.publishers > 0, "--publishers must be at least 1");
    anyhow::ensure!(args.subscribers > 0, "--subscribers must be at least 1");
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    let run_id = crate::admin::run_id();
    let prefix = args
        .topic_prefix
        .clone()
        .unwrap_or_else(|| format!("bench/{run_id}"));
    let logins = args
        .logins
        .logins(args.subscribers + args.publishers, &run_id)?;
    let base = Instant::now();
    let mut ctx = Ctx {
        addr: format!("{}:{}", args.host, args.port),
        version: mqtt_client::version_of(args.mqtt_version),
        qos: if args.qos == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        },
        messages: args.messages,
        publishers: args.publishers,
        subscribers: args.subscribers,
        routing: args.routing,
        size: args.size.max(HEADER),
        window: args.window,
        prefix,
        schedule: Schedule::new(base, Duration::ZERO, None),
        errors: Mutex::new(Vec::new()),
    };

    // Everyone connected and subscribed before the clock starts.
    let mut sub_conns = Vec::new();
    for (j, login) in logins[..args.subscribers].iter().enumerate() {
        let mut c =
            mqtt_client::connect(&ctx.addr, ctx.version, login, args.persistent_subscribers)
                .await?;
        mqtt_client::subscribe(&mut c, &ctx.filter_of(j), ctx.qos).await?;
        sub_conns.push(c);
    }
    let mut pub_conns = Vec::new();
    for login in &logins[args.subscribers..] {
        pub_conns.push(mqtt_client::connect(&ctx.addr, ctx.version, login, false).await?);
    }
    let server_before = args.server_pid.and_then(ProcSample::read);
    let start = schedule::start_of(base.elapsed(), args.rate);
    ctx.schedule = Schedule::new(base, start, args.rate);
    let ctx = Arc::new(ctx);

    let (stop_tx, stop_rx) = watch::channel(false);
    let subs: Vec<_> = sub_conns
        .into_iter()
        .enumerate()
        .map(|(j, c)| tokio::spawn(subscriber(c, j, ctx.clone(), stop_rx.clone())))
        .collect();
    let pubs: Vec<_> = pub_conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(publisher(c, i, ctx.clone())))
        .collect();
    let mut published = PubResult::default();
    let mut publish_end = start;
    for h in pubs {
        let r = h.await.context("a publisher task panicked")?;
        published.sent += r.sent;
        published.acked += r.acked;
        published.refused += r.refused;
        publish_end = publish_end.max(r.finished.unwrap_or(start));
    }
    inbox::stop_after(stop_tx, Duration::from_secs(args.wait_secs));
    let mut arrivals = Arrivals::new(ctx.expected());
    for h in subs {
        arrivals.merge(h.await.context("a subscriber task panicked")?);
    }
    let publish_ok = if ctx.qos == QoS::AtMostOnce {
        published.sent
    } else {
        published.acked
    };
    let errors = ctx.errors.lock().map(|v| v.clone()).unwrap_or_default();
    let Value::Object(mut report) = json!({
        "tool": "mqtt",
        "label": args.label,
        "target": ctx.addr,
        "mqtt_version": args.mqtt_version,
        "qos": args.qos,
        "routing": format!("{:?}", args.routing).to_lowercase(),
        "rate": args.rate,
        "persistent_subscribers": args.persistent_subscribers,
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "messages": args.messages,
        "size": ctx.size,
        "window": args.window,
        "sent": published.sent,
        "acked": published.acked,
        "refused": published.refused,
        "publish_seconds": stats::round3(publish_end.saturating_sub(start).as_secs_f64()),
        "publish_msgs_per_sec": stats::rate(publish_ok, start, publish_end),
    }) else {
        unreachable!("json! of an object literal")
    };
    report.extend(stats::delivery_fields(
        &mut arrivals,
        start,
        args.rate,
        args.server_pid,
        server_before,
        &errors,
    ));
    stats::print_report(report)
}

fn payload(ctx: &Ctx, seq: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(ctx.size);
    b.put_u64(ctx.schedule.stamp(seq).as_nanos() as u64);
    b.put_u64(seq as u64);
    b.resize(ctx.size, b'x');
    b.freeze()
}

async fn publisher(conn: Conn, index: usize, ctx: Arc<Ctx>) -> PubResult {
    let mut p = WindowedPublisher::new(conn, ctx.window);
    let outcome = publish_all(&mut p, index, &ctx).await;
    if let Err(e) = outcome {
        ctx.error(format!("publisher {index}: {e:#}"));
    }
    p.disconnect().await;
    let finished = if ctx.qos == QoS::AtMostOnce {
        Some(ctx.schedule.now())
    } else {
        p.counts
            .last_ack
            .map(|t| t.into_std().saturating_duration_since(ctx.schedule.base))
    };
    if p.counts.refused > 0 {
        ctx.error(format!(
            "publisher {index}: {} PUBACKs refused, first reason {:#04x}",
            p.counts.refused,
            p.counts.first_refusal.unwrap_or(0)
        ));
    }
    PubResult {
        sent: p.counts.sent,
        acked: p.counts.acked,
        refused: p.counts.refused,
        finished,
    }
}

async fn publish_all(p: &mut WindowedPublisher, index: usize, ctx: &Ctx) -> anyhow::Result<()> {
    let own_topic = format!("{}/p{index}", ctx.prefix);
    for seq in seqs_of(index, ctx.publishers, ctx.messages) {
        if let Some(due) = ctx.schedule.due_instant(seq) {
            p.acks_until(due).await?;
        }
        let topic = match ctx.routing {
            Routing::All => own_topic.clone(),
            Routing::One => format!("{}/s{}", ctx.prefix, seq % ctx.subscribers),
        };
        p.publish(&topic, ctx.qos, Properties::default(), payload(ctx, seq))
            .await?;
    }
    p.finish().await
}

async fn subscriber(
    mut conn: Conn,
    index: usize,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) -> Arrivals {
    let mut arrivals = Arrivals::new(ctx.expected());
    let per_subscriber = match ctx.routing {
        Routing::All => ctx.messages,
        Routing::One => seqs_of(index, ctx.subscribers, ctx.messages).count(),
    };
    let outcome = mqtt_client::receive(&mut conn, &mut stop, |p| {
        let now = ctx.schedule.now();
        match decode_header(&p.payload) {
            Some((sent, seq)) => {
                let slot = match ctx.routing {
                    Routing::All => seq
                        .saturating_mul(ctx.subscribers as u64)
                        .saturating_add(index as u64),
                    Routing::One => seq,
                };
                arrivals.record(slot, sent, now);
            }
            None => ctx.error(format!("subscriber {index}: short payload on {}", p.topic)),
        }
        arrivals.unique >= per_subscriber
    })
    .await;
    if let Err(e) = outcome {
        ctx.error(format!("subscriber {index}: {e:#}"));
    }
    mqtt_client::disconnect(&mut conn).await;
    arrivals
}

/// (send time since the clock base, sequence number) of a payload.
fn decode_header(payload: &[u8]) -> Option<(Duration, u64)> {
    let ts = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((Duration::from_nanos(ts), seq))
}
