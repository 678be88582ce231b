//! `imgate-bench im`: the durable IM path over MQTT. N senders, each its
//! own user with a token from the admin API, publish the JSON send request
//! of DESIGN §5.5 to `im/send` at QoS 1 (at most `--window` unacked per
//! sender, so sessions are pipelined) to M receiver users, who subscribe
//! `im/inbox/<own user>` at QoS 1 and PUBACK every delivery (`inbox`).
//! Message `seq` goes from sender `seq mod N` to receiver `seq mod M`.
//!
//! Flood by default; `--rate R` paces R messages per second in total and
//! measures latency from each message's due time (`schedule`). Senders
//! speak MQTT 5 by default so a refused send shows as a PUBACK reason code.
//! The report is one JSON line: sent, acked, refused, delivered, lost,
//! duplicated, rates, latency percentiles, all_arrived, and with
//! `--server-pid` the server's CPU per delivered message and RSS.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use imgate_codecs::mqtt::{Properties, QoS, Version};
use serde_json::json;
use tokio::sync::watch;

use crate::admin::{AdminConn, Credential};
use crate::inbox::{self, InboxRun};
use crate::mqtt_client::{self, Login, WindowedPublisher};
use crate::schedule::{seqs_of, Schedule};
use crate::stats::{self, Arrivals, ProcSample};

/// Time between the last connection being up and the first message due.
const PACED_START: Duration = Duration::from_millis(100);
/// The `im/send` topic (DESIGN §5.3).
const SEND_TOPIC: &str = "im/send";

#[derive(Args, Debug)]
pub struct ImArgs {
    /// imgate's MQTT listener.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    #[command(flatten)]
    pub admin: AdminConn,
    /// Sending users, one MQTT connection each.
    #[arg(long, default_value_t = 100)]
    pub senders: usize,
    /// Receiving users, one MQTT connection each.
    #[arg(long, default_value_t = 10)]
    pub receivers: usize,
    /// Total messages over all senders.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Text bytes per message (`searchableContent`).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Unacknowledged `im/send` PUBLISHes per sender.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Messages per second in total (paced mode); omit to flood.
    #[arg(long)]
    pub rate: Option<f64>,
    /// MQTT protocol level of the senders: 5 shows refusals as PUBACK
    /// reason codes, 4 cannot (a refused message then counts as lost).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub mqtt_version: u8,
    /// How long receivers may still wait after the last send was acked.
    #[arg(long, default_value_t = 10)]
    pub wait_secs: u64,
    #[arg(long, default_value = "")]
    pub label: String,
    /// The gateway's process id: report its CPU per delivered message and RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

pub fn run(args: ImArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.senders > 0, "--senders must be at least 1");
    anyhow::ensure!(args.receivers > 0, "--receivers must be at least 1");
    let run_id = crate::admin::run_id();
    let admin = args.admin.client()?;
    let mut users: Vec<String> = (0..args.receivers)
        .map(|j| format!("im-{run_id}-r{j}"))
        .collect();
    users.extend((0..args.senders).map(|i| format!("im-{run_id}-s{i}")));
    let mut creds = admin.credentials(users)?;
    let senders = creds.split_off(args.receivers);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, run_id, creds, senders))
}

async fn run_async(
    args: ImArgs,
    run_id: String,
    receivers: Vec<Credential>,
    senders: Vec<Credential>,
) -> anyhow::Result<()> {
    let addr = format!("{}:{}", args.host, args.port);
    let base = Instant::now();
    let mut inboxes = Vec::with_capacity(receivers.len());
    for (j, cred) in receivers.iter().enumerate() {
        let expects = seqs_of(j, args.receivers, args.messages).count();
        inboxes.push(inbox::open(&addr, Version::V5, cred, expects).await?);
    }
    let version = mqtt_client::version_of(args.mqtt_version);
    let mut publishers = Vec::with_capacity(senders.len());
    for cred in &senders {
        let login = Login {
            username: Some(cred.user.clone()),
            password: Some(cred.token.clone()),
            client_id: cred.device.clone(),
        };
        let conn = mqtt_client::connect(&addr, version, &login, false).await?;
        publishers.push(WindowedPublisher::new(conn, args.window));
    }
    let server_before = args.server_pid.and_then(ProcSample::read);
    let started = base.elapsed();
    let start = if args.rate.is_some() {
        started + PACED_START
    } else {
        started
    };
    let run = Arc::new(InboxRun {
        messages: args.messages,
        schedule: Schedule::new(base, start, args.rate),
        errors: Mutex::new(Vec::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let receiving: Vec<_> = inboxes
        .into_iter()
        .map(|i| inbox::spawn(i, run.clone(), stop_rx.clone()))
        .collect();
    let receiver_users: Arc<Vec<String>> =
        Arc::new(receivers.into_iter().map(|c| c.user).collect());
    let sending: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let plan = SenderPlan {
                index: i,
                senders: args.senders,
                messages: args.messages,
                size: args.size,
                run_id: run_id.clone(),
                receivers: receiver_users.clone(),
            };
            tokio::spawn(sender(p, plan, run.clone()))
        })
        .collect();
    let mut totals = SenderTotals::default();
    for h in sending {
        totals.add(h.await.context("a sender task panicked")?);
    }
    inbox::stop_after(stop_tx, Duration::from_secs(args.wait_secs));
    let mut arrivals = Arrivals::new(args.messages);
    for h in receiving {
        arrivals.merge(h.await.context("a receiver task panicked")?);
    }
    let server = stats::server_report(args.server_pid, server_before, arrivals.unique);
    let ack_end = totals.last_ack.unwrap_or(start);
    let delivered_end = arrivals.last.unwrap_or(start);
    let delivered_rate = stats::rate(arrivals.unique, start, delivered_end);
    let all_arrived = arrivals.lost() == 0;
    let sustained = args
        .rate
        .map(|r| all_arrived && delivered_rate >= r * stats::SUSTAINED_SHARE);
    let errors = run.errors.lock().map(|v| v.clone()).unwrap_or_default();
    let report = json!({
        "tool": "im",
        "label": args.label,
        "target": addr,
        "sender_protocol": "mqtt",
        "mqtt_version": args.mqtt_version,
        "rate": args.rate,
        "senders": args.senders,
        "receivers": args.receivers,
        "messages": args.messages,
        "size": args.size,
        "window": args.window,
        "sent": totals.sent,
        "acked": totals.acked,
        "refused": totals.refused,
        "expected": arrivals.expected(),
        "delivered": arrivals.unique,
        "lost": arrivals.lost(),
        "duplicated": arrivals.duplicates,
        "unknown": arrivals.unknown,
        "ack_seconds": stats::round3(ack_end.saturating_sub(start).as_secs_f64()),
        "acked_msgs_per_sec": stats::rate(totals.acked, start, ack_end),
        "delivery_seconds": stats::round3(delivered_end.saturating_sub(start).as_secs_f64()),
        "delivered_msgs_per_sec": delivered_rate,
        "latency": stats::latency_ms(&mut arrivals.latencies_us),
        "all_arrived": all_arrived,
        "sustained": sustained,
        "server": server,
        "errors": errors.len(),
        "error_samples": errors.iter().take(5).collect::<Vec<_>>(),
    });
    println!(
        "{}",
        serde_json::to_string(&report).context("formatting the report")?
    );
    Ok(())
}

/// What one sender sends.
struct SenderPlan {
    index: usize,
    senders: usize,
    messages: usize,
    size: usize,
    run_id: String,
    receivers: Arc<Vec<String>>,
}

#[derive(Default)]
struct SenderTotals {
    sent: usize,
    acked: usize,
    refused: usize,
    last_ack: Option<Duration>,
}

impl SenderTotals {
    fn add(&mut self, o: SenderTotals) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.refused += o.refused;
        self.last_ack = self.last_ack.max(o.last_ack);
    }
}

async fn sender(mut p: WindowedPublisher, plan: SenderPlan, run: Arc<InboxRun>) -> SenderTotals {
    if let Err(e) = send_all(&mut p, &plan, &run).await {
        run.error(format!("sender {}: {e:#}", plan.index));
    }
    if p.refused > 0 {
        run.error(format!(
            "sender {}: {} sends refused, first PUBACK reason {:#04x}",
            plan.index,
            p.refused,
            p.first_refusal.unwrap_or(0)
        ));
    }
    p.disconnect().await;
    SenderTotals {
        sent: p.sent,
        acked: p.acked,
        refused: p.refused,
        last_ack: p
            .last_ack
            .map(|t| t.into_std().saturating_duration_since(run.schedule.base)),
    }
}

async fn send_all(
    p: &mut WindowedPublisher,
    plan: &SenderPlan,
    run: &InboxRun,
) -> anyhow::Result<()> {
    for seq in seqs_of(plan.index, plan.senders, plan.messages) {
        if let Some(due) = run.schedule.due_instant(seq) {
            p.acks_until(due).await?;
        }
        let to = &plan.receivers[seq % plan.receivers.len()];
        let text = crate::im_payload::text(seq, run.schedule.stamp(seq), plan.size);
        let body = crate::im_payload::send_request(to, &format!("{}-{seq}", plan.run_id), &text);
        let bytes = serde_json::to_vec(&body).context("encoding a send request")?;
        p.publish(
            SEND_TOPIC,
            QoS::AtLeastOnce,
            Properties::default(),
            Bytes::from(bytes),
        )
        .await?;
    }
    p.finish().await
}
