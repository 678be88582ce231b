//! `imgate-bench pb`: the durable IM path from the private binary protocol
//! (DESIGN §5.2) to MQTT, PB → MQTT. N PB senders, each its own user with a
//! token from the admin API, log in (LoginRequest) and send SendRequests
//! with at most `--window` unanswered per connection (a SendResponse with
//! code 0 is the durable ack); M MQTT receivers subscribe
//! `im/inbox/<user>` and PUBACK every delivery (`inbox`). Message `seq`
//! goes from sender `seq mod N` to receiver `seq mod M`, its text is the
//! `im_payload` stamp. Flood by default, `--rate R` paces (`schedule`).
//! The report line has the fields of `im`'s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use futures_util::{FutureExt, SinkExt, StreamExt};
use imgate_codecs::mqtt::Version;
use imgate_codecs::pb::{proto, PbFrame, PbFramer, PbRequest, PbServerMessage};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use crate::admin::{AdminConn, Credential};
use crate::inbox::{self, InboxRun};
use crate::schedule::{seqs_of, Schedule};
use crate::stats::{self, Arrivals, ProcSample};

/// Time between the last connection being up and the first message due.
const PACED_START: Duration = Duration::from_millis(100);
/// A paced run is "sustained" when deliveries kept at least this share of
/// the offered rate and nothing was lost.
const SUSTAINED_SHARE: f64 = 0.95;
/// Bounded wait for a LoginResponse or the next SendResponse.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest frame accepted from the server.
const MAX_FRAME: usize = 1 << 20;
/// The platform of the admin API's tokens (3 = pc).
const PLATFORM_PC: i32 = 3;

#[derive(Args, Debug)]
pub struct PbArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// imgate's PB listener.
    #[arg(long, default_value_t = 8100)]
    pub port: u16,
    /// imgate's MQTT listener (the receivers).
    #[arg(long, default_value_t = 1883)]
    pub mqtt_port: u16,
    #[command(flatten)]
    pub admin: AdminConn,
    #[arg(long, default_value_t = 100)]
    pub senders: usize,
    #[arg(long, default_value_t = 10)]
    pub receivers: usize,
    /// Total messages over all senders.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Text bytes per message (`searchable_content`).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Unanswered SendRequests per connection.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Messages per second in total (paced mode); omit to flood.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long receivers may still wait after the last send was acked.
    #[arg(long, default_value_t = 10)]
    pub wait_secs: u64,
    #[arg(long, default_value = "")]
    pub label: String,
    /// The gateway's process id: report its CPU per delivered message and RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

pub fn run(args: PbArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.senders > 0, "--senders must be at least 1");
    anyhow::ensure!(args.receivers > 0, "--receivers must be at least 1");
    let run_id = crate::admin::run_id();
    let admin = args.admin.client()?;
    let mut users: Vec<String> = (0..args.receivers)
        .map(|j| format!("pb-{run_id}-r{j}"))
        .collect();
    users.extend((0..args.senders).map(|i| format!("pb-{run_id}-s{i}")));
    let mut creds = admin.credentials(users)?;
    let senders = creds.split_off(args.receivers);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, run_id, creds, senders))
}

async fn run_async(
    args: PbArgs,
    run_id: String,
    receivers: Vec<Credential>,
    senders: Vec<Credential>,
) -> anyhow::Result<()> {
    let pb_addr = format!("{}:{}", args.host, args.port);
    let mqtt_addr = format!("{}:{}", args.host, args.mqtt_port);
    let base = std::time::Instant::now();
    let mut inboxes = Vec::with_capacity(receivers.len());
    for (j, cred) in receivers.iter().enumerate() {
        let expects = seqs_of(j, args.receivers, args.messages).count();
        inboxes.push(inbox::open(&mqtt_addr, Version::V5, cred, expects).await?);
    }
    let mut clients = Vec::with_capacity(senders.len());
    for cred in &senders {
        clients.push(PbSender::login(&pb_addr, cred, args.window).await?);
    }
    let server_before = args.server_pid.and_then(ProcSample::read);
    let started = base.elapsed();
    let start = started
        + if args.rate.is_some() {
            PACED_START
        } else {
            Duration::ZERO
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
    let targets: Arc<Vec<String>> = Arc::new(receivers.into_iter().map(|c| c.user).collect());
    let sending: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let plan = SenderPlan {
                index: i,
                senders: args.senders,
                messages: args.messages,
                size: args.size,
                run_id: run_id.clone(),
                targets: targets.clone(),
            };
            tokio::spawn(sender(c, plan, run.clone()))
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
        .map(|r| all_arrived && delivered_rate >= r * SUSTAINED_SHARE);
    let errors = run.errors.lock().map(|v| v.clone()).unwrap_or_default();
    let report = json!({
        "tool": "pb",
        "label": args.label,
        "target": pb_addr,
        "sender_protocol": "pb",
        "receiver_protocol": "mqtt",
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
    targets: Arc<Vec<String>>,
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

async fn sender(mut p: PbSender, plan: SenderPlan, run: Arc<InboxRun>) -> SenderTotals {
    if let Err(e) = send_all(&mut p, &plan, &run).await {
        run.error(format!("pb sender {}: {e:#}", plan.index));
    }
    if let Some(code) = p.first_refusal {
        run.error(format!(
            "pb sender {}: {} sends refused, first code {code}",
            plan.index, p.refused
        ));
    }
    SenderTotals {
        sent: p.sent,
        acked: p.acked,
        refused: p.refused,
        last_ack: p
            .last_ack
            .map(|t| t.into_std().saturating_duration_since(run.schedule.base)),
    }
}

async fn send_all(p: &mut PbSender, plan: &SenderPlan, run: &InboxRun) -> anyhow::Result<()> {
    for seq in seqs_of(plan.index, plan.senders, plan.messages) {
        if let Some(due) = run.schedule.due_instant(seq) {
            p.replies_until(due).await?;
        }
        let to = &plan.targets[seq % plan.targets.len()];
        let text = crate::im_payload::text(seq, run.schedule.stamp(seq), plan.size);
        p.send(proto::SendRequest {
            client_msg_id: format!("{}-{seq}", plan.run_id),
            conversation: Some(proto::Conversation {
                r#type: 0,
                target: to.clone(),
                line: 0,
            }),
            payload: Some(proto::MessagePayload {
                r#type: 1,
                searchable_content: text,
                ..Default::default()
            }),
            to_users: vec![],
        })
        .await?;
    }
    p.finish().await
}

/// A logged-in PB connection that keeps at most `window` SendRequests
/// unanswered (a pipelined session, not one message per round trip).
struct PbSender {
    conn: Framed<TcpStream, PbFramer>,
    window: usize,
    /// `in_flight[seq]`: a SendRequest with this seq awaits its response.
    in_flight: Vec<bool>,
    in_flight_count: usize,
    last_seq: u16,
    unflushed: bool,
    sent: usize,
    acked: usize,
    refused: usize,
    first_refusal: Option<i32>,
    last_ack: Option<Instant>,
}

impl PbSender {
    /// Connect and log in with the credential's token; fails unless the
    /// LoginResponse says 0.
    async fn login(addr: &str, cred: &Credential, window: usize) -> anyhow::Result<PbSender> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut p = PbSender {
            conn: Framed::new(stream, PbFramer::new(MAX_FRAME)),
            window: window.clamp(1, usize::from(u16::MAX) - 1),
            in_flight: vec![false; usize::from(u16::MAX) + 1],
            in_flight_count: 0,
            last_seq: 0,
            unflushed: false,
            sent: 0,
            acked: 0,
            refused: 0,
            first_refusal: None,
            last_ack: None,
        };
        let login = PbRequest::Login(proto::LoginRequest {
            user_id: cred.user.clone(),
            token: cred.token.clone(),
            client_id: cred.device.clone(),
            platform: PLATFORM_PC,
        });
        let seq = p.take_seq();
        p.conn.send(login.to_frame(seq)).await?;
        loop {
            let (frame_seq, msg) = p.next_message("LoginResponse").await?;
            match msg {
                PbServerMessage::LoginResponse(r) if r.code == 0 => break,
                PbServerMessage::LoginResponse(r) => {
                    bail!("PB login of {} refused: code {}", cred.user, r.code)
                }
                PbServerMessage::Error(e) if frame_seq == seq => {
                    bail!(
                        "PB login of {} refused: {} {}",
                        cred.user,
                        e.code,
                        e.message
                    )
                }
                _ => {}
            }
        }
        p.in_flight[usize::from(seq)] = false;
        p.in_flight_count = 0;
        Ok(p)
    }

    /// The next decoded server frame within [`REPLY_TIMEOUT`].
    async fn next_message(&mut self, what: &str) -> anyhow::Result<(u16, PbServerMessage)> {
        match tokio::time::timeout(REPLY_TIMEOUT, self.conn.next()).await {
            Err(_) => bail!("no {what} within {REPLY_TIMEOUT:?}"),
            Ok(frame) => decode(frame),
        }
    }

    fn take_seq(&mut self) -> u16 {
        loop {
            self.last_seq = self.last_seq.wrapping_add(1);
            if self.last_seq != 0 && !self.in_flight[usize::from(self.last_seq)] {
                self.in_flight[usize::from(self.last_seq)] = true;
                self.in_flight_count += 1;
                return self.last_seq;
            }
        }
    }

    async fn send(&mut self, req: proto::SendRequest) -> anyhow::Result<()> {
        while self.in_flight_count >= self.window {
            self.flush().await?;
            let got = self.next_message("SendResponse").await?;
            self.on_message(got).await?;
        }
        let seq = self.take_seq();
        self.conn.feed(PbRequest::Send(req).to_frame(seq)).await?;
        self.unflushed = true;
        self.sent += 1;
        // Take whatever replies already arrived, without waiting.
        while let Some(frame) = self.conn.next().now_or_never() {
            let got = decode(frame)?;
            self.on_message(got).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.unflushed {
            self.conn.flush().await?;
            self.unflushed = false;
        }
        Ok(())
    }

    /// Apply replies until `deadline` (paced: the next message's due time).
    async fn replies_until(&mut self, deadline: Instant) -> anyhow::Result<()> {
        self.flush().await?;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                frame = self.conn.next() => {
                    let got = decode(frame)?;
                    self.on_message(got).await?;
                    self.flush().await?;
                }
            }
        }
    }

    /// Flush and wait (bounded per reply) until nothing is in flight.
    async fn finish(&mut self) -> anyhow::Result<()> {
        self.flush().await?;
        while self.in_flight_count > 0 {
            let got = self.next_message("SendResponse").await?;
            self.on_message(got).await?;
            self.flush().await?;
        }
        Ok(())
    }

    async fn on_message(&mut self, (seq, msg): (u16, PbServerMessage)) -> anyhow::Result<()> {
        let code = match msg {
            PbServerMessage::SendResponse(r) => r.code,
            PbServerMessage::Error(e) if seq == 0 => {
                bail!("server error {}: {}", e.code, e.message)
            }
            PbServerMessage::Error(e) => e.code,
            // A copy of our own message on another device would come this
            // way: ack it like a client would.
            PbServerMessage::Deliver(d) => {
                if let Some(m) = d.message {
                    let ack = PbRequest::DeliverAck(proto::DeliverAck {
                        message_id: m.message_id,
                    });
                    self.conn.feed(ack.to_frame(0)).await?;
                    self.unflushed = true;
                }
                return Ok(());
            }
            PbServerMessage::Kick(k) => bail!("kicked: {} {}", k.code, k.reason),
            _ => return Ok(()),
        };
        let slot = &mut self.in_flight[usize::from(seq)];
        if !*slot {
            bail!("a reply to seq {seq}, which is not in flight (code {code})");
        }
        *slot = false;
        self.in_flight_count -= 1;
        if code == 0 {
            self.acked += 1;
            self.last_ack = Some(Instant::now());
        } else {
            self.refused += 1;
            self.first_refusal.get_or_insert(code);
        }
        Ok(())
    }
}

/// A server frame as (seq, message); closed streams and bad frames fail.
fn decode(
    frame: Option<Result<PbFrame, imgate_codecs::pb::PbCodecError>>,
) -> anyhow::Result<(u16, PbServerMessage)> {
    match frame {
        None => bail!("the server closed the connection"),
        Some(Err(e)) => bail!("bad frame from the server: {e}"),
        Some(Ok(f)) => {
            let msg = PbServerMessage::decode(&f).context("an undecodable server frame")?;
            Ok((f.seq, msg))
        }
    }
}
