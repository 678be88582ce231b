//! Message rows packed into chunks of about one storage page.
//!
//! The message table's keys only grow, and a B-tree that splits full
//! leaves in the middle leaves every page it appended to half empty: one
//! row per entry cost twice its size on disk and one tree insert per
//! message. So rows are stored several to an entry: the key is the first
//! id of the chunk, the value is `[varint id − key][varint len][row]…` in
//! ascending id order, and every id in a chunk is below the next chunk's
//! key. New rows are appended to the last chunk until it reaches
//! [`CHUNK_TARGET`] bytes (one entry per leaf page, nearly full).
//! Lookups take the chunk at or before an id and walk its headers.

use super::row::RowError;

/// Bytes after which a chunk takes no more rows (one fits a 4 KiB page).
pub const CHUNK_TARGET: usize = 3800;

fn varint(rest: &mut &[u8]) -> Result<u64, RowError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, tail) = rest.split_first().ok_or(RowError::new("truncated chunk"))?;
        *rest = tail;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(RowError::new("chunk varint too long"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The rows of a chunk stored under `key`, ascending.
pub struct Entries<'a> {
    key: u64,
    rest: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(u64, &'a [u8]), RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let mut next = || -> Result<(u64, &'a [u8]), RowError> {
            let delta = varint(&mut self.rest)?;
            let len = varint(&mut self.rest)?;
            if len > self.rest.len() as u64 {
                return Err(RowError::new("chunk entry beyond its chunk"));
            }
            let (row, tail) = self.rest.split_at(len as usize);
            self.rest = tail;
            let id = self
                .key
                .checked_add(delta)
                .ok_or(RowError::new("chunk id overflow"))?;
            Ok((id, row))
        };
        let item = next();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

pub fn entries(key: u64, chunk: &[u8]) -> Entries<'_> {
    Entries { key, rest: chunk }
}

/// The row of `id` in the chunk stored under `key`.
pub fn find(key: u64, chunk: &[u8], id: u64) -> Result<Option<&[u8]>, RowError> {
    for e in entries(key, chunk) {
        let (at, row) = e?;
        if at == id {
            return Ok(Some(row));
        }
        if at > id {
            break;
        }
    }
    Ok(None)
}

/// Append `id` (above every id in the chunk) to the chunk under `key`.
pub fn push(chunk: &mut Vec<u8>, key: u64, id: u64, row: &[u8]) {
    put_varint(chunk, id - key);
    put_varint(chunk, row.len() as u64);
    chunk.extend_from_slice(row);
}

/// The chunk rewritten with `id` inserted in order (replacing a row with
/// the same id).
pub fn inserted(key: u64, chunk: &[u8], id: u64, row: &[u8]) -> Result<Vec<u8>, RowError> {
    let mut out = Vec::with_capacity(chunk.len() + row.len() + 8);
    let mut placed = false;
    for e in entries(key, chunk) {
        let (at, r) = e?;
        if !placed && at >= id {
            push(&mut out, key, id, row);
            placed = true;
            if at == id {
                continue;
            }
        }
        push(&mut out, key, at, r);
    }
    if !placed {
        push(&mut out, key, id, row);
    }
    Ok(out)
}

/// The chunk without `id`, and the removed row (None: not in it).
#[allow(clippy::type_complexity)]
pub fn without(key: u64, chunk: &[u8], id: u64) -> Result<(Vec<u8>, Option<Vec<u8>>), RowError> {
    let mut out = Vec::with_capacity(chunk.len());
    let mut removed = None;
    for e in entries(key, chunk) {
        let (at, r) = e?;
        if at == id {
            removed = Some(r.to_vec());
        } else {
            push(&mut out, key, at, r);
        }
    }
    Ok((out, removed))
}

/// Split an oversized chunk under `key` in two: `(first, (second key,
/// second))`, or None if it has a single row.
#[allow(clippy::type_complexity)]
pub fn split(key: u64, chunk: &[u8]) -> Result<Option<(Vec<u8>, (u64, Vec<u8>))>, RowError> {
    let all = entries(key, chunk).collect::<Result<Vec<_>, _>>()?;
    if all.len() < 2 {
        return Ok(None);
    }
    let half = all.len() / 2;
    let mut first = Vec::with_capacity(chunk.len() / 2 + 16);
    for (id, r) in &all[..half] {
        push(&mut first, key, *id, r);
    }
    let second_key = all[half].0;
    let mut second = Vec::with_capacity(chunk.len() / 2 + 16);
    for (id, r) in &all[half..] {
        push(&mut second, second_key, *id, r);
    }
    Ok(Some((first, (second_key, second))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(key: u64, chunk: &[u8]) -> Vec<u64> {
        entries(key, chunk).map(|e| e.unwrap().0).collect()
    }

    #[test]
    fn push_find_insert_remove_split() {
        let mut c = Vec::new();
        push(&mut c, 100, 100, b"a");
        push(&mut c, 100, 105, b"bb");
        push(&mut c, 100, 300, b"");
        assert_eq!(ids(100, &c), [100, 105, 300]);
        assert_eq!(find(100, &c, 105).unwrap(), Some(&b"bb"[..]));
        assert_eq!(find(100, &c, 104).unwrap(), None);
        let c2 = inserted(100, &c, 200, b"z").unwrap();
        assert_eq!(ids(100, &c2), [100, 105, 200, 300]);
        let c3 = inserted(100, &c2, 105, b"new").unwrap();
        assert_eq!(find(100, &c3, 105).unwrap(), Some(&b"new"[..]));
        let (c4, gone) = without(100, &c3, 100).unwrap();
        assert_eq!(gone.as_deref(), Some(&b"a"[..]));
        assert_eq!(ids(100, &c4), [105, 200, 300], "key stays below its ids");
        let (first, (k2, second)) = split(100, &c4).unwrap().unwrap();
        assert_eq!(ids(100, &first), [105]);
        assert_eq!((k2, ids(k2, &second)), (200, vec![200, 300]));
        assert_eq!(find(k2, &second, 300).unwrap(), Some(&b""[..]));
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let mut c = Vec::new();
        push(&mut c, 1, 5, b"hello");
        for cut in 1..c.len() {
            assert!(entries(1, &c[..cut]).any(|e| e.is_err()), "cut {cut}");
        }
        assert!(entries(u64::MAX, &c).any(|e| e.is_err()), "id overflow");
    }
}
