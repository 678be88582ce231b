//! What every load generator reports: exactly-once accounting of sequence
//! numbers, latency percentiles, rates, and the server process's CPU time
//! and RSS from `/proc` (so CPU per delivered message needs no profiler).

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Map, Value};

/// Ticks per second of `utime`/`stime` in `/proc/<pid>/stat`: USER_HZ,
/// which Linux fixes at 100 for userspace on every common architecture.
const USER_HZ: u64 = 100;

/// A paced run is "sustained" when nothing was lost and deliveries kept at
/// least this share of the offered rate.
pub const SUSTAINED_SHARE: f64 = 0.95;

/// Which of `expected` sequence numbers arrived, how often, and how late.
pub struct Arrivals {
    seen: Vec<bool>,
    pub received: usize,
    pub unique: usize,
    pub duplicates: usize,
    /// Sequence numbers outside `0..expected` (a corrupt or foreign message).
    pub unknown: usize,
    pub latencies_us: Vec<u64>,
    /// When the last message arrived, since the run's clock base.
    pub last: Option<Duration>,
}

impl Arrivals {
    pub fn new(expected: usize) -> Arrivals {
        Arrivals {
            seen: vec![false; expected],
            received: 0,
            unique: 0,
            duplicates: 0,
            unknown: 0,
            latencies_us: Vec::new(),
            last: None,
        }
    }

    /// Record one arrival of `seq` that was meant to be sent at `sent`
    /// (both since the run's clock base).
    pub fn record(&mut self, seq: u64, sent: Duration, now: Duration) {
        let Some(slot) = usize::try_from(seq).ok().and_then(|s| self.seen.get_mut(s)) else {
            self.unknown += 1;
            return;
        };
        self.received += 1;
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        if *slot {
            self.duplicates += 1;
            return;
        }
        *slot = true;
        self.unique += 1;
        self.latencies_us
            .push(now.saturating_sub(sent).as_micros() as u64);
    }

    /// Add another receiver's arrivals of the same sequence space.
    pub fn merge(&mut self, other: Arrivals) {
        for (i, s) in other.seen.iter().enumerate() {
            if !*s {
                continue;
            }
            match self.seen.get_mut(i) {
                Some(mine) if *mine => self.duplicates += 1,
                Some(mine) => {
                    *mine = true;
                    self.unique += 1;
                }
                None => self.unknown += 1,
            }
        }
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.unknown += other.unknown;
        self.latencies_us.extend(other.latencies_us);
        self.last = self.last.max(other.last);
    }

    pub fn expected(&self) -> usize {
        self.seen.len()
    }

    pub fn lost(&self) -> usize {
        self.seen.len() - self.unique
    }
}

/// The delivery half of every report line: what arrived (exactly-once
/// accounting), delivery time and rate from `start`, latency, whether a
/// paced run at `rate` was sustained, the server's CPU and RSS since
/// `server_before`, and the run's errors.
pub fn delivery_fields(
    arrivals: &mut Arrivals,
    start: Duration,
    rate: Option<f64>,
    server_pid: Option<u32>,
    server_before: Option<ProcSample>,
    errors: &[String],
) -> Map<String, Value> {
    let server = server_report(server_pid, server_before, arrivals.unique);
    let delivered_end = arrivals.last.unwrap_or(start);
    let delivered_rate = self::rate(arrivals.unique, start, delivered_end);
    let all_arrived = arrivals.lost() == 0;
    let sustained = rate.map(|r| all_arrived && delivered_rate >= r * SUSTAINED_SHARE);
    let fields = json!({
        "expected": arrivals.expected(),
        "delivered": arrivals.unique,
        "lost": arrivals.lost(),
        "duplicated": arrivals.duplicates,
        "unknown": arrivals.unknown,
        "delivery_seconds": round3(delivered_end.saturating_sub(start).as_secs_f64()),
        "delivered_msgs_per_sec": delivered_rate,
        "latency": latency_ms(&mut arrivals.latencies_us),
        "all_arrived": all_arrived,
        "sustained": sustained,
        "server": server,
        "errors": errors.len(),
        "error_samples": errors.iter().take(5).collect::<Vec<_>>(),
    });
    match fields {
        Value::Object(m) => m,
        _ => unreachable!("json! of an object literal"),
    }
}

/// Print a report line (a JSON object) on stdout.
pub fn print_report(report: Map<String, Value>) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string(&report).context("formatting the report")?
    );
    Ok(())
}

/// p50/p99/max in milliseconds of microsecond samples (sorted in place).
pub fn latency_ms(samples: &mut [u64]) -> Value {
    samples.sort_unstable();
    let pct = |p: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        round2(samples[i.min(samples.len() - 1)] as f64 / 1000.0)
    };
    json!({"p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)})
}

/// `n` events over `from..to` per second, 0 for an empty interval.
pub fn rate(n: usize, from: Duration, to: Duration) -> f64 {
    let secs = to.saturating_sub(from).as_secs_f64();
    if secs > 0.0 {
        (n as f64 / secs).round()
    } else {
        0.0
    }
}

pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A snapshot of a server process (`--server-pid`): CPU time and RSS.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub cpu: Duration,
    pub rss_kb: u64,
}

impl ProcSample {
    /// Read `/proc/<pid>/stat` (utime + stime) and `/proc/<pid>/status`
    /// (VmRSS). `None` when the process is gone or the files are unreadable.
    pub fn read(pid: u32) -> Option<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(ProcSample {
            cpu: cpu_of_stat(&stat)?,
            rss_kb: rss_kb_of_status(&status)?,
        })
    }
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after the last `)`.
fn cpu_of_stat(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state(3) ... utime is field 14, stime 15 → 11th and
    // 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

fn rss_kb_of_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The server's CPU and RSS over a run, as report fields: CPU µs per
/// delivered message, RSS before and after.
pub fn server_report(pid: Option<u32>, before: Option<ProcSample>, delivered: usize) -> Value {
    let Some(pid) = pid else {
        return Value::Null;
    };
    let after = ProcSample::read(pid);
    match (before, after) {
        (Some(b), Some(a)) => {
            let cpu = a.cpu.saturating_sub(b.cpu);
            json!({
                "pid": pid,
                "cpu_seconds": round3(cpu.as_secs_f64()),
                "cpu_us_per_delivered": if delivered > 0 {
                    round2(cpu.as_secs_f64() * 1e6 / delivered as f64)
                } else { 0.0 },
                "rss_kb_before": b.rss_kb,
                "rss_kb_after": a.rss_kb,
            })
        }
        _ => json!({"pid": pid, "error": "could not read /proc for the server"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_count_lost_duplicates_and_unknown() {
        let mut a = Arrivals::new(4);
        let t = Duration::from_millis;
        a.record(0, t(0), t(2));
        a.record(1, t(0), t(3));
        a.record(1, t(0), t(4));
        a.record(9, t(0), t(5));
        assert_eq!(
            (a.received, a.unique, a.duplicates, a.unknown),
            (3, 2, 1, 1)
        );
        assert_eq!(a.lost(), 2);
        let mut b = Arrivals::new(4);
        b.record(0, t(0), t(6));
        b.record(3, t(0), t(7));
        a.merge(b);
        assert_eq!((a.unique, a.duplicates, a.lost()), (3, 2, 1));
        assert_eq!(a.last, Some(t(7)));
    }

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(cpu_of_stat(stat), Some(Duration::from_millis(3000)));
        assert_eq!(
            rss_kb_of_status("Name:\tx\nVmRSS:\t  1234 kB\n"),
            Some(1234)
        );
    }

    #[test]
    fn percentiles_of_sorted_samples() {
        let mut s: Vec<u64> = (1..=100).map(|v| v * 1000).collect();
        let l = latency_ms(&mut s);
        assert_eq!(l["p50_ms"], 51.0);
        assert_eq!(l["max_ms"], 100.0);
    }
}
