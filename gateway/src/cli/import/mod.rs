//! `imgate import FILE.jsonl`: migration into a running gateway through
//! its admin API (DESIGN §7–8, docs/migration.md).
//!
//! One JSON object per line. `"kind"` says what it is: `message`
//! (default; the §5.5 message shape, `messageUid` = the old id,
//! `timestamp` = its original time), `group` (the `/admin/group/create`
//! body: created, or its members added when it exists) or `user` (status
//! and rate limit, what imgate keeps per user). Lines are sent as they
//! are, in batches of one kind, several requests in flight
//! (`requests.rs`); a line of another kind waits for everything before
//! it, so groups exist before the messages after them.
//!
//! - `lines.rs`: the kind and id of a line, without building it;
//! - `requests.rs`: the pipelined requests, answers in file order;
//! - `id_map.rs`: `--id-map` (old id → new id) and `--resume`;
//! - `progress.rs`: the bar or plain progress lines, and the summary.
//!
//! Interrupted (Ctrl-C, crash, server gone), a re-run imports nothing
//! twice: the server maps old ids to the ids they got. With `--resume`
//! the lines already in the id map are skipped without being sent.

mod id_map;
mod lines;
mod progress;
mod requests;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use super::admin_client::AdminConn;
use id_map::IdMapWriter;
use lines::{peek, Kind, LineError};
use progress::{Counts, Progress};
use requests::{Answer, Batch, Line, Requests};

/// Bytes of JSON per import request, well under the server's default body
/// limit (1 MiB).
const MAX_REQUEST_BYTES: usize = 512 * 1024;
/// Code of a line the CLI could not read (DESIGN §4, invalid data).
const CODE_INVALID_DATA: i64 = 2;
/// Code of a line of an unknown kind (invalid parameter).
const CODE_INVALID_PARAMETER: i64 = 251;

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub conn: AdminConn,
    /// Lines per request (at most 1000, the server's limit).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// Requests in flight at once (1 = one after another).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Write old id → new id of every confirmed message here (JSON lines,
    /// see docs/migration.md).
    #[arg(long)]
    pub id_map: Option<PathBuf>,
    /// Continue an interrupted import: skip the messages already in the
    /// `--id-map` file and append to it.
    #[arg(long, requires = "id_map")]
    pub resume: bool,
    /// Seconds between progress lines when stderr is not a terminal (a
    /// terminal gets a progress bar).
    #[arg(long, default_value_t = 5)]
    pub progress_every: u64,
    /// A JSONL file: one message, group or user per line (blank lines are
    /// skipped).
    pub file: PathBuf,
}

/// Everything a run counted, and why lines were refused.
#[derive(Default)]
struct Tally {
    counts: Counts,
    refused_by_code: BTreeMap<i64, u64>,
    groups: u64,
    users: u64,
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let client = Arc::new(args.conn.client()?);
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let done_before: HashSet<String> = match (&args.id_map, args.resume) {
        (Some(path), true) => id_map::confirmed(path)?,
        _ => HashSet::new(),
    };
    let mut id_map = match &args.id_map {
        Some(path) => Some(IdMapWriter::open(path, args.resume)?),
        None => None,
    };
    let mut progress = Progress::new(total_bytes, Duration::from_secs(args.progress_every.max(1)));
    let mut tally = Tally::default();
    let mut requests = Requests::start(client, usize::from(args.parallel));
    let mut done = |batch: Batch, answer: Answer| {
        settle(&batch, answer, &mut tally, id_map.as_mut(), &progress)?;
        progress.update(batch.end_offset, &tally.counts);
        Ok(())
    };
    let mut builder = BatchBuilder::new(usize::from(args.batch));
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let (mut number, mut offset, mut skipped) = (0usize, 0u64, 0u64);
    let outcome: anyhow::Result<()> = (|| {
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .with_context(|| format!("reading line {}", number + 1))?;
            if n == 0 {
                break;
            }
            number += 1;
            offset += n as u64;
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            let (kind, entry) = match peek(text) {
                Ok(p) if p.kind == Kind::Message && done_before.contains(&p.id) => {
                    skipped += 1;
                    continue;
                }
                Ok(p) if text.len() > MAX_REQUEST_BYTES => (
                    p.kind,
                    Line {
                        number,
                        id: p.id,
                        local_error: Some((
                            CODE_INVALID_DATA,
                            format!("{} bytes, more than one request may carry", text.len()),
                        )),
                    },
                ),
                Ok(p) => (
                    p.kind,
                    Line {
                        number,
                        id: p.id,
                        local_error: None,
                    },
                ),
                Err(e) => {
                    let code = match e {
                        LineError::NotJson(_) => CODE_INVALID_DATA,
                        LineError::UnknownKind(_) => CODE_INVALID_PARAMETER,
                    };
                    let kind = builder.kind.unwrap_or(Kind::Message);
                    let local = Some((code, e.to_string()));
                    (
                        kind,
                        Line {
                            number,
                            id: String::new(),
                            local_error: local,
                        },
                    )
                }
            };
            if builder.kind.is_some_and(|k| k != kind) {
                if let Some(b) = builder.take(offset - n as u64) {
                    requests.submit(b, &mut done)?;
                }
                // Everything before a line of another kind is stored first.
                requests.drain(&mut done)?;
            }
            if !builder.fits(kind, text.len()) {
                if let Some(b) = builder.take(offset - n as u64) {
                    requests.submit(b, &mut done)?;
                }
            }
            builder.push(kind, entry, text);
        }
        if let Some(b) = builder.take(offset) {
            requests.submit(b, &mut done)?;
        }
        requests.drain(&mut done)
    })();
    drop(requests);
    tally.counts.skipped = skipped;
    let elapsed = progress.finish(&tally.counts);
    let c = &tally.counts;
    let refused: BTreeMap<String, u64> = tally
        .refused_by_code
        .iter()
        .map(|(code, n)| (code.to_string(), *n))
        .collect();
    println!(
        "{}",
        json!({
            "imported": c.imported,
            "duplicates": c.duplicates,
            "failed": c.refused,
            "refused": refused,
            "skipped": c.skipped,
            "groups": tally.groups,
            "users": tally.users,
            "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "perSecond": progress::rate(c, elapsed).round() as u64,
        })
    );
    if let Err(e) = outcome {
        let hint = match &args.id_map {
            Some(map) => format!(
                "re-run with --resume --id-map {} to continue",
                map.display()
            ),
            None => "re-running imports nothing twice".to_string(),
        };
        return Err(e.context(format!("import stopped after line {number}; {hint}")));
    }
    if c.refused > 0 {
        bail!("{} line(s) were not imported (see above)", c.refused);
    }
    Ok(())
}

/// Count one answered batch, report its refused lines, extend the id map.
fn settle(
    batch: &Batch,
    answer: Answer,
    tally: &mut Tally,
    mut id_map: Option<&mut IdMapWriter>,
    progress: &Progress,
) -> anyhow::Result<()> {
    let results = answer?;
    let mut results = results.into_iter();
    for line in &batch.lines {
        let (code, msg, uid, duplicate) = match &line.local_error {
            Some((code, msg)) => (*code, msg.clone(), None, false),
            None => {
                let r = results
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("the server answered too few results"))?;
                (r.code, r.msg, r.message_uid, r.duplicate)
            }
        };
        if code != 0 {
            tally.counts.refused += 1;
            *tally.refused_by_code.entry(code).or_default() += 1;
            let id = if line.id.is_empty() {
                String::new()
            } else {
                format!(" ({} {})", batch.kind.name(), line.id)
            };
            progress.println(&format!("line {}: code {code}: {msg}{id}", line.number));
            continue;
        }
        match batch.kind {
            Kind::Message => {
                if duplicate {
                    tally.counts.duplicates += 1;
                } else {
                    tally.counts.imported += 1;
                }
                if let (Some(map), Some(uid)) = (id_map.as_deref_mut(), uid) {
                    map.record(line.number, &line.id, uid)?;
                }
            }
            Kind::Group => tally.groups += 1,
            Kind::User => tally.users += 1,
        }
    }
    if let Some(map) = id_map {
        map.flush()?;
    }
    Ok(())
}

/// The batch being filled: lines of one kind, their JSON joined into the
/// request body `{"<kind>s":[line,line,...]}`.
struct BatchBuilder {
    max_lines: usize,
    kind: Option<Kind>,
    lines: Vec<Line>,
    body: Vec<u8>,
    sent: usize,
    seq: u64,
}

impl BatchBuilder {
    fn new(max_lines: usize) -> Self {
        BatchBuilder {
            max_lines,
            kind: None,
            lines: Vec::new(),
            body: Vec::with_capacity(MAX_REQUEST_BYTES + 64),
            sent: 0,
            seq: 0,
        }
    }

    /// Whether a line of `kind` and `len` bytes joins this batch.
    fn fits(&self, kind: Kind, len: usize) -> bool {
        self.lines.is_empty()
            || (self.kind == Some(kind)
                && self.sent < self.max_lines
                && self.lines.len() < 2 * self.max_lines
                && self.body.len() + len + 2 <= MAX_REQUEST_BYTES)
    }

    fn push(&mut self, kind: Kind, line: Line, text: &str) {
        if self.lines.is_empty() {
            self.kind = Some(kind);
            self.body.clear();
            self.body.extend_from_slice(b"{\"");
            self.body.extend_from_slice(kind.endpoint().1.as_bytes());
            self.body.extend_from_slice(b"\":[");
        }
        if line.local_error.is_none() {
            if self.sent > 0 {
                self.body.push(b',');
            }
            self.body.extend_from_slice(text.as_bytes());
            self.sent += 1;
        }
        self.lines.push(line);
    }

    /// The filled batch (None when empty); the next one starts empty.
    fn take(&mut self, end_offset: u64) -> Option<Batch> {
        let kind = self.kind?;
        if self.lines.is_empty() {
            return None;
        }
        let mut body =
            std::mem::replace(&mut self.body, Vec::with_capacity(MAX_REQUEST_BYTES + 64));
        body.extend_from_slice(b"]}");
        let batch = Batch {
            seq: self.seq,
            kind,
            lines: std::mem::take(&mut self.lines),
            body,
            sent: std::mem::take(&mut self.sent),
            end_offset,
        };
        self.seq += 1;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(number: usize, bad: bool) -> Line {
        Line {
            number,
            id: format!("v{number}"),
            local_error: bad.then(|| (2, "bad".to_string())),
        }
    }

    #[test]
    fn batches_are_one_kind_bounded_and_valid_json() {
        let mut b = BatchBuilder::new(2);
        assert!(b.take(0).is_none());
        b.push(Kind::Message, line(1, false), r#"{"messageUid":1}"#);
        b.push(Kind::Message, line(2, true), "{oops");
        assert!(b.fits(Kind::Message, 10));
        b.push(Kind::Message, line(3, false), r#"{"messageUid":3}"#);
        assert!(!b.fits(Kind::Message, 10), "two lines at most");
        assert!(!b.fits(Kind::Group, 10));
        let first = b.take(42).unwrap();
        assert_eq!(
            (first.seq, first.sent, first.lines.len(), first.end_offset),
            (0, 2, 3, 42)
        );
        let v: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(
            v,
            json!({"messages": [{"messageUid": 1}, {"messageUid": 3}]})
        );
        assert!(b.fits(Kind::Group, 10), "an empty batch takes any kind");
        b.push(Kind::Group, line(4, false), r#"{"kind":"group"}"#);
        let second = b.take(50).unwrap();
        assert_eq!(second.seq, 1);
        let v: serde_json::Value = serde_json::from_slice(&second.body).unwrap();
        assert_eq!(v, json!({"groups": [{"kind": "group"}]}));
        b.push(Kind::User, line(5, true), "{");
        let third = b.take(51).unwrap();
        assert_eq!(third.sent, 0);
        assert!(serde_json::from_slice::<serde_json::Value>(&third.body).is_ok());
    }
}
