//! The message table over chunks (`chunk.rs`): rows by id for readers
//! ([`Rows`]), and for the writer the open last chunk that new rows are
//! appended to ([`Tail`]).

use imgate_core::StoreError;
use redb::{ReadableTable, Table};

use super::chunk::{self, CHUNK_TARGET};
use super::row::{self, StoredMessage};
use super::tables::{corrupt, io};

/// Rows by id, remembering the last chunk read (sync and history read ids
/// that mostly share chunks).
pub struct Rows<'a, T> {
    table: &'a T,
    cached: Option<(u64, u64, Vec<u8>)>,
}

impl<'a, T: ReadableTable<u64, &'static [u8]>> Rows<'a, T> {
    pub fn new(table: &'a T) -> Self {
        Rows {
            table,
            cached: None,
        }
    }

    /// The raw row of `id`.
    pub fn bytes(&mut self, id: u64) -> Result<Option<&[u8]>, StoreError> {
        let hit = matches!(&self.cached, Some((key, last, _)) if *key <= id && id <= *last);
        if !hit {
            let Some(entry) = self.table.range(..=id).map_err(io)?.next_back() else {
                return Ok(None);
            };
            let (k, v) = entry.map_err(io)?;
            let (key, bytes) = (k.value(), v.value().to_vec());
            let mut last = key;
            for e in chunk::entries(key, &bytes) {
                last = e.map_err(corrupt)?.0;
            }
            self.cached = Some((key, last, bytes));
        }
        match &self.cached {
            Some((key, _, bytes)) => chunk::find(*key, bytes, id).map_err(corrupt),
            None => Ok(None),
        }
    }

    pub fn get(&mut self, id: u64) -> Result<Option<StoredMessage>, StoreError> {
        match self.bytes(id)? {
            Some(b) => row::decode(id, b).map(Some).map_err(corrupt),
            None => Ok(None),
        }
    }
}

/// Every row with id ≥ `from`, ascending, as `(id, raw row)`, handed to
/// `f` until it returns false.
pub fn each_from<T: ReadableTable<u64, &'static [u8]>>(
    table: &T,
    from: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    // The chunk holding `from` starts at or before it.
    let start = match table.range(..=from).map_err(io)?.next_back() {
        Some(e) => e.map_err(io)?.0.value(),
        None => 0,
    };
    for entry in table.range(start..).map_err(io)? {
        let (k, v) = entry.map_err(io)?;
        for e in chunk::entries(k.value(), v.value()) {
            let (id, row) = e.map_err(corrupt)?;
            if id >= from && !f(id, row)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The highest message id stored (0 if none).
pub fn last_id<T: ReadableTable<u64, &'static [u8]>>(table: &T) -> Result<u64, StoreError> {
    let Some((k, v)) = table.last().map_err(io)? else {
        return Ok(0);
    };
    let key = k.value();
    let mut last = key;
    for e in chunk::entries(key, v.value()) {
        last = e.map_err(corrupt)?.0;
    }
    Ok(last)
}

/// The writer's end of the table: the last chunk, kept in memory while
/// rows are appended to it and written once per transaction.
#[derive(Default)]
pub struct Tail {
    loaded: bool,
    /// The open chunk: key, bytes, and whether it changed.
    open: Option<(u64, Vec<u8>, bool)>,
    /// The highest id stored.
    last: u64,
}

type MessageTable<'t> = Table<'t, u64, &'static [u8]>;

impl Tail {
    fn load(&mut self, table: &MessageTable<'_>) -> Result<(), StoreError> {
        if self.loaded {
            return Ok(());
        }
        self.loaded = true;
        if let Some(entry) = table.last().map_err(io)? {
            let (k, v) = entry;
            let (key, bytes) = (k.value(), v.value().to_vec());
            let mut last = key;
            for e in chunk::entries(key, &bytes) {
                last = e.map_err(corrupt)?.0;
            }
            self.last = last;
            if bytes.len() < CHUNK_TARGET {
                self.open = Some((key, bytes, false));
            }
        }
        Ok(())
    }

    /// Store a row: appended to the open chunk when its id is the highest,
    /// else placed in the chunk that covers it.
    pub fn put(
        &mut self,
        table: &mut MessageTable<'_>,
        id: u64,
        row: &[u8],
    ) -> Result<(), StoreError> {
        self.load(table)?;
        if id <= self.last {
            return self.place(table, id, row);
        }
        self.last = id;
        match &mut self.open {
            Some((key, bytes, dirty)) if bytes.len() < CHUNK_TARGET => {
                chunk::push(bytes, *key, id, row);
                *dirty = true;
            }
            _ => {
                self.flush(table)?;
                let mut bytes = Vec::with_capacity(CHUNK_TARGET + row.len());
                chunk::push(&mut bytes, id, id, row);
                self.open = Some((id, bytes, true));
            }
        }
        Ok(())
    }

    /// The raw row of `id` as this transaction sees it.
    pub fn get(&self, table: &MessageTable<'_>, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((key, bytes, _)) = &self.open {
            if id >= *key {
                return Ok(chunk::find(*key, bytes, id)
                    .map_err(corrupt)?
                    .map(<[u8]>::to_vec));
            }
        }
        Ok(Rows::new(table).bytes(id)?.map(<[u8]>::to_vec))
    }

    /// Take `id`'s row out; returns it.
    pub fn remove(
        &mut self,
        table: &mut MessageTable<'_>,
        id: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.settle(table)?;
        let Some((key, bytes)) = covering(table, id)? else {
            return Ok(None);
        };
        let (rest, removed) = chunk::without(key, &bytes, id).map_err(corrupt)?;
        if removed.is_some() {
            if rest.is_empty() {
                table.remove(key).map_err(io)?;
            } else {
                table.insert(key, rest.as_slice()).map_err(io)?;
            }
        }
        Ok(removed)
    }

    /// A row below the highest id (an import): into the chunk covering it,
    /// split when it grew past twice the target.
    fn place(
        &mut self,
        table: &mut MessageTable<'_>,
        id: u64,
        row: &[u8],
    ) -> Result<(), StoreError> {
        self.settle(table)?;
        let Some((key, bytes)) = covering(table, id)? else {
            let mut bytes = Vec::with_capacity(row.len() + 8);
            chunk::push(&mut bytes, id, id, row);
            table.insert(id, bytes.as_slice()).map_err(io)?;
            return Ok(());
        };
        let grown = chunk::inserted(key, &bytes, id, row).map_err(corrupt)?;
        if grown.len() > 2 * CHUNK_TARGET {
            if let Some((first, (key2, second))) = chunk::split(key, &grown).map_err(corrupt)? {
                table.insert(key, first.as_slice()).map_err(io)?;
                table.insert(key2, second.as_slice()).map_err(io)?;
                return Ok(());
            }
        }
        table.insert(key, grown.as_slice()).map_err(io)?;
        Ok(())
    }

    /// Store rows given in ascending id order (an import batch): the ones
    /// above the highest id are appended, the others merged into the
    /// chunks covering them, each such chunk read and written once and
    /// cut into pieces of about [`CHUNK_TARGET`] bytes.
    pub fn put_sorted(
        &mut self,
        table: &mut MessageTable<'_>,
        rows: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        self.load(table)?;
        let split = rows.partition_point(|(id, _)| *id <= self.last);
        let (below, above) = rows.split_at(split);
        if !below.is_empty() {
            self.settle(table)?;
            let mut rest = below;
            while let Some(&(first, _)) = rest.first() {
                rest = merge_into_covering(table, first, rest)?;
            }
        }
        for (id, row) in above {
            self.put(table, *id, row)?;
        }
        Ok(())
    }

    /// Write the open chunk if it changed (before the commit).
    pub fn flush(&mut self, table: &mut MessageTable<'_>) -> Result<(), StoreError> {
        if let Some((key, bytes, dirty)) = &mut self.open {
            if *dirty {
                table.insert(*key, bytes.as_slice()).map_err(io)?;
                *dirty = false;
            }
        }
        Ok(())
    }

    /// Before editing stored chunks in place: write the open chunk and
    /// forget it (it is read back on the next append).
    fn settle(&mut self, table: &mut MessageTable<'_>) -> Result<(), StoreError> {
        self.flush(table)?;
        self.open = None;
        self.loaded = false;
        Ok(())
    }
}

/// Merge the leading rows of `rows` (ascending, the first one `first`)
/// that belong to the chunk covering `first` (or, below the first chunk,
/// to the gap before it) into it; the rows left for later chunks.
fn merge_into_covering<'r>(
    table: &mut MessageTable<'_>,
    first: u64,
    rows: &'r [(u64, Vec<u8>)],
) -> Result<&'r [(u64, Vec<u8>)], StoreError> {
    let covering = covering(table, first)?;
    // Every id of this chunk is below the next chunk's key.
    let next = match first.checked_add(1) {
        Some(after) => match table.range(after..).map_err(io)?.next() {
            Some(e) => e.map_err(io)?.0.value(),
            None => u64::MAX,
        },
        None => u64::MAX,
    };
    let n = rows.partition_point(|(id, _)| *id < next);
    let (mine, rest) = rows.split_at(n);
    let old: Vec<(u64, &[u8])> = match &covering {
        Some((key, bytes)) => chunk::entries(*key, bytes)
            .collect::<Result<_, _>>()
            .map_err(corrupt)?,
        None => Vec::new(),
    };
    // Both ascending: merge (a new row replaces a stored one of its id).
    let mut merged: Vec<(u64, &[u8])> = Vec::with_capacity(old.len() + mine.len());
    let (mut a, mut b) = (old.into_iter().peekable(), mine.iter().peekable());
    loop {
        let take_new = match (a.peek().map(|e| e.0), b.peek().map(|e| e.0)) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(x), Some(y)) => {
                if x == y {
                    a.next();
                }
                y <= x
            }
        };
        if take_new {
            if let Some((id, row)) = b.next() {
                merged.push((*id, row.as_slice()));
            }
        } else if let Some(e) = a.next() {
            merged.push(e);
        }
    }
    // Cut into pieces; the first keeps the stored key (or takes its own).
    let mut piece_key = covering.as_ref().map_or(first, |(key, _)| *key);
    let mut piece: Vec<u8> = Vec::with_capacity(CHUNK_TARGET + 256);
    for (id, row) in merged {
        if piece.len() >= CHUNK_TARGET {
            table.insert(piece_key, piece.as_slice()).map_err(io)?;
            piece.clear();
            piece_key = id;
        }
        chunk::push(&mut piece, piece_key, id, row);
    }
    if !piece.is_empty() {
        table.insert(piece_key, piece.as_slice()).map_err(io)?;
    }
    Ok(rest)
}

/// The chunk whose key is at or below `id`.
fn covering(table: &MessageTable<'_>, id: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    match table.range(..=id).map_err(io)?.next_back() {
        Some(e) => {
            let (k, v) = e.map_err(io)?;
            Ok(Some((k.value(), v.value().to_vec())))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableTableMetadata, TableDefinition};

    const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

    fn row(id: u64) -> Vec<u8> {
        format!("row-{id}-{}", "x".repeat((id % 300) as usize)).into_bytes()
    }

    #[test]
    fn rows_survive_chunking_random_places_removals_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("m.redb")).unwrap();
        let mut expected = std::collections::BTreeMap::new();
        // Several transactions of appends (ids with gaps), then imports
        // below the highest id, then removals.
        for round in 0..5u64 {
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(T).unwrap();
                let mut tail = Tail::default();
                for i in 0..200 {
                    let id = 1_000 + round * 10_000 + i * 7;
                    tail.put(&mut t, id, &row(id)).unwrap();
                    expected.insert(id, row(id));
                }
                tail.flush(&mut t).unwrap();
            }
            txn.commit().unwrap();
        }
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            let mut tail = Tail::default();
            for id in [5, 1_003, 20_500, 20_501, 40_000 + 1_000 + 7 * 199 - 1] {
                tail.put(&mut t, id, &row(id)).unwrap();
                expected.insert(id, row(id));
            }
            for id in [5, 1_000, 30_000, 41_000 + 7 * 199] {
                let got = tail.remove(&mut t, id).unwrap();
                assert_eq!(got, expected.remove(&id), "remove {id}");
            }
            // Appending after edits continues above the highest id.
            tail.put(&mut t, 99_999, &row(99_999)).unwrap();
            expected.insert(99_999, row(99_999));
            assert_eq!(tail.get(&t, 99_999).unwrap(), Some(row(99_999)));
            tail.flush(&mut t).unwrap();
        }
        txn.commit().unwrap();
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        let mut rows = Rows::new(&t);
        for (id, want) in &expected {
            assert_eq!(rows.bytes(*id).unwrap(), Some(&want[..]), "id {id}");
        }
        assert_eq!(rows.bytes(1_001).unwrap(), None);
        let mut all = Vec::new();
        each_from(&t, 0, |id, b| {
            all.push((id, b.to_vec()));
            Ok(true)
        })
        .unwrap();
        assert_eq!(all, expected.clone().into_iter().collect::<Vec<_>>());
        let mut from = Vec::new();
        each_from(&t, 20_501, |id, _| {
            from.push(id);
            Ok(from.len() < 3)
        })
        .unwrap();
        assert_eq!(from, [20_501, 21_000, 21_007]);
        assert_eq!(last_id(&t).unwrap(), 99_999);
        drop(t);
        drop(r);
        // A sorted batch over every case: below the first chunk, inside
        // and between stored chunks, replacing a stored id, above the top.
        let batch: Vec<(u64, Vec<u8>)> = [1, 2, 999, 1_004, 1_005, 1_010, 20_502]
            .into_iter()
            .chain((30_000..36_000).step_by(3))
            .chain([41_000, 41_001, 99_999, 100_000, 100_003])
            .map(|id| (id, format!("new-{id}").into_bytes()))
            .collect();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            let mut tail = Tail::default();
            tail.put_sorted(&mut t, &batch).unwrap();
            tail.flush(&mut t).unwrap();
        }
        txn.commit().unwrap();
        for (id, row) in &batch {
            expected.insert(*id, row.clone());
        }
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        let mut all = Vec::new();
        each_from(&t, 0, |id, b| {
            all.push((id, b.to_vec()));
            Ok(true)
        })
        .unwrap();
        assert_eq!(all, expected.clone().into_iter().collect::<Vec<_>>());
        let mut rows = Rows::new(&t);
        for (id, want) in &expected {
            assert_eq!(rows.bytes(*id).unwrap(), Some(&want[..]), "id {id}");
        }
        // Every chunk stays near the target, keys below their ids.
        for e in t.iter().unwrap() {
            let (k, v) = e.unwrap();
            assert!(v.value().len() < 2 * CHUNK_TARGET, "chunk {}", k.value());
        }
        assert_eq!(last_id(&t).unwrap(), 100_003);
        // Dense: far fewer entries than rows.
        assert!(
            t.len().unwrap() * 10 < expected.len() as u64,
            "{}",
            t.len().unwrap()
        );
    }
}
