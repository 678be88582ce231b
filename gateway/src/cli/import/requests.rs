//! Import requests in flight: `parallel` worker threads, each POSTing one
//! batch at a time, at most `2 × parallel` batches submitted and not yet
//! taken back, and the answers handed back in submission order (so the id
//! map, the errors and the progress follow the file), whatever order the
//! server answers in. While one batch is being committed the next ones
//! are already read, sent and checked: the server's writer never waits
//! for the CLI.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Deserialize;

use super::lines::Kind;
use crate::cli::admin_client::AdminClient;

/// A line of a batch: its number and the id it is known by, or why it
/// was not sent (answered in its place, in order).
pub struct Line {
    pub number: usize,
    pub id: String,
    pub local_error: Option<(i64, String)>,
}

/// One request: lines of one kind and the JSON body carrying those sent.
pub struct Batch {
    pub seq: u64,
    pub kind: Kind,
    pub lines: Vec<Line>,
    pub body: Vec<u8>,
    /// Lines in the body (the others have a local error).
    pub sent: usize,
    /// File offset after the batch's last line (progress).
    pub end_offset: u64,
}

/// The server's answer for one item (message, group or user).
#[derive(Debug, Deserialize)]
pub struct ItemResult {
    pub code: i64,
    #[serde(default)]
    pub msg: String,
    #[serde(rename = "messageUid", default)]
    pub message_uid: Option<u64>,
    #[serde(default)]
    pub duplicate: bool,
}

#[derive(Deserialize)]
struct BatchResult {
    #[serde(default)]
    results: Vec<ItemResult>,
}

#[derive(Deserialize)]
struct Reply {
    code: i64,
    #[serde(default)]
    msg: String,
    result: Option<BatchResult>,
}

pub type Answer = anyhow::Result<Vec<ItemResult>>;

pub struct Requests {
    jobs: Option<SyncSender<Batch>>,
    answers: Receiver<(Batch, Answer)>,
    workers: Vec<JoinHandle<()>>,
    window: usize,
    in_flight: usize,
    next: u64,
    early: BTreeMap<u64, (Batch, Answer)>,
}

impl Requests {
    pub fn start(client: Arc<AdminClient>, parallel: usize) -> Self {
        let parallel = parallel.max(1);
        let (jobs, rx) = mpsc::sync_channel::<Batch>(parallel);
        let rx = Arc::new(Mutex::new(rx));
        let (tx, answers) = mpsc::channel();
        let workers = (0..parallel)
            .map(|_| {
                let (rx, tx, client) = (rx.clone(), tx.clone(), client.clone());
                std::thread::spawn(move || work(&client, &rx, &tx))
            })
            .collect();
        Requests {
            jobs: Some(jobs),
            answers,
            workers,
            window: 2 * parallel,
            in_flight: 0,
            next: 0,
            early: BTreeMap::new(),
        }
    }

    /// Submit a batch; when the window is full, first wait for the
    /// oldest answers, which are handed to `done` in order.
    pub fn submit(
        &mut self,
        batch: Batch,
        done: &mut impl FnMut(Batch, Answer) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        while self.in_flight >= self.window {
            self.take_one(done)?;
        }
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("import requests already stopped"))?;
        jobs.send(batch)
            .map_err(|_| anyhow::anyhow!("the import workers stopped"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Wait for every submitted batch (before a line of another kind, and
    /// at the end).
    pub fn drain(
        &mut self,
        done: &mut impl FnMut(Batch, Answer) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        while self.in_flight > 0 {
            self.take_one(done)?;
        }
        Ok(())
    }

    fn take_one(
        &mut self,
        done: &mut impl FnMut(Batch, Answer) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let (batch, answer) = self
            .answers
            .recv()
            .map_err(|_| anyhow::anyhow!("the import workers stopped"))?;
        self.early.insert(batch.seq, (batch, answer));
        while let Some((batch, answer)) = self.early.remove(&self.next) {
            self.next += 1;
            self.in_flight -= 1;
            done(batch, answer)?;
        }
        Ok(())
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn work(client: &AdminClient, jobs: &Mutex<Receiver<Batch>>, answers: &Sender<(Batch, Answer)>) {
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(batch) = next else { return };
        let answer = if batch.sent == 0 {
            Ok(Vec::new())
        } else {
            post(client, &batch)
        };
        if answers.send((batch, answer)).is_err() {
            return;
        }
    }
}

fn post(client: &AdminClient, batch: &Batch) -> Answer {
    let (path, _) = batch.kind.endpoint();
    let reply: Reply = client.call_raw(path, &batch.body)?;
    if reply.code != 0 {
        anyhow::bail!("{path} failed: code {}: {}", reply.code, reply.msg);
    }
    let results = reply.result.map(|r| r.results).unwrap_or_default();
    if results.len() != batch.sent {
        anyhow::bail!(
            "{path}: the server answered {} results for {} lines",
            results.len(),
            batch.sent
        );
    }
    Ok(results)
}
