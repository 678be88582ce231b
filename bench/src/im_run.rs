//! What the IM-path loaders (`im`, `pb`, `xmpp`) share around their
//! senders: the common arguments, the users issued by the admin API, the
//! MQTT inbox receivers, the senders' plans and totals, the run's start
//! and stop, and the report line (the fields of `im`'s report).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use imgate_codecs::mqtt::Version;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{AdminConn, Credential};
use crate::inbox::{self, Inbox, InboxRun};
use crate::schedule::{self, seqs_of, Schedule};
use crate::stats::{self, Arrivals, ProcSample};
use crate::window::SendCounts;

/// The arguments every IM-path loader takes besides its senders.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Receiving users, one connection each.
    #[arg(long, default_value_t = 10)]
    pub receivers: usize,
    /// Total messages over all senders.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Text bytes per message (the `im_payload` text).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Messages per sender not yet answered by the server (MQTT: PUBACK,
    /// PB: SendResponse, XMPP: counted by XEP-0198).
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
    /// The server's process id: report its CPU per delivered message and RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// The users of one run, from [`issue_users`].
pub struct Issued {
    /// Makes users and client message ids unique across runs.
    pub run_id: String,
    pub receivers: Vec<Credential>,
    pub senders: Vec<Credential>,
}

/// Check the sizes and issue (admin API) one fresh user per connection,
/// named `<prefix>-<run_id>-r<j>` and `<prefix>-<run_id>-s<i>`.
pub fn issue_users(
    admin: &AdminConn,
    prefix: &str,
    senders: usize,
    load: &LoadArgs,
) -> anyhow::Result<Issued> {
    check(senders, load)?;
    let run_id = crate::admin::run_id();
    let mut users: Vec<String> = (0..load.receivers)
        .map(|j| format!("{prefix}-{run_id}-r{j}"))
        .collect();
    users.extend((0..senders).map(|i| format!("{prefix}-{run_id}-s{i}")));
    let mut receivers = admin.client()?.credentials(users)?;
    let senders = receivers.split_off(load.receivers);
    Ok(Issued {
        run_id,
        receivers,
        senders,
    })
}

/// The checks every IM-path loader makes of its sizes.
pub fn check(senders: usize, load: &LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(senders > 0, "--senders must be at least 1");
    anyhow::ensure!(load.receivers > 0, "--receivers must be at least 1");
    Ok(())
}

/// Log every receiver in over MQTT at `addr` and subscribe its inbox;
/// receiver `j` expects the messages `seq` with `seq mod receivers == j`.
pub async fn open_inboxes(
    addr: &str,
    receivers: &[Credential],
    load: &LoadArgs,
) -> anyhow::Result<Vec<Inbox>> {
    let mut inboxes = Vec::with_capacity(receivers.len());
    for (j, cred) in receivers.iter().enumerate() {
        let expects = seqs_of(j, load.receivers, load.messages).count();
        inboxes.push(inbox::open(addr, Version::V5, cred, expects).await?);
    }
    Ok(inboxes)
}

/// Run `f` on a multi-threaded tokio runtime.
pub fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(f))
}

/// What one sender sends: message `seq` goes from sender `seq mod
/// senders` to `targets[seq mod targets.len()]`.
pub struct SenderPlan {
    pub index: usize,
    pub senders: usize,
    pub messages: usize,
    pub size: usize,
    /// Makes client message ids unique across runs.
    pub run_id: String,
    /// Messages in flight per sender, at least 1.
    pub window: usize,
    pub targets: Arc<Vec<String>>,
}

impl SenderPlan {
    /// One plan per sender, addressing `targets` (the receivers in order).
    pub fn all(
        load: &LoadArgs,
        senders: usize,
        run_id: &str,
        targets: Vec<String>,
    ) -> Vec<SenderPlan> {
        let targets = Arc::new(targets);
        (0..senders)
            .map(|index| SenderPlan {
                index,
                senders,
                messages: load.messages,
                size: load.size,
                run_id: run_id.to_owned(),
                window: load.window.max(1),
                targets: targets.clone(),
            })
            .collect()
    }

    /// The sequence numbers this sender carries.
    pub fn seqs(&self) -> impl Iterator<Item = usize> {
        seqs_of(self.index, self.senders, self.messages)
    }

    /// Who message `seq` goes to.
    pub fn target(&self, seq: usize) -> &str {
        &self.targets[seq % self.targets.len()]
    }
}

/// What the senders of a run did, summed.
#[derive(Default)]
pub struct SenderTotals {
    pub sent: usize,
    /// Acknowledged by the server, refusals excluded.
    pub acked: usize,
    pub refused: usize,
    /// When the last ack arrived, since the run's clock base.
    pub last_ack: Option<Duration>,
}

impl SenderTotals {
    /// One sender's counts, its last ack measured from `base`.
    pub fn of<R>(counts: &SendCounts<R>, base: Instant) -> SenderTotals {
        SenderTotals {
            sent: counts.sent,
            acked: counts.acked,
            refused: counts.refused,
            last_ack: counts
                .last_ack
                .map(|t| t.into_std().saturating_duration_since(base)),
        }
    }

    pub fn add(&mut self, o: SenderTotals) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.refused += o.refused;
        self.last_ack = self.last_ack.max(o.last_ack);
    }
}

/// A run whose connections are all up: the shared state of its receivers
/// and senders, and the stop signal of its receivers.
pub struct ImRun {
    pub inbox: Arc<InboxRun>,
    pub start: Duration,
    server_before: Option<ProcSample>,
    stop_tx: watch::Sender<bool>,
    pub stop_rx: watch::Receiver<bool>,
}

impl ImRun {
    /// Call once every connection is up: samples the server and fixes when
    /// the first message is due.
    pub fn begin(load: &LoadArgs, base: Instant) -> ImRun {
        let server_before = load.server_pid.and_then(ProcSample::read);
        let start = schedule::start_of(base.elapsed(), load.rate);
        let (stop_tx, stop_rx) = watch::channel(false);
        ImRun {
            inbox: Arc::new(InboxRun {
                messages: load.messages,
                schedule: Schedule::new(base, start, load.rate),
                errors: Mutex::new(Vec::new()),
            }),
            start,
            server_before,
            stop_tx,
            stop_rx,
        }
    }

    /// Start receiving on every inbox (`inbox::spawn`).
    pub fn spawn_inboxes(&self, inboxes: Vec<Inbox>) -> Vec<JoinHandle<Arrivals>> {
        inboxes
            .into_iter()
            .map(|i| inbox::spawn(i, self.inbox.clone(), self.stop_rx.clone()))
            .collect()
    }

    /// Spawn one sender task per connection, sender `i` on `conns[i]`
    /// with its [`SenderPlan`] addressing `targets`.
    pub fn spawn_senders<C, F, Fut>(
        &self,
        load: &LoadArgs,
        run_id: &str,
        targets: Vec<String>,
        conns: Vec<C>,
        sender: F,
    ) -> Vec<JoinHandle<SenderTotals>>
    where
        F: Fn(C, SenderPlan, Arc<InboxRun>) -> Fut,
        Fut: Future<Output = SenderTotals> + Send + 'static,
    {
        let plans = SenderPlan::all(load, conns.len(), run_id, targets);
        conns
            .into_iter()
            .zip(plans)
            .map(|(c, plan)| tokio::spawn(sender(c, plan, self.inbox.clone())))
            .collect()
    }

    /// Wait for the senders, give the receivers `--wait-secs` more, and
    /// print the report line: `own` (the loader's fields: tool, target,
    /// protocols, senders) and the common ones. `acks_counted`: whether the
    /// senders' acks mean anything (else acked and the ack time are null).
    pub async fn finish(
        self,
        load: &LoadArgs,
        sending: Vec<JoinHandle<SenderTotals>>,
        receiving: Vec<JoinHandle<Arrivals>>,
        acks_counted: bool,
        own: Value,
    ) -> anyhow::Result<()> {
        let mut totals = SenderTotals::default();
        for h in sending {
            totals.add(h.await.context("a sender task panicked")?);
        }
        inbox::stop_after(self.stop_tx, Duration::from_secs(load.wait_secs));
        let mut arrivals = Arrivals::new(load.messages);
        for h in receiving {
            arrivals.merge(h.await.context("a receiver task panicked")?);
        }
        let start = self.start;
        let ack_end = totals.last_ack.unwrap_or(start);
        let acked = acks_counted.then_some(totals.acked);
        let errors = self.inbox.errors();
        let Value::Object(mut report) = own else {
            anyhow::bail!("a loader's own report fields are not an object");
        };
        let common = json!({
                "label": load.label,
                "rate": load.rate,
                "receivers": load.receivers,
                "messages": load.messages,
                "size": load.size,
                "window": load.window,
                "sent": totals.sent,
                "acked": acked,
                "refused": totals.refused,
                "ack_seconds": acked
                    .map(|_| stats::round3(ack_end.saturating_sub(start).as_secs_f64())),
                "acked_msgs_per_sec": acked.map(|n| stats::rate(n, start, ack_end)),
        });
        if let Value::Object(common) = common {
            report.extend(common);
        }
        report.extend(stats::delivery_fields(
            &mut arrivals,
            start,
            load.rate,
            load.server_pid,
            self.server_before,
            &errors,
        ));
        stats::print_report(report)
    }
}
