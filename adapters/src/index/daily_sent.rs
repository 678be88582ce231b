//! The daily quota's counter (`Store::sent_on_day`), kept the same way by
//! both stores: a table `(UTC day, user) → messages stored`, bumped once
//! per sender in the transaction that stores their new messages, so the count is exactly as
//! durable as the messages. Keyed by day first, so days older than
//! yesterday are dropped by a range at the front (a bounded amount per
//! transaction, like expired dedupe keys).

use imgate_core::{utc_day, StoreError};
use redb::{ReadTransaction, ReadableTable, Table, TableDefinition};

/// (UTC day, user) → messages the user sent that day.
pub(crate) const DAILY_SENT: TableDefinition<(i64, &str), u64> = TableDefinition::new("daily_sent");

/// At most this many old rows are dropped per transaction.
const EXPIRE_BATCH: usize = 256;

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("daily counter: {e}"))
}

/// Add `n` messages `sender` stored on UTC `day`.
pub(crate) fn add(
    table: &mut Table<'_, (i64, &'static str), u64>,
    day: i64,
    sender: &str,
    n: u64,
) -> Result<(), StoreError> {
    let key = (day, sender);
    let before = table.get(key).map_err(io)?.map(|v| v.value()).unwrap_or(0);
    table.insert(key, before + n).map_err(io)?;
    Ok(())
}

/// Drop counts of days before yesterday (of `now_ms`, the store's clock).
pub(crate) fn expire(
    table: &mut Table<'_, (i64, &'static str), u64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let keep_from = utc_day(now_ms) - 1;
    let mut old = Vec::new();
    for entry in table
        .range(..(keep_from, ""))
        .map_err(io)?
        .take(EXPIRE_BATCH)
    {
        let (k, _) = entry.map_err(io)?;
        let (day, user) = k.value();
        old.push((day, user.to_string()));
    }
    for (day, user) in old {
        table.remove((day, user.as_str())).map_err(io)?;
    }
    Ok(())
}

/// The count of `user` on `day` (0 if none).
pub(crate) fn read(txn: &ReadTransaction, user: &str, day: i64) -> Result<u64, StoreError> {
    let table = match txn.open_table(DAILY_SENT) {
        Ok(t) => t,
        // Created with the first counted message.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    Ok(table
        .get((day, user))
        .map_err(io)?
        .map(|v| v.value())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgate_core::DAY_MS;

    #[test]
    fn counts_per_day_and_drops_days_before_yesterday() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let day = 20_000;
        let at = |d: i64| d * DAY_MS + 5;
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(DAILY_SENT).unwrap();
            add(&mut t, day - 2, "alice", 1).unwrap();
            add(&mut t, day - 1, "alice", 1).unwrap();
            add(&mut t, day, "alice", 1).unwrap();
            add(&mut t, day, "alice", 1).unwrap();
            add(&mut t, day, "bob", 1).unwrap();
            expire(&mut t, at(day)).unwrap();
        }
        txn.commit().unwrap();
        let r = db.begin_read().unwrap();
        assert_eq!(read(&r, "alice", day).unwrap(), 2);
        assert_eq!(read(&r, "bob", day).unwrap(), 1);
        assert_eq!(read(&r, "alice", day - 1).unwrap(), 1, "yesterday kept");
        assert_eq!(read(&r, "alice", day - 2).unwrap(), 0, "older dropped");
        assert_eq!(read(&r, "carol", day).unwrap(), 0);
    }
}
