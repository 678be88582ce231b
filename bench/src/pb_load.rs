//! `imgate-bench pb`: the durable IM path from the private binary protocol
//! (DESIGN §5.2) to MQTT, PB → MQTT. N PB senders, each its own user with a
//! token from the admin API, log in (LoginRequest) and send SendRequests
//! with at most `--window` unanswered per connection (a SendResponse with
//! code 0 is the durable ack); M MQTT receivers subscribe
//! `im/inbox/<user>` and PUBACK every delivery (`inbox`). Message `seq`
//! goes from sender `seq mod N` to receiver `seq mod M`, its text is the
//! `im_payload` stamp. Flood by default, `--rate R` paces (`schedule`).
//! The report line has the fields of `im`'s.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use futures_util::{FutureExt, SinkExt, StreamExt};
use imgate_codecs::pb::{proto, PbFrame, PbFramer, PbRequest, PbServerMessage};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use crate::admin::{AdminConn, Credential};
use crate::im_run::{self, ImRun, Issued, LoadArgs, SenderPlan, SenderTotals};
use crate::inbox::InboxRun;
use crate::window::{InFlight, SendCounts};
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
    #[command(flatten)]
    pub load: LoadArgs,
}

pub fn run(args: PbArgs) -> anyhow::Result<()> {
    let users = im_run::issue_users(&args.admin, "pb", args.senders, &args.load)?;
    im_run::block_on(run_async(args, users))?
}

async fn run_async(args: PbArgs, users: Issued) -> anyhow::Result<()> {
    let load = &args.load;
    let pb_addr = format!("{}:{}", args.host, args.port);
    let mqtt_addr = format!("{}:{}", args.host, args.mqtt_port);
    let base = std::time::Instant::now();
    let inboxes = im_run::open_inboxes(&mqtt_addr, &users.receivers, load).await?;
    let mut clients = Vec::with_capacity(users.senders.len());
    for cred in &users.senders {
        clients.push(PbSender::login(&pb_addr, cred, load.window).await?);
    }
    let im_run = ImRun::begin(load, base);
    let receiving = im_run.spawn_inboxes(inboxes);
    let targets = users.receivers.iter().map(|c| c.user.clone()).collect();
    let sending = im_run.spawn_senders(load, &users.run_id, targets, clients, sender);
    let own = json!({
        "tool": "pb",
        "target": pb_addr,
        "sender_protocol": "pb",
        "receiver_protocol": "mqtt",
        "senders": args.senders,
    });
    im_run.finish(load, sending, receiving, true, own).await
}

async fn sender(mut p: PbSender, plan: SenderPlan, run: Arc<InboxRun>) -> SenderTotals {
    if let Err(e) = send_all(&mut p, &plan, &run).await {
        run.error(format!("pb sender {}: {e:#}", plan.index));
    }
    if let Some(code) = p.counts.first_refusal {
        run.error(format!(
            "pb sender {}: {} sends refused, first code {code}",
            plan.index, p.counts.refused
        ));
    }
    SenderTotals::of(&p.counts, run.schedule.base)
}

async fn send_all(p: &mut PbSender, plan: &SenderPlan, run: &InboxRun) -> anyhow::Result<()> {
    for seq in plan.seqs() {
        if let Some(due) = run.schedule.due_instant(seq) {
            p.replies_until(due).await?;
        }
        let to = plan.target(seq);
        let text = crate::im_payload::text(seq, run.schedule.stamp(seq), plan.size);
        p.send(proto::SendRequest {
            client_msg_id: format!("{}-{seq}", plan.run_id),
            conversation: Some(proto::Conversation {
                r#type: 0,
                target: to.to_owned(),
                line: 0,
            }),
            payload: Some(proto::MessagePayload {
                r#type: 1,
                searchable_content: text,
                // 3: an ordinary message (0, the proto3 default, is live only).
                persist_flag: 3,
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
    /// Seqs of SendRequests awaiting their response.
    in_flight: InFlight,
    unflushed: bool,
    /// Refusals are SendResponses (or errors) with a nonzero code.
    counts: SendCounts<i32>,
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
            in_flight: InFlight::new(window),
            unflushed: false,
            counts: SendCounts::default(),
        };
        let login = PbRequest::Login(proto::LoginRequest {
            user_id: cred.user.clone(),
            token: cred.token.clone(),
            client_id: cred.device.clone(),
            platform: PLATFORM_PC,
        });
        let seq = p.in_flight.take();
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
        p.in_flight.release(seq);
        Ok(p)
    }

    /// The next decoded server frame within [`REPLY_TIMEOUT`].
    async fn next_message(&mut self, what: &str) -> anyhow::Result<(u16, PbServerMessage)> {
        match tokio::time::timeout(REPLY_TIMEOUT, self.conn.next()).await {
            Err(_) => bail!("no {what} within {REPLY_TIMEOUT:?}"),
            Ok(frame) => decode(frame),
        }
    }

    async fn send(&mut self, req: proto::SendRequest) -> anyhow::Result<()> {
        while self.in_flight.is_full() {
            self.flush().await?;
            let got = self.next_message("SendResponse").await?;
            self.on_message(got).await?;
        }
        let seq = self.in_flight.take();
        self.conn.feed(PbRequest::Send(req).to_frame(seq)).await?;
        self.unflushed = true;
        self.counts.sent += 1;
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
        while !self.in_flight.is_empty() {
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
        if !self.in_flight.release(seq) {
            bail!("a reply to seq {seq}, which is not in flight (code {code})");
        }
        if code == 0 {
            self.counts.acked += 1;
            self.counts.last_ack = Some(Instant::now());
        } else {
            self.counts.refuse(code);
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
