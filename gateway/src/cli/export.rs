//! `imgate export`: a running gateway's users (status, rate limit),
//! groups and every stored message as JSONL, through the admin API
//! (DESIGN §7–8), in the lines `imgate import` reads (`kind` user and
//! group first, then messages in the "message" shape of §5.5 by id), so
//! an export imports into another imgate.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::admin_client::AdminConn;

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub conn: AdminConn,
    /// Only messages with a messageUid above this one (resume an export;
    /// users and groups are then left out).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let (mut users, mut groups) = (0u64, 0u64);
    if args.after == 0 {
        let page = client.call("/admin/export/users", &json!({}))?;
        for u in page["users"].as_array().cloned().unwrap_or_default() {
            writeln!(out, "{u}")?;
            users += 1;
        }
        let mut after = String::new();
        loop {
            let page = client.call(
                "/admin/export/groups",
                &json!({"after": after, "limit": 1000}),
            )?;
            for g in page["groups"].as_array().cloned().unwrap_or_default() {
                writeln!(out, "{g}")?;
                groups += 1;
            }
            let last = page["last"].as_str().unwrap_or_default().to_string();
            if page["hasMore"].as_bool() != Some(true) || last <= after {
                break;
            }
            after = last;
        }
    }
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
    eprintln!("exported {users} user(s), {groups} group(s), {count} message(s)");
    Ok(())
}
