//! `imgate-bench http`: drive `POST /v1/messages` from many threads and report
//! durable-ack throughput and latency. Senders are spread over several
//! users so per-user rate limits do not cap the measurement (or raise
//! `IMGATE_RATE_LIMIT_MESSAGES` on the server under test).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::admin::AdminConn;

#[derive(Args, Debug)]
pub struct HttpArgs {
    /// Client HTTP API base URL.
    #[arg(long, env = "IMGATE_HTTP_URL", default_value = "http://127.0.0.1:8080")]
    pub http_url: String,
    #[command(flatten)]
    pub conn: AdminConn,
    /// Total messages to send.
    #[arg(long, default_value_t = 2000)]
    pub messages: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Distinct sending users.
    #[arg(long, default_value_t = 64)]
    pub senders: usize,
    /// Payload text size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

pub fn run(args: HttpArgs) -> anyhow::Result<()> {
    let admin = args.conn.client()?;
    let run_id = crate::admin::run_id();
    let mut tokens = Vec::new();
    for i in 0..args.senders.max(1) {
        let user = format!("load-{run_id}-{i}");
        tokens.push(admin.token(&user, "load")?);
    }
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let text = "x".repeat(args.size);
    let url = format!("{}/v1/messages", args.http_url.trim_end_matches('/'));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (tokens, next, text, url, run_id) = (
            tokens.clone(),
            next.clone(),
            text.clone(),
            url.clone(),
            run_id.clone(),
        );
        let total = args.messages;
        handles.push(std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build();
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let token = &tokens[n % tokens.len()];
                let body = json!({
                    "conv": {"type": 0, "target": format!("load-{run_id}-sink"), "line": 0},
                    "payload": {"type": 1, "searchableContent": text},
                    "clientMsgId": format!("m{n}"),
                });
                let t = Instant::now();
                match agent
                    .post(&url)
                    .set("Authorization", &format!("Bearer {token}"))
                    .send_json(body)
                {
                    Ok(_) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    let ok = latencies.len();
    let rate = ok as f64 / elapsed.as_secs_f64();
    println!(
        "{}",
        serde_json::to_string(&json!({
            "sent_ok": ok,
            "errors": errors,
            "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "msgs_per_sec": rate.round(),
            "p50_ms": (pct(0.5) * 100.0).round() / 100.0,
            "p99_ms": (pct(0.99) * 100.0).round() / 100.0,
            "concurrency": args.concurrency,
        }))
        .context("formatting the report")?
    );
    Ok(())
}
