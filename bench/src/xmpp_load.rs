//! `imgate-bench xmpp`: XMPP chat load, against imgate or prosody. N sender
//! clients send `<message type='chat'>` stanzas whose `<body>` is the
//! `im_payload` text (sequence number + send time) to M receivers; message
//! `seq` goes from sender `seq mod N` to receiver `seq mod M` (the same
//! plan as `im`). Receivers are XMPP clients (available presence, SM acks
//! answered) or, on imgate with `--receiver-protocol mqtt`, MQTT inbox
//! subscribers (`inbox`), for XMPP → MQTT.
//!
//! Logins: on imgate each client is a fresh user whose token (admin API)
//! is the SASL PLAIN password and whose resource is the token's device; on
//! prosody (`--password`) the accounts `<prefix>s<i>` and `<prefix>r<j>`
//! that `bench/peers/prosody.sh` registered.
//!
//! Flow control: with XEP-0198 (both servers offer it) a sender keeps at
//! most `--window` messages that the server has not counted in an `<a h/>`
//! (imgate counts a message only once it is durable); without it, the
//! flood is bounded by TCP alone. Flood by default; `--rate R` paces R
//! messages per second in total and measures latency from due times
//! (`schedule`). The report line has the fields of `im`'s.

use std::collections::VecDeque;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use futures_util::FutureExt;
use imgate_codecs::mqtt::Version;
use imgate_codecs::xmpp::element::escape_attr_into;
use imgate_codecs::xmpp::{ns, Element};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::{AdminConn, Credential};
use crate::im_run::{self, ImRun, Issued, LoadArgs, SenderPlan, SenderTotals};
use crate::inbox::{self, InboxRun};
use crate::schedule::seqs_of;
use crate::stats::Arrivals;
use crate::xmpp_client::{Incoming, XmppConn, XmppLogin, REPLY_TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReceiverProtocol {
    Xmpp,
    /// MQTT `im/inbox/<user>` subscribers (imgate only).
    Mqtt,
}

#[derive(Args, Debug)]
pub struct XmppArgs {
    /// The XMPP server (imgate or prosody).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 5222)]
    pub port: u16,
    /// The XMPP domain (imgate's `xmpp_domain`, prosody's VirtualHost).
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Plain accounts (prosody): every account's password. Without it,
    /// imgate's admin API issues one user and token per client.
    #[arg(long, env = "IMGATE_BENCH_XMPP_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Plain accounts: senders are `<prefix>s<i>`, receivers `<prefix>r<j>`.
    #[arg(long, default_value = "bench")]
    pub account_prefix: String,
    #[command(flatten)]
    pub admin: AdminConn,
    #[arg(long, value_enum, default_value_t = ReceiverProtocol::Xmpp)]
    pub receiver_protocol: ReceiverProtocol,
    /// imgate's MQTT port, for `--receiver-protocol mqtt`.
    #[arg(long, default_value_t = 1883)]
    pub mqtt_port: u16,
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// One client's login and the bare JID others address it by.
struct Account {
    login: XmppLogin,
    /// imgate's MQTT login for an MQTT receiver.
    token: String,
}

pub fn run(args: XmppArgs) -> anyhow::Result<()> {
    im_run::check(args.senders, &args.load)?;
    anyhow::ensure!(
        !(args.password.is_some() && args.receiver_protocol == ReceiverProtocol::Mqtt),
        "--receiver-protocol mqtt needs imgate's admin API, not plain accounts"
    );
    let run_id = crate::admin::run_id();
    let (receivers, senders) = accounts(&args, &run_id)?;
    im_run::block_on(run_async(args, run_id, receivers, senders))?
}

/// (receivers, senders).
fn accounts(args: &XmppArgs, run_id: &str) -> anyhow::Result<(Vec<Account>, Vec<Account>)> {
    if let Some(password) = &args.password {
        let plain = |name: String| Account {
            login: XmppLogin {
                user: name,
                password: password.clone(),
                resource: format!("bench-{run_id}"),
            },
            token: String::new(),
        };
        let p = &args.account_prefix;
        return Ok((
            (0..args.load.receivers)
                .map(|j| plain(format!("{p}r{j}")))
                .collect(),
            (0..args.senders)
                .map(|i| plain(format!("{p}s{i}")))
                .collect(),
        ));
    }
    let Issued {
        receivers, senders, ..
    } = im_run::issue_users(&args.admin, "xm", args.senders, &args.load)?;
    let account = |c: Credential| Account {
        login: XmppLogin {
            user: c.user,
            password: c.token.clone(),
            resource: c.device,
        },
        token: c.token,
    };
    Ok((
        receivers.into_iter().map(account).collect(),
        senders.into_iter().map(account).collect(),
    ))
}

async fn run_async(
    args: XmppArgs,
    run_id: String,
    receivers: Vec<Account>,
    senders: Vec<Account>,
) -> anyhow::Result<()> {
    let load = &args.load;
    let addr = format!("{}:{}", args.host, args.port);
    let base = std::time::Instant::now();
    // Receivers first: connected and available before anything is sent.
    let mut xmpp_inboxes = Vec::new();
    let mut mqtt_inboxes = Vec::new();
    for (j, acc) in receivers.iter().enumerate() {
        let expects = seqs_of(j, load.receivers, load.messages).count();
        match args.receiver_protocol {
            ReceiverProtocol::Xmpp => {
                let mut c = XmppConn::login(&addr, &args.domain, &acc.login).await?;
                c.queue_stanza("<presence/>");
                ping_roundtrip(&mut c).await?;
                xmpp_inboxes.push((c, expects));
            }
            ReceiverProtocol::Mqtt => {
                let cred = crate::admin::Credential {
                    user: acc.login.user.clone(),
                    device: acc.login.resource.clone(),
                    token: acc.token.clone(),
                };
                let mqtt = format!("{}:{}", args.host, args.mqtt_port);
                mqtt_inboxes.push(inbox::open(&mqtt, Version::V5, &cred, expects).await?);
            }
        }
    }
    let mut clients = Vec::with_capacity(senders.len());
    for acc in &senders {
        clients.push(XmppConn::login(&addr, &args.domain, &acc.login).await?);
    }
    let stream_management = clients.iter().all(|c| c.sm);
    let im_run = ImRun::begin(load, base);
    let run = &im_run.inbox;
    let mut receiving: Vec<JoinHandle<Arrivals>> = Vec::new();
    for (c, expects) in xmpp_inboxes {
        receiving.push(tokio::spawn(receive(
            c,
            expects,
            run.clone(),
            im_run.stop_rx.clone(),
        )));
    }
    receiving.extend(im_run.spawn_inboxes(mqtt_inboxes));
    let jids = receivers
        .iter()
        .map(|a| format!("{}@{}", a.login.user, args.domain))
        .collect();
    let sending = im_run.spawn_senders(load, &run_id, jids, clients, sender);
    let own = json!({
        "tool": "xmpp",
        "target": addr,
        "sender_protocol": "xmpp",
        "receiver_protocol": match args.receiver_protocol {
            ReceiverProtocol::Xmpp => "xmpp",
            ReceiverProtocol::Mqtt => "mqtt",
        },
        "stream_management": stream_management,
        "senders": args.senders,
    });
    // Without XEP-0198 nothing counts the senders' messages: no acks.
    im_run
        .finish(load, sending, receiving, stream_management, own)
        .await
}

/// An XEP-0199 ping and its answer: once it is back, the server has
/// handled every stanza sent before it (e.g. the initial presence).
async fn ping_roundtrip(c: &mut XmppConn) -> anyhow::Result<()> {
    c.queue_stanza("<iq type='get' id='ready1'><ping xmlns='urn:xmpp:ping'/></iq>");
    c.flush().await?;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, c.next())
            .await
            .context("no ping answer in time")??;
        c.flush().await?;
        match next {
            None => anyhow::bail!("connection closed before the ping answer"),
            Some(Incoming::IqAnswer(id)) if id == "ready1" => return Ok(()),
            Some(_) => {}
        }
    }
}

/// A sender's connection and its messages not yet counted by the server.
struct Sending {
    conn: XmppConn,
    /// SM numbers of our messages the server has not counted yet.
    in_flight: VecDeque<u32>,
    handled: usize,
    totals: SenderTotals,
    run: Arc<InboxRun>,
    first_refusal: Option<String>,
}

impl Sending {
    /// Apply one thing the server sent.
    fn on(&mut self, ev: Incoming) {
        match ev {
            Incoming::Acked(h) => {
                while let Some(&n) = self.in_flight.front() {
                    if counted(h, n) {
                        self.in_flight.pop_front();
                        self.handled += 1;
                    } else {
                        break;
                    }
                }
                self.totals.last_ack = Some(self.run.schedule.now());
            }
            Incoming::Message(el) if el.get_attr("type") == Some("error") => {
                self.totals.refused += 1;
                if self.first_refusal.is_none() {
                    self.first_refusal = Some(el.to_xml());
                }
            }
            Incoming::Message(_) | Incoming::IqAnswer(_) | Incoming::Other => {}
        }
    }

    /// Read (bounded) one thing from the server and apply it.
    async fn read_one(&mut self) -> anyhow::Result<()> {
        let ev = tokio::time::timeout(REPLY_TIMEOUT, self.conn.next())
            .await
            .context("the server went silent with messages in flight")??
            .context("the server closed the stream")?;
        self.on(ev);
        self.conn.flush().await
    }

    /// Apply what the server sends until `deadline`.
    async fn read_until(&mut self, deadline: Instant) -> anyhow::Result<()> {
        self.conn.flush().await?;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                ev = self.conn.next() => {
                    let ev = ev?.context("the server closed the stream")?;
                    self.on(ev);
                    self.conn.flush().await?;
                }
            }
        }
    }
}

async fn sender(conn: XmppConn, plan: SenderPlan, run: Arc<InboxRun>) -> SenderTotals {
    let mut s = Sending {
        conn,
        in_flight: VecDeque::new(),
        handled: 0,
        totals: SenderTotals::default(),
        run: run.clone(),
        first_refusal: None,
    };
    if let Err(e) = send_all(&mut s, &plan).await {
        run.error(format!("xmpp sender {}: {e:#}", plan.index));
    }
    if let Some(first) = &s.first_refusal {
        run.error(format!(
            "xmpp sender {}: {} messages bounced, first: {first}",
            plan.index, s.totals.refused
        ));
    }
    s.conn.close().await;
    s.totals.acked = s.handled.saturating_sub(s.totals.refused);
    s.totals
}

async fn send_all(s: &mut Sending, plan: &SenderPlan) -> anyhow::Result<()> {
    // Ask for an ack every quarter window: acks flow while the window fills.
    let ask_every = (plan.window / 4).max(1);
    let schedule = s.run.schedule;
    for seq in plan.seqs() {
        if let Some(due) = schedule.due_instant(seq) {
            s.read_until(due).await?;
        }
        while s.conn.sm && s.in_flight.len() >= plan.window {
            s.conn.flush().await?;
            s.read_one().await?;
        }
        let to = plan.target(seq);
        let text = crate::im_payload::text(seq, schedule.stamp(seq), plan.size);
        s.conn.queue_stanza(&chat_message(to, seq, &text));
        s.totals.sent += 1;
        if s.conn.sm {
            s.in_flight.push_back(s.conn.sent_stanzas);
        }
        if s.totals.sent.is_multiple_of(ask_every) {
            s.conn.request_ack();
            s.conn.flush().await?;
        }
        // Apply whatever already arrived without waiting for it.
        while let Some(ev) = s.conn.next().now_or_never() {
            s.on(ev?.context("the server closed the stream")?);
        }
    }
    s.conn.request_ack();
    s.conn.flush().await?;
    while s.conn.sm && !s.in_flight.is_empty() {
        s.read_one().await?;
    }
    Ok(())
}

/// Whether an `<a h/>` counts our stanza number `n`: `h` counts every
/// stanza and wraps at 2^32 (XEP-0198 §4).
fn counted(h: u32, n: u32) -> bool {
    h.wrapping_sub(n) as i32 >= 0
}

/// `<message type='chat' to=... id=...><body>text</body></message>`.
fn chat_message(to: &str, seq: usize, text: &str) -> String {
    let mut m = String::with_capacity(text.len() + 96);
    m.push_str("<message type='chat' to='");
    escape_attr_into(&mut m, to);
    m.push_str("' id='m");
    m.push_str(&seq.to_string());
    m.push_str("'><body>");
    imgate_codecs::xmpp::element::escape_text_into(&mut m, text);
    m.push_str("</body></message>");
    m
}

/// Receive chat messages until all `expects` arrived or `stop` fires,
/// answering SM ack requests in batches.
async fn receive(
    mut c: XmppConn,
    expects: usize,
    run: Arc<InboxRun>,
    mut stop: watch::Receiver<bool>,
) -> Arrivals {
    let mut arrivals = Arrivals::new(run.messages);
    let on = |ev: Incoming, arrivals: &mut Arrivals| {
        let Incoming::Message(el) = ev else { return };
        let body = el.get_child("body", ns::CLIENT).map(Element::text_content);
        match body.as_deref().and_then(crate::im_payload::parse) {
            Some((sent, seq)) => arrivals.record(seq, sent, run.schedule.now()),
            None if el.get_attr("type") == Some("error") => {
                run.error(format!("xmpp receiver got an error: {}", el.to_xml()))
            }
            // Chat states, receipts, carbons of nothing we sent: not ours.
            None => {}
        }
    };
    let outcome: anyhow::Result<()> = async {
        while arrivals.unique < expects {
            let ev = tokio::select! {
                ev = c.next() => ev?,
                _ = stop.changed() => return Ok(()),
            };
            on(ev.context("the server closed the stream")?, &mut arrivals);
            while let Some(ev) = c.next().now_or_never() {
                on(ev?.context("the server closed the stream")?, &mut arrivals);
            }
            c.flush().await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        run.error(format!("xmpp receiver: {e:#}"));
    }
    // Let the server count the last deliveries before the stream closes.
    let _ = c.flush().await;
    c.close().await;
    arrivals
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use imgate_codecs::xmpp::{XmppEvent, XmppFramer, XmppNormalizer};
    use tokio_util::codec::Decoder;

    use super::*;

    #[test]
    fn chat_message_is_a_chat_stanza_imgate_reads_back() {
        let text = crate::im_payload::text(7, Duration::from_nanos(99), 40);
        let mut buf = BytesMut::from(
            "<stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
        );
        buf.extend_from_slice(chat_message("bob@localhost", 7, &text).as_bytes());
        let mut framer = XmppFramer::default();
        assert!(matches!(
            framer.decode(&mut buf),
            Ok(Some(XmppEvent::StreamOpen(_)))
        ));
        let Ok(Some(XmppEvent::Stanza(el))) = framer.decode(&mut buf) else {
            panic!("one stanza")
        };
        let draft = XmppNormalizer::new("localhost")
            .message_to_draft(&el, "alice")
            .ok()
            .flatten()
            .expect("a draft");
        assert_eq!(draft.conversation.target, "bob");
        assert_eq!(draft.client_msg_id, "m7");
        let parsed = crate::im_payload::parse(&draft.payload.searchable_content);
        assert_eq!(parsed, Some((Duration::from_nanos(99), 7)));
    }

    #[test]
    fn acks_count_across_the_wrap() {
        assert!(counted(5, 5) && counted(6, 5) && !counted(4, 5));
        assert!(counted(2, u32::MAX) && !counted(u32::MAX, 2));
    }
}
