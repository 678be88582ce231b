//! Attached devices on this node: delivery from the node's own indexer
//! and catch-up from the device's cursor in the index. No broker object
//! and no channel per device.
//!
//! Attaching reads the device's cursor (after this node's own unflushed
//! moves of it are written, so a quick reconnect here starts after its
//! last acks; a device seen for the first time,
//! or not for `device_expires`, starts at the newest message this node has
//! indexed, registered in the control stream before the feed starts),
//! routes the user's live messages to the device (the indexer fans every
//! message out after its batch commits, see `log_consumer`), and hands
//! out a [`DeviceFeed`] that first reads the user's timeline after the
//! cursor. Acks move the cursor in memory; moved cursors go to the
//! control stream in batches (`cursor_log`), so every node learns them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgate_core::store::{BoxFuture, CatchUp, CatchUpPage, DeviceFeed, StoreResult};
use imgate_core::{now_ms, StoreError};

use super::cursor_log::CursorLog;
use super::index::{Index, IndexPosition};
use super::record::CursorEntry;
use crate::router::Router;

/// Messages per catch-up page.
const PAGE: usize = 256;

pub struct Devices {
    pub router: Arc<Router>,
    pub index: Arc<Index>,
    pub position: Arc<Mutex<IndexPosition>>,
    pub cursors: Arc<CursorLog>,
    pub device_expires: Duration,
    pub send_timeout: Duration,
}

impl Devices {
    fn last_final(&self) -> u64 {
        match self.position.lock() {
            Ok(g) => g.last_final,
            Err(p) => p.into_inner().last_final,
        }
    }

    pub async fn attach(&self, user: &str, device: &str) -> StoreResult<DeviceFeed> {
        if self.cursors.unflushed(user, device) {
            // It acked here a moment ago: start from those acks.
            self.cursors.flushed(self.send_timeout).await?;
        }
        let known = {
            let index = self.index.clone();
            let (u, d) = (user.to_string(), device.to_string());
            tokio::task::spawn_blocking(move || index.cursor(&u, &d))
                .await
                .map_err(|e| StoreError::Unavailable(format!("index read failed: {e}")))??
        };
        let now = now_ms();
        let expires = i64::try_from(self.device_expires.as_millis()).unwrap_or(i64::MAX);
        let cursor = match known {
            Some((cursor, seen)) if now.saturating_sub(seen) <= expires => cursor,
            stale => {
                // New (or forgotten): what is sent from now on, made
                // durable before the feed starts.
                let cursor = self.last_final();
                let entry = CursorEntry {
                    user: user.to_string(),
                    device: device.to_string(),
                    cursor,
                    seen_ms: now,
                    register: stale.is_none(),
                    reset: stale.is_some(),
                };
                self.cursors
                    .record_and_wait(entry, self.send_timeout)
                    .await?;
                cursor
            }
        };
        // The cursor first, then the route: the feed's first timeline
        // read comes after both, so a message indexed in between is in the
        // timeline (and perhaps live too: yielded once).
        let a = self.router.attach(user, device, cursor);
        let catch_up = IndexTimeline {
            index: self.index.clone(),
            user: user.into(),
            device: device.into(),
        };
        Ok(DeviceFeed::from_cursor(
            a.in_flight,
            Box::new(catch_up),
            a.live,
            a.lagged,
            Some(a.detach),
        ))
    }

    /// In memory; the moved cursor goes out with the next batch.
    pub fn ack(&self, user: &str, device: &str, message_id: u64) {
        if let Some(cursor) = self.router.ack(user, device, message_id) {
            self.cursors.moved(user, device, cursor);
        }
    }
}

/// A device's catch-up source: pages of its user's timeline in this
/// node's index, read on the blocking pool.
struct IndexTimeline {
    index: Arc<Index>,
    user: Arc<str>,
    device: Arc<str>,
}

impl CatchUp for IndexTimeline {
    fn after(&self, position: u64) -> BoxFuture<'static, StoreResult<CatchUpPage>> {
        let (index, user, device) = (self.index.clone(), self.user.clone(), self.device.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || index.device_page(&user, &device, position, PAGE))
                .await
                .map_err(|e| StoreError::Unavailable(format!("index read failed: {e}")))?
        })
    }
}
