//! Pruning: messages whose `expireDuration` passed, and history older
//! than the retention, leave the index (row, history, timelines,
//! conversations) a bounded batch per pass.
//!
//! Expiring messages are listed in [`EXPIRES`] by the time they expire, so
//! a pass finds them without scanning rows. Message ids grow with time
//! (`id::first_id_at`), so the rows older than the retention are the
//! first ones of the message table.

use imgate_core::store::Pruned;
use imgate_core::StoreError;
use redb::{ReadableTable, TableDefinition};

use super::messages::each_from;
use super::tables::io;
use super::write::{IndexWrite, Removal};

/// (expires at ms, message_id): messages with an `expireDuration`.
pub const EXPIRES: TableDefinition<(i64, u64), ()> = TableDefinition::new("expires");

/// Messages removed per pass, at most (one write transaction).
pub const PRUNE_BATCH: usize = 2_000;

impl IndexWrite<'_> {
    /// Remove up to `limit` messages expired at `now`, then rows with an
    /// id below `cutoff` (the retention), oldest first.
    pub fn prune(
        &mut self,
        now: i64,
        cutoff: Option<u64>,
        limit: usize,
    ) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let mut due = Vec::new();
        for item in self
            .expires
            .range(..=(now, u64::MAX))
            .map_err(io)?
            .take(limit + 1)
        {
            due.push(item.map_err(io)?.0.value());
        }
        if due.len() > limit {
            due.truncate(limit);
            pruned.more = true;
        }
        for (at, id) in due {
            if self.remove_as(id, Removal::Expired)?.is_none() {
                // A stale entry (the row went another way).
                self.expires.remove((at, id)).map_err(io)?;
            }
            pruned.expired += 1;
        }
        let Some(cutoff) = cutoff else {
            return Ok(pruned);
        };
        let room = limit.saturating_sub(pruned.expired);
        self.flush_rows()?;
        let mut old = Vec::new();
        each_from(&self.messages, 0, |id, _| {
            if id >= cutoff {
                return Ok(false);
            }
            if old.len() == room {
                pruned.more = true;
                return Ok(false);
            }
            old.push(id);
            Ok(true)
        })?;
        for id in old {
            if self.remove_as(id, Removal::AgedOut)?.is_some() {
                pruned.aged_out += 1;
            }
        }
        Ok(pruned)
    }
}
