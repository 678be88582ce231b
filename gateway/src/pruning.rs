//! The pruning task: every `prune_interval_secs`, [`Store::prune`] passes
//! (expired messages, and history older than `retention_days`) until the
//! store says nothing more is due, so one pass never holds the store's
//! writer for long. On RabbitMQ each node prunes its own index.

use std::sync::Arc;
use std::time::Duration;

use imgate_core::{now_ms, Store};
use tokio::sync::watch;

/// Passes run back to back at most per tick (each one a bounded batch).
const PASSES_PER_TICK: usize = 64;

/// `retention_days` as milliseconds (None: keep forever).
pub fn retention_ms(retention_days: u64) -> Option<i64> {
    (retention_days > 0).then(|| (retention_days.min(1 << 20) as i64) * 86_400_000)
}

/// Run until `shutdown` turns true.
pub async fn run(
    store: Arc<dyn Store>,
    retention: Option<i64>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let (mut expired, mut aged_out) = (0, 0);
        for _ in 0..PASSES_PER_TICK {
            match store.prune(now_ms(), retention).await {
                Ok(p) => {
                    expired += p.expired;
                    aged_out += p.aged_out;
                    if !p.more {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning failed; trying again next time");
                    break;
                }
            }
        }
        if expired + aged_out > 0 {
            tracing::info!(expired, aged_out, "pruned messages");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_days_keeps_forever() {
        assert_eq!(retention_ms(0), None);
        assert_eq!(retention_ms(2), Some(2 * 86_400_000));
        assert!(retention_ms(u64::MAX).is_some_and(|ms| ms > 0));
    }
}
