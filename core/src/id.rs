//! Message ids: `(ms since 2024-01-01) << 22 | node_id << 12 | counter`.
//!
//! Unique across a cluster as long as node ids differ (10 bits), strictly
//! increasing per node even when the wall clock steps back or more than 4096
//! ids are taken in one millisecond (the generator then borrows from the
//! next millisecond instead of repeating).

/// 2024-01-01T00:00:00Z in ms since the Unix epoch.
pub const EPOCH_MS: i64 = 1_704_067_200_000;
const NODE_BITS: u32 = 10;
const COUNTER_BITS: u32 = 12;
const NODE_MASK: u64 = (1 << NODE_BITS) - 1;
/// Largest valid node id of a running node.
pub const MAX_NODE_ID: u16 = IMPORT_NODE_ID - 1;
/// The node id of imported messages (migration): no running node has it,
/// so imported ids never meet live ones.
pub const IMPORT_NODE_ID: u16 = (1 << NODE_BITS) - 1;

/// Strictly increasing id source for one node. Not `Sync` on purpose: a
/// store owns one and takes ids in commit order.
#[derive(Debug)]
pub struct MessageIdGenerator {
    node_id: u64,
    last: u64,
}

impl MessageIdGenerator {
    /// `node_id` is masked to 10 bits; validate it in the config.
    pub fn new(node_id: u16) -> Self {
        MessageIdGenerator {
            node_id: u64::from(node_id) & NODE_MASK,
            last: 0,
        }
    }

    /// Start after `last` (e.g. the highest id found in the store at boot),
    /// so a restarted node never reissues an id even if the clock went back.
    pub fn resume_after(&mut self, last: u64) {
        self.last = self.last.max(last);
    }

    /// The last id handed out (or resumed after).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next id for a message stamped at `now_ms` (Unix ms).
    pub fn next_at(&mut self, now_ms: i64) -> u64 {
        let ms = (now_ms - EPOCH_MS).max(0) as u64;
        let candidate = (ms << (NODE_BITS + COUNTER_BITS)) | (self.node_id << COUNTER_BITS);
        let id = if candidate > self.last {
            candidate
        } else {
            // Same millisecond (or the clock went back): next counter value,
            // carrying into the millisecond field when the counter is full.
            let mut next = self.last + 1;
            let node_field = (next >> COUNTER_BITS) & NODE_MASK;
            if node_field != self.node_id {
                // Counter overflowed into the node bits: move to the next ms.
                let ms_part = (self.last >> (NODE_BITS + COUNTER_BITS)) + 1;
                next = (ms_part << (NODE_BITS + COUNTER_BITS)) | (self.node_id << COUNTER_BITS);
            }
            next
        };
        self.last = id;
        id
    }
}

/// The Unix ms timestamp encoded in an id.
pub fn timestamp_of(id: u64) -> i64 {
    (id >> (NODE_BITS + COUNTER_BITS)) as i64 + EPOCH_MS
}

/// The smallest id any node can issue at `ms` (Unix ms): ids below it are
/// older than `ms`.
pub fn first_id_at(ms: i64) -> u64 {
    ((ms - EPOCH_MS).max(0) as u64) << (NODE_BITS + COUNTER_BITS)
}

/// The ids an imported message stamped `ms` (Unix ms) may take, in order
/// (take the first one not used yet): its millisecond, node
/// [`IMPORT_NODE_ID`], counters 0..4096. None before the id epoch
/// (2024-01-01), which ids cannot express.
pub fn import_ids(ms: i64) -> Option<impl Iterator<Item = u64>> {
    if ms < EPOCH_MS {
        return None;
    }
    let base = first_id_at(ms) | (u64::from(IMPORT_NODE_ID) << COUNTER_BITS);
    Some((0..(1u64 << COUNTER_BITS)).map(move |c| base | c))
}

/// The node id encoded in an id.
pub fn node_of(id: u64) -> u16 {
    ((id >> COUNTER_BITS) & NODE_MASK) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_carry_node_and_time() {
        let mut g = MessageIdGenerator::new(7);
        let t = EPOCH_MS + 1_000_000;
        let mut prev = 0;
        for _ in 0..10_000 {
            let id = g.next_at(t);
            assert!(id > prev);
            assert_eq!(node_of(id), 7);
            prev = id;
        }
        // 10 000 ids in one ms overflow the 12-bit counter into later ms.
        assert!(timestamp_of(prev) > t);
        assert_eq!(timestamp_of(g.next_at(t + 100_000)), t + 100_000);
    }

    #[test]
    fn clock_going_back_never_repeats() {
        let mut g = MessageIdGenerator::new(1);
        let a = g.next_at(EPOCH_MS + 5_000);
        let b = g.next_at(EPOCH_MS + 1_000);
        assert!(b > a);
        let mut g2 = MessageIdGenerator::new(1);
        g2.resume_after(b);
        assert!(g2.next_at(EPOCH_MS) > b);
    }

    #[test]
    fn different_nodes_never_collide() {
        let mut a = MessageIdGenerator::new(1);
        let mut b = MessageIdGenerator::new(2);
        let t = EPOCH_MS + 42;
        let ida: Vec<u64> = (0..5000).map(|_| a.next_at(t)).collect();
        let idb: std::collections::HashSet<u64> = (0..5000).map(|_| b.next_at(t)).collect();
        assert!(ida.iter().all(|i| !idb.contains(i)));
    }

    #[test]
    fn import_ids_sit_in_their_millisecond_on_the_reserved_node() {
        let t = EPOCH_MS + 86_400_000;
        let ids: Vec<u64> = import_ids(t).expect("after the epoch").take(3).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(ids
            .iter()
            .all(|&i| timestamp_of(i) == t && node_of(i) == IMPORT_NODE_ID));
        // Ordered by time against each other and against live ids.
        let mut live = MessageIdGenerator::new(MAX_NODE_ID);
        let before = live.next_at(t - 1);
        let after = live.next_at(t + 1);
        assert!(before < ids[0] && ids[2] < after);
        assert_eq!(import_ids(t).map(Iterator::count), Some(4096));
        assert!(import_ids(EPOCH_MS - 1).is_none());
    }
}
