//! Device cursors that moved since the last commit. Acks move a device's
//! cursor in memory (its [`imgate_core::store::InFlight`] window); the
//! moved value lands here, one entry per device however many acks came,
//! and the writer writes them with its next batch.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
pub struct CursorBook {
    moved: Mutex<HashMap<(String, String), u64>>,
}

impl CursorBook {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), u64>> {
        match self.moved.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Record a device's new cursor. True if the book was empty (the
    /// caller then asks the writer for a flush).
    pub fn record(&self, user: &str, device: &str, cursor: u64) -> bool {
        let mut m = self.lock();
        let was_empty = m.is_empty();
        let c = m.entry((user.to_string(), device.to_string())).or_default();
        *c = (*c).max(cursor);
        was_empty
    }

    /// Everything recorded so far (the writer's next batch).
    pub fn take(&self) -> Vec<((String, String), u64)> {
        self.lock().drain().collect()
    }

    /// A failed commit: keep the moves for the next one.
    pub fn put_back(&self, moved: Vec<((String, String), u64)>) {
        let mut m = self.lock();
        for (k, c) in moved {
            let e = m.entry(k).or_default();
            *e = (*e).max(c);
        }
    }
}
