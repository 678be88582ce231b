//! The resend memory: `(sender, client_msg_id)` → message id for the
//! dedupe window, kept in memory and rebuilt from the message rows when a
//! store opens (each row carries its sender and client message id, so no
//! dedupe rows are written).
//!
//! Keys are 64-bit hashes (with a per-process random seed): 8 bytes of key
//! and 8 of id per entry whatever the ids' lengths. A hit is only a
//! candidate: the caller compares it with the stored row, so a hash
//! collision can never answer a different message's ack. Bounded: when
//! `capacity` entries are reached, the oldest ids are dropped first (the
//! window is then shorter than configured for the oldest keys: a resend
//! that old is stored again, which is what happens after the window too).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use imgate_core::id::first_id_at;

/// The map's keys are already seeded hashes: hashing them again would
/// only cost time.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

pub struct DedupeMemory {
    ids: HashMap<u64, u64, BuildHasherDefault<PassThrough>>,
    hasher: RandomState,
    capacity: usize,
    window_ms: i64,
    /// Inserts since the last sweep of expired entries.
    since_sweep: usize,
}

/// Sweep expired entries after this many inserts (a sweep is O(entries),
/// so it runs once per many inserts, never per message).
const SWEEP_EVERY: usize = 16_384;

impl DedupeMemory {
    pub fn new(capacity: usize, window_ms: i64) -> Self {
        DedupeMemory {
            ids: HashMap::default(),
            hasher: RandomState::new(),
            capacity: capacity.max(1),
            window_ms,
            since_sweep: 0,
        }
    }

    fn key(&self, sender: &str, client_msg_id: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(sender.as_bytes());
        h.write_u8(0xff); // not valid UTF-8: the split point is unambiguous
        h.write(client_msg_id.as_bytes());
        h.finish()
    }

    /// The id this key was last stored with, if still remembered. The
    /// caller checks the row (hash collisions) and the window.
    pub fn candidate(&self, sender: &str, client_msg_id: &str) -> Option<u64> {
        self.ids.get(&self.key(sender, client_msg_id)).copied()
    }

    /// Remember a stored message; `now_ms` is the store's clock.
    pub fn insert(&mut self, sender: &str, client_msg_id: &str, id: u64, now_ms: i64) {
        let key = self.key(sender, client_msg_id);
        self.ids.insert(key, id);
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY || self.ids.len() > self.capacity {
            self.sweep(now_ms);
        }
    }

    /// Forget a key if it still points at `id` (a withdrawn message).
    pub fn remove(&mut self, sender: &str, client_msg_id: &str, id: u64) {
        let key = self.key(sender, client_msg_id);
        if self.ids.get(&key) == Some(&id) {
            self.ids.remove(&key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn clear(&mut self) {
        self.ids.clear();
    }

    /// Drop entries older than the window; if still over capacity, move
    /// the cutoff forward until a tenth of the capacity is free.
    fn sweep(&mut self, now_ms: i64) {
        self.since_sweep = 0;
        let mut cutoff = first_id_at(now_ms.saturating_sub(self.window_ms));
        self.ids.retain(|_, id| *id >= cutoff);
        let target = self.capacity - self.capacity / 10;
        let newest = first_id_at(now_ms.saturating_add(1));
        while self.ids.len() > target && cutoff < newest {
            cutoff += (newest - cutoff).div_ceil(4);
            self.ids.retain(|_, id| *id >= cutoff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgate_core::id::MessageIdGenerator;

    #[test]
    fn remembers_within_the_window_and_forgets_after() {
        let mut ids = MessageIdGenerator::new(1);
        let t0 = 1_780_000_000_000;
        let mut d = DedupeMemory::new(1000, 60_000);
        let a = ids.next_at(t0);
        d.insert("alice", "c1", a, t0);
        assert_eq!(d.candidate("alice", "c1"), Some(a));
        assert_eq!(d.candidate("alice", "c2"), None);
        assert_eq!(d.candidate("alicec", "1"), None, "split point matters");
        d.remove("alice", "c1", a + 1);
        assert_eq!(d.candidate("alice", "c1"), Some(a), "only its own id");
        d.sweep(t0 + 61_000);
        assert_eq!(d.candidate("alice", "c1"), None);
    }

    #[test]
    fn stays_within_capacity_dropping_the_oldest() {
        let mut ids = MessageIdGenerator::new(1);
        let t0 = 1_780_000_000_000;
        let mut d = DedupeMemory::new(100, 600_000);
        let mut all = Vec::new();
        for i in 0..1000 {
            let now = t0 + i;
            let id = ids.next_at(now);
            d.insert("u", &format!("c{i}"), id, now);
            all.push(id);
            assert!(d.len() <= 100, "{} entries", d.len());
        }
        assert_eq!(d.candidate("u", "c999"), Some(all[999]), "newest kept");
        assert_eq!(d.candidate("u", "c0"), None, "oldest dropped");
    }
}
