//! `imgate import FILE.jsonl` and `imgate export`: migration through the
//! admin API of a running gateway (DESIGN §7–8). One JSON message per line,
//! in the "message" shape of DESIGN §5.5 (`messageUid` = the id in the old
//! system, `timestamp` = its original time); `export` writes the same
//! shape, so its output imports into another imgate.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use super::admin_client::{AdminClient, AdminConn};

/// Bytes of JSON per import request, well under the server's default body
/// limit (1 MiB).
const MAX_REQUEST_BYTES: usize = 512 * 1024;

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub conn: AdminConn,
    /// Messages per request (at most 1000).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// A JSONL file: one message per line (blank lines are skipped).
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub conn: AdminConn,
    /// Only messages with a messageUid above this one (resume an export).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What one import run did.
#[derive(Default)]
struct Tally {
    imported: u64,
    duplicates: u64,
    failed: u64,
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let mut tally = Tally::default();
    // (line number, message) waiting to be sent.
    let mut pending: Vec<(usize, Value)> = Vec::new();
    let mut bytes = 0;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("reading line {n}"))?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_REQUEST_BYTES {
            eprintln!(
                "line {n}: {} bytes, more than one request may carry",
                line.len()
            );
            tally.failed += 1;
            continue;
        }
        let message: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("line {n}: not JSON ({e})");
                tally.failed += 1;
                continue;
            }
        };
        if !pending.is_empty()
            && (pending.len() == usize::from(args.batch) || bytes + line.len() > MAX_REQUEST_BYTES)
        {
            send_batch(&client, &mut pending, &mut tally)?;
            bytes = 0;
        }
        bytes += line.len();
        pending.push((n, message));
    }
    send_batch(&client, &mut pending, &mut tally)?;
    println!(
        "{}",
        json!({"imported": tally.imported, "duplicates": tally.duplicates, "failed": tally.failed})
    );
    if tally.failed > 0 {
        bail!("{} message(s) were not imported (see above)", tally.failed);
    }
    Ok(())
}

fn send_batch(
    client: &AdminClient,
    pending: &mut Vec<(usize, Value)>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let batch: Vec<(usize, Value)> = std::mem::take(pending);
    let messages: Vec<&Value> = batch.iter().map(|(_, m)| m).collect();
    let reply = client.call("/admin/import/messages", &json!({ "messages": messages }))?;
    let results = reply["results"].as_array().cloned().unwrap_or_default();
    if results.len() != batch.len() {
        bail!(
            "the server answered {} results for {} messages",
            results.len(),
            batch.len()
        );
    }
    for ((n, _), r) in batch.iter().zip(results) {
        match (r["code"].as_i64(), r["duplicate"].as_bool()) {
            (Some(0), Some(true)) => tally.duplicates += 1,
            (Some(0), _) => tally.imported += 1,
            (code, _) => {
                tally.failed += 1;
                eprintln!(
                    "line {n}: code {}: {} (oldId {})",
                    code.unwrap_or(-1),
                    r["msg"].as_str().unwrap_or(""),
                    r["oldId"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

pub fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut after = args.after;
    let mut count = 0u64;
    loop {
        let page = client.call(
            "/admin/export/messages",
            &json!({"after": after.to_string(), "limit": 1000}),
        )?;
        for m in page["messages"].as_array().cloned().unwrap_or_default() {
            writeln!(out, "{m}")?;
            count += 1;
        }
        let last = page["lastStr"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(after);
        if page["hasMore"].as_bool() != Some(true) || last <= after {
            break;
        }
        after = last;
    }
    out.flush()?;
    eprintln!("exported {count} message(s)");
    Ok(())
}
