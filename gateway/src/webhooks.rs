//! Event webhooks: with `webhook_url` set, the gateway POSTs one JSON
//! object per event to it (docs/operations.md "Event webhooks"):
//!
//! ```json
//! {"event":"connected","user":"alice","device":"phone","protocol":"mqtt",
//!  "time":1700000000000,"node":1,"id":"1-42"}
//! ```
//!
//! - `connected` / `disconnected`: a PB, MQTT or XMPP session logged in /
//!   ended (any reason: logout, kick, lost connection), emitted by the
//!   [`crate::sessions::SessionRegistry`], the one place every protocol's
//!   login goes through;
//! - `delivered`: a device acked a message (`messageUid`,
//!   `messageUidStr`), from [`crate::sessions::ctx::SessionShared::ack_delivery`],
//!   the one place every protocol's delivery ack goes through;
//! - `read`: a user read a conversation up to a message (`conv`,
//!   `messageUid`, `messageUidStr`), from
//!   [`crate::sessions::ctx::SessionShared::conversation_read`], the one
//!   place every protocol's conversation read goes through.
//!
//! `webhook_events` selects the events sent. Sending is
//! `imgate_adapters::event_hook`: a bounded queue that never blocks a
//! session (full: dropped and counted), retries with backoff, every
//! request signed with `hook_secret` like the review hook.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use imgate_adapters::event_hook::{EventHook, EventHookConfig};
use imgate_adapters::review_hook::HookSigner;
use imgate_core::model::Conversation;
use imgate_core::pipeline::Protocol;
use serde_json::{json, Value};

use crate::config::webhook_events::parse_events;
pub use crate::config::webhook_events::EventKind;
use crate::config::Config;
use crate::metrics::{HookQueue, Metrics};

/// A user read a conversation up to `message_id` (given by the feature
/// that records reads).
#[derive(Debug, Clone)]
pub struct ReadEvent {
    pub user: String,
    pub device: String,
    pub protocol: Protocol,
    pub conversation: Conversation,
    pub message_id: u64,
}

/// The configured webhook: which events, and the sender.
pub struct Webhooks {
    hook: Arc<EventHook>,
    events: u8,
    node: u16,
    next_id: AtomicU64,
}

impl Webhooks {
    /// The webhook of `config`, if `webhook_url` is set (inside the
    /// runtime: it starts the sender's workers).
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Arc<Webhooks>>> {
        let url = config.webhook_url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        let signer = HookSigner::new(&config.hook_secret);
        if signer.is_none() {
            tracing::warn!(
                "hook_secret is not set: webhook requests are unsigned \
                 (the receiver cannot tell them from forged ones)"
            );
        }
        let hook = EventHook::start(EventHookConfig {
            url: url.to_string(),
            queue: config.webhook_queue,
            retries: config.webhook_retries,
            backoff: Duration::from_millis(config.webhook_backoff_ms.max(1)),
            timeout: Duration::from_millis(config.webhook_timeout_ms.max(1)),
            signer,
        })
        .map_err(anyhow::Error::msg)
        .context("webhook_url")?;
        Ok(Some(Arc::new(Webhooks {
            hook,
            events: parse_events(&config.webhook_events)?,
            node: config.node_id,
            next_id: AtomicU64::new(1),
        })))
    }

    fn wants(&self, kind: EventKind) -> bool {
        self.events & kind.bit() != 0
    }

    /// The common fields, then `extra`'s; queued (never waits).
    fn emit(&self, kind: EventKind, user: &str, device: &str, protocol: &str, extra: Value) {
        if !self.wants(kind) {
            return;
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut event = json!({
            "event": kind.name(),
            "user": user,
            "device": device,
            "protocol": protocol,
            "time": imgate_core::now_ms(),
            "node": self.node,
            "id": format!("{}-{n}", self.node),
        });
        if let (Some(obj), Value::Object(more)) = (event.as_object_mut(), extra) {
            obj.extend(more);
        }
        self.hook.emit(event);
    }

    /// A session logged in or ended.
    pub fn session(&self, kind: EventKind, user: &str, device: &str, protocol: Protocol) {
        self.emit(kind, user, device, protocol.name(), json!({}));
    }

    /// A device acked `message_id`; `protocol` of its session here, if it
    /// still has one.
    pub fn delivered(&self, user: &str, device: &str, protocol: Option<Protocol>, message_id: u64) {
        self.emit(
            EventKind::Delivered,
            user,
            device,
            protocol.map_or("", Protocol::name),
            json!({"messageUid": message_id, "messageUidStr": message_id.to_string()}),
        );
    }

    /// A conversation was read.
    pub fn read(&self, e: &ReadEvent) {
        self.emit(
            EventKind::Read,
            &e.user,
            &e.device,
            e.protocol.name(),
            json!({
                "conv": e.conversation,
                "messageUid": e.message_id,
                "messageUidStr": e.message_id.to_string(),
            }),
        );
    }

    /// `imgate_webhook_*` metrics.
    pub fn render_metrics(&self, out: &mut String) {
        let stats = &self.hook.stats;
        let (depth, capacity) = self.hook.queue_depth();
        Metrics::render_hook_queue(
            out,
            "imgate_webhook_events",
            "Webhook events",
            &HookQueue {
                depth,
                capacity,
                outcomes: &[
                    ("delivered", stats.delivered.load(Ordering::Relaxed)),
                    ("dropped_queue_full", stats.dropped.load(Ordering::Relaxed)),
                    ("failed_after_retries", stats.failed.load(Ordering::Relaxed)),
                    ("retried", stats.retried.load(Ordering::Relaxed)),
                ],
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_chosen_events_are_queued() {
        // An address nothing answers on: events stay queued or retried.
        let c = Config {
            webhook_url: "http://127.0.0.1:9/e".into(),
            webhook_events: "read".into(),
            webhook_queue: 100,
            ..Config::default()
        };
        let w = Webhooks::from_config(&c).unwrap().unwrap();
        w.session(EventKind::Connected, "u", "d", Protocol::Pb);
        w.delivered("u", "d", Some(Protocol::Pb), 7);
        assert_eq!(w.next_id.load(Ordering::Relaxed), 1, "nothing emitted");
        w.read(&ReadEvent {
            user: "u".into(),
            device: "d".into(),
            protocol: Protocol::Http,
            conversation: Conversation {
                kind: 0,
                target: "v".into(),
                line: 0,
            },
            message_id: 9,
        });
        assert_eq!(w.next_id.load(Ordering::Relaxed), 2, "the read event");
    }
}
