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

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use imgate_codecs::mqtt::{Properties, QoS};
use serde_json::json;

use crate::admin::AdminConn;
use crate::im_run::{self, ImRun, Issued, LoadArgs, SenderPlan, SenderTotals};
use crate::inbox::InboxRun;
use crate::mqtt_client::{self, Login, WindowedPublisher};
/// The `im/send` topic (DESIGN §5.3).
const SEND_TOPIC: &str = "im/send";

#[derive(Args, Debug)]
pub struct ImArgs {
    /// imgate's MQTT listener.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// The receivers' MQTT port, when they connect to another node of the
    /// cluster than the senders (default: `--port`).
    #[arg(long)]
    pub receiver_port: Option<u16>,
    #[command(flatten)]
    pub admin: AdminConn,
    /// Sending users, one MQTT connection each.
    #[arg(long, default_value_t = 100)]
    pub senders: usize,
    #[command(flatten)]
    pub load: LoadArgs,
    /// MQTT protocol level of the senders: 5 shows refusals as PUBACK
    /// reason codes, 4 cannot (a refused message then counts as lost).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub mqtt_version: u8,
}

pub fn run(args: ImArgs) -> anyhow::Result<()> {
    let users = im_run::issue_users(&args.admin, "im", args.senders, &args.load)?;
    im_run::block_on(run_async(args, users))?
}

async fn run_async(args: ImArgs, users: Issued) -> anyhow::Result<()> {
    let load = &args.load;
    let addr = format!("{}:{}", args.host, args.port);
    let receiver_addr = format!("{}:{}", args.host, args.receiver_port.unwrap_or(args.port));
    let base = Instant::now();
    let inboxes = im_run::open_inboxes(&receiver_addr, &users.receivers, load).await?;
    let version = mqtt_client::version_of(args.mqtt_version);
    let mut publishers = Vec::with_capacity(users.senders.len());
    for cred in &users.senders {
        let login = Login {
            username: Some(cred.user.clone()),
            password: Some(cred.token.clone()),
            client_id: cred.device.clone(),
        };
        let conn = mqtt_client::connect(&addr, version, &login, false).await?;
        publishers.push(WindowedPublisher::new(conn, load.window));
    }
    let im_run = ImRun::begin(load, base);
    let receiving = im_run.spawn_inboxes(inboxes);
    let targets = users.receivers.iter().map(|c| c.user.clone()).collect();
    let sending = im_run.spawn_senders(load, &users.run_id, targets, publishers, sender);
    let own = json!({
        "tool": "im",
        "target": addr,
        "receiver_target": receiver_addr,
        "sender_protocol": "mqtt",
        "mqtt_version": args.mqtt_version,
        "senders": args.senders,
    });
    im_run.finish(load, sending, receiving, true, own).await
}

async fn sender(mut p: WindowedPublisher, plan: SenderPlan, run: Arc<InboxRun>) -> SenderTotals {
    if let Err(e) = send_all(&mut p, &plan, &run).await {
        run.error(format!("sender {}: {e:#}", plan.index));
    }
    if p.counts.refused > 0 {
        run.error(format!(
            "sender {}: {} sends refused, first PUBACK reason {:#04x}",
            plan.index,
            p.counts.refused,
            p.counts.first_refusal.unwrap_or(0)
        ));
    }
    p.disconnect().await;
    SenderTotals::of(&p.counts, run.schedule.base)
}

async fn send_all(
    p: &mut WindowedPublisher,
    plan: &SenderPlan,
    run: &InboxRun,
) -> anyhow::Result<()> {
    for seq in plan.seqs() {
        if let Some(due) = run.schedule.due_instant(seq) {
            p.acks_until(due).await?;
        }
        let to = plan.target(seq);
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
