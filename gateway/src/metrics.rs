//! Prometheus metrics (text exposition format) without a metrics crate:
//! connections per protocol and per listener (the rows of
//! `crate::listeners::LISTENERS`), messages in/out per protocol, pipeline
//! rejections by reason, refused logins by protocol and reason, send
//! latency (pipeline incl. durable store), store append latency, unacked
//! deliveries, and the queues of the review hook and the event webhooks.
//! docs/operations.md lists them for operators.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use imgate_core::pipeline::Protocol;
use imgate_core::ErrorCode;

use crate::listeners::LISTENERS;

const PROTOCOLS: [Protocol; Protocol::ALL.len()] = Protocol::ALL;
const N: usize = PROTOCOLS.len();
/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// The reasons a login is refused (`sessions::login`'s codes); anything
/// else counts as the last.
const AUTH_REASONS: [ErrorCode; 5] = [
    ErrorCode::TokenError,
    ErrorCode::AuthFailure,
    ErrorCode::UserBlocked,
    ErrorCode::InvalidParameter,
    ErrorCode::ServerError,
];

fn proto_index(p: Protocol) -> usize {
    p.index()
}

#[derive(Default)]
pub struct Metrics {
    connections: [AtomicI64; N],
    /// Open connections per listener (index into `LISTENERS`).
    listener_connections: [AtomicI64; LISTENERS.len()],
    messages_in: [AtomicU64; N],
    messages_out: [AtomicU64; N],
    rejections: [AtomicU64; ErrorCode::ALL.len()],
    /// Refused logins, per protocol and reason.
    auth_failures: [[AtomicU64; AUTH_REASONS.len()]; N],
    send_latency: Histogram,
    /// `Store::append` alone: from issuing the append to durable.
    append_latency: Histogram,
}

/// A latency histogram over [`BUCKETS`].
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (i, le) in BUCKETS.iter().enumerate() {
            let v = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {v}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// What an outbound hook's queue reports (review hook forwards, event
/// webhooks): its depth and bound now, and its counters.
pub struct HookQueue<'a> {
    pub depth: usize,
    pub capacity: usize,
    /// (outcome, count) pairs of the `_total` counter.
    pub outcomes: &'a [(&'a str, u64)],
}

/// Decrements the connection gauge when dropped.
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    protocol: Protocol,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections[proto_index(self.protocol)].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements a listener's connection gauge when dropped.
pub struct ListenerGuard {
    metrics: Arc<Metrics>,
    index: usize,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.metrics.listener_connections[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// An open connection on the listener called `name`.
    pub fn listener_connection(self: &Arc<Self>, name: &str) -> Option<ListenerGuard> {
        let index = LISTENERS.iter().position(|l| l.name == name)?;
        self.listener_connections[index].fetch_add(1, Ordering::Relaxed);
        Some(ListenerGuard {
            metrics: self.clone(),
            index,
        })
    }

    pub fn connection(self: &Arc<Self>, protocol: Protocol) -> ConnectionGuard {
        self.connections[proto_index(protocol)].fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            metrics: self.clone(),
            protocol,
        }
    }

    pub fn message_in(&self, protocol: Protocol, latency: Duration) {
        self.messages_in[proto_index(protocol)].fetch_add(1, Ordering::Relaxed);
        self.send_latency.observe(latency);
    }

    /// One `Store::append` of the pipeline took `latency` (to durable).
    pub fn store_append(&self, latency: Duration) {
        self.append_latency.observe(latency);
    }

    pub fn message_out(&self, protocol: Protocol) {
        self.messages_out[proto_index(protocol)].fetch_add(1, Ordering::Relaxed);
    }

    /// A refused login.
    pub fn auth_failure(&self, protocol: Protocol, code: ErrorCode) {
        let i = AUTH_REASONS
            .iter()
            .position(|c| *c == code)
            .unwrap_or(AUTH_REASONS.len() - 1);
        self.auth_failures[proto_index(protocol)][i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejection(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.rejections[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An outbound hook's queue, appended to the output as
    /// `{prefix}_queue_depth`, `{prefix}_queue_capacity` (gauges) and
    /// `{prefix}_total{outcome}` (counter).
    pub fn render_hook_queue(out: &mut String, prefix: &str, what: &str, q: &HookQueue<'_>) {
        let _ = writeln!(
            out,
            "# HELP {prefix}_queue_depth {what} waiting in the queue (or being sent)."
        );
        let _ = writeln!(out, "# TYPE {prefix}_queue_depth gauge");
        let _ = writeln!(out, "{prefix}_queue_depth {}", q.depth);
        let _ = writeln!(
            out,
            "# HELP {prefix}_queue_capacity Bound of the {what} queue."
        );
        let _ = writeln!(out, "# TYPE {prefix}_queue_capacity gauge");
        let _ = writeln!(out, "{prefix}_queue_capacity {}", q.capacity);
        let _ = writeln!(out, "# HELP {prefix}_total {what} by outcome.");
        let _ = writeln!(out, "# TYPE {prefix}_total counter");
        for (outcome, v) in q.outcomes {
            let _ = writeln!(out, "{prefix}_total{{outcome=\"{outcome}\"}} {v}");
        }
    }

    /// The review hook's forwarder (`imgate_review_forward_*`).
    pub fn render_review(out: &mut String, hook: &imgate_adapters::HttpReviewHook) {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &hook.stats;
        let (depth, capacity) = hook.queue_depth();
        Self::render_hook_queue(
            out,
            "imgate_review_forward",
            "Review-hook forwards",
            &HookQueue {
                depth,
                capacity,
                outcomes: &[
                    ("delivered", stats.forwarded.load(Relaxed)),
                    ("dropped_queue_full", stats.dropped.load(Relaxed)),
                    ("failed_after_retries", stats.failed.load(Relaxed)),
                ],
            },
        );
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP imgate_connections Open client connections and streams per protocol (every transport)."
        );
        let _ = writeln!(out, "# TYPE imgate_connections gauge");
        for p in PROTOCOLS {
            let v = self.connections[proto_index(p)].load(Ordering::Relaxed);
            let _ = writeln!(out, "imgate_connections{{protocol=\"{}\"}} {v}", p.name());
        }
        let _ = writeln!(
            out,
            "# HELP imgate_listener_connections Open connections per listener (transport included: mqtt, mqtts, ws, ...)."
        );
        let _ = writeln!(out, "# TYPE imgate_listener_connections gauge");
        for (l, v) in LISTENERS.iter().zip(&self.listener_connections) {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "imgate_listener_connections{{listener=\"{}\"}} {v}",
                l.name
            );
        }
        for (name, help, arr) in [
            (
                "imgate_messages_in_total",
                "Messages accepted and stored, by protocol.",
                &self.messages_in,
            ),
            (
                "imgate_messages_out_total",
                "Messages delivered to devices, by protocol.",
                &self.messages_out,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for p in PROTOCOLS {
                let v = arr[proto_index(p)].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{protocol=\"{}\"}} {v}", p.name());
            }
        }
        let _ = writeln!(
            out,
            "# HELP imgate_rejections_total Sends rejected by the pipeline, by reason."
        );
        let _ = writeln!(out, "# TYPE imgate_rejections_total counter");
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            if *c == ErrorCode::Success {
                continue;
            }
            let v = self.rejections[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "imgate_rejections_total{{reason=\"{}\",code=\"{}\"}} {v}",
                c.name(),
                c.as_i32()
            );
        }
        let _ = writeln!(
            out,
            "# HELP imgate_auth_failures_total Refused logins, by protocol and reason."
        );
        let _ = writeln!(out, "# TYPE imgate_auth_failures_total counter");
        for p in PROTOCOLS.iter().filter(|p| **p != Protocol::Admin) {
            for (i, c) in AUTH_REASONS.iter().enumerate() {
                let v = self.auth_failures[proto_index(*p)][i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "imgate_auth_failures_total{{protocol=\"{}\",reason=\"{}\",code=\"{}\"}} {v}",
                    p.name(),
                    c.name(),
                    c.as_i32()
                );
            }
        }
        self.send_latency.render(
            &mut out,
            "imgate_send_duration_seconds",
            "Time from pipeline entry to durable ack.",
        );
        self.append_latency.render(
            &mut out,
            "imgate_store_append_duration_seconds",
            "Time of the pipeline's Store::append, from issuing it to durable.",
        );
        let _ = writeln!(
            out,
            "# HELP imgate_deliveries_unacked Deliveries handed to devices attached to this node and not acked yet."
        );
        let _ = writeln!(out, "# TYPE imgate_deliveries_unacked gauge");
        let _ = writeln!(
            out,
            "imgate_deliveries_unacked {}",
            imgate_core::store::unacked_deliveries().max(0)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Arc::new(Metrics::default());
        {
            let _g = m.connection(Protocol::Http);
            let _l = m.listener_connection("wss");
            assert!(m.listener_connection("smtp").is_none());
            m.message_in(Protocol::Http, Duration::from_millis(3));
            m.store_append(Duration::from_micros(700));
            m.rejection(ErrorCode::OverFrequency);
            let text = m.render();
            assert!(text.contains("imgate_connections{protocol=\"http\"} 1"));
            assert!(text.contains("imgate_listener_connections{listener=\"wss\"} 1"));
            assert!(text.contains("imgate_listener_connections{listener=\"ws\"} 0"));
            assert!(text.contains("imgate_messages_in_total{protocol=\"http\"} 1"));
            assert!(
                text.contains("imgate_rejections_total{reason=\"over_frequency\",code=\"250\"} 1")
            );
            assert!(text.contains("imgate_send_duration_seconds_bucket{le=\"0.005\"} 1"));
            assert!(text.contains("imgate_send_duration_seconds_bucket{le=\"0.002\"} 0"));
            assert!(text.contains("imgate_store_append_duration_seconds_bucket{le=\"0.0005\"} 0"));
            assert!(text.contains("imgate_store_append_duration_seconds_bucket{le=\"0.001\"} 1"));
            assert!(text.contains("imgate_store_append_duration_seconds_count 1"));
            assert!(text.contains("# TYPE imgate_deliveries_unacked gauge"));
        }
        assert!(m
            .render()
            .contains("imgate_connections{protocol=\"http\"} 0"));
        assert!(m
            .render()
            .contains("imgate_listener_connections{listener=\"wss\"} 0"));
    }
}
