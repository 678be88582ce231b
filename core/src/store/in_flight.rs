//! The in-flight window of one attached device: which deliveries it has
//! been handed but not acked yet, and from that its delivery cursor (the
//! highest position in its user's timeline below which every message for
//! this device is acked).
//!
//! Deliveries are handed out in ascending id order, so the window is an
//! ordered queue: an ack marks its entry, and the acked prefix is popped,
//! moving the cursor. Acks may arrive in any order; unknown ids (already
//! popped, or from an older session of the device) are ignored, which at
//! worst means a redelivery.
//!
//! Bounded: a device that never acks (a client without any ack mechanism)
//! cannot grow the window past `capacity`. The oldest unacked entry is then
//! dropped from tracking and the cursor is frozen just below it for the
//! rest of this attachment: deliveries go on, nothing is lost (everything
//! from the frozen point is redelivered after a reconnect).
//!
//! Every window adds its unacked entries to one process-wide gauge,
//! [`unacked_deliveries`] (the gateway exports it as
//! `imgate_deliveries_unacked`): deliveries handed to the devices attached
//! to this process and not acked yet.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Unacked entries of every [`InFlight`] window of this process.
static UNACKED: AtomicI64 = AtomicI64::new(0);

/// Deliveries handed to the devices attached to this process and not
/// acked yet (the tracked ones: at most `capacity` per device).
pub fn unacked_deliveries() -> i64 {
    UNACKED.load(Ordering::Relaxed)
}

pub struct InFlight {
    state: Mutex<State>,
    capacity: usize,
    /// Woken when the cursor moves (the store persists it).
    pub moved: Notify,
}

struct State {
    window: VecDeque<(u64, bool)>,
    /// Everything at or below it is acked (or not for this device).
    cursor: u64,
    /// The highest id handed out.
    last: u64,
    /// The cursor may not pass this any more (see the module docs).
    frozen: Option<u64>,
}

impl InFlight {
    pub fn new(cursor: u64, capacity: usize) -> Self {
        InFlight {
            state: Mutex::new(State {
                window: VecDeque::new(),
                cursor,
                last: cursor,
                frozen: None,
            }),
            capacity: capacity.max(1),
            moved: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The device was handed `id` (ids only grow).
    pub fn delivered(&self, id: u64) {
        let mut s = self.lock();
        if id <= s.last {
            return;
        }
        if s.window.len() >= self.capacity {
            if let Some((oldest, acked)) = s.window.pop_front() {
                if !acked {
                    UNACKED.fetch_sub(1, Ordering::Relaxed);
                    let below = oldest.saturating_sub(1);
                    s.frozen = Some(s.frozen.map_or(below, |f| f.min(below)));
                }
            }
        }
        s.window.push_back((id, false));
        UNACKED.fetch_add(1, Ordering::Relaxed);
        s.last = id;
    }

    /// The device acked `id`. True if the cursor moved.
    pub fn ack(&self, id: u64) -> bool {
        let mut s = self.lock();
        let Ok(i) = s.window.binary_search_by_key(&id, |e| e.0) else {
            return false;
        };
        if s.window[i].1 {
            return false;
        }
        s.window[i].1 = true;
        UNACKED.fetch_sub(1, Ordering::Relaxed);
        if i != 0 {
            return false;
        }
        let mut top = s.cursor;
        while let Some(&(id, true)) = s.window.front() {
            top = id;
            s.window.pop_front();
        }
        if s.window.is_empty() {
            top = s.last;
        }
        let top = s.frozen.map_or(top, |f| top.min(f));
        if top > s.cursor {
            s.cursor = top;
            drop(s);
            self.moved.notify_one();
            return true;
        }
        false
    }

    pub fn cursor(&self) -> u64 {
        self.lock().cursor
    }

    /// Unacked deliveries tracked now.
    pub fn unacked(&self) -> usize {
        self.lock().window.iter().filter(|e| !e.1).count()
    }
}

impl Drop for InFlight {
    /// The device detached: what it did not ack leaves the gauge (it stays
    /// pending in the store and is delivered again at its next attach).
    fn drop(&mut self) {
        let left = self.lock().window.iter().filter(|e| !e.1).count();
        UNACKED.fetch_sub(left as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_follows_the_acked_prefix_whatever_the_ack_order() {
        let f = InFlight::new(10, 100);
        for id in [11, 12, 13, 14] {
            f.delivered(id);
        }
        assert!(!f.ack(13));
        assert_eq!(f.cursor(), 10);
        assert!(f.ack(11));
        assert_eq!(f.cursor(), 11);
        assert!(f.ack(12));
        assert_eq!(f.cursor(), 13, "12 and the earlier 13");
        assert!(!f.ack(99), "unknown id");
        assert!(!f.ack(12), "already popped");
        assert!(f.ack(14));
        assert_eq!(f.cursor(), 14);
        assert_eq!(f.unacked(), 0);
    }

    #[test]
    fn an_empty_window_puts_the_cursor_at_the_last_delivery() {
        let f = InFlight::new(0, 100);
        f.delivered(5);
        f.delivered(9); // 6..8 were not for this device
        f.ack(5);
        f.ack(9);
        assert_eq!(f.cursor(), 9);
    }

    #[test]
    fn a_device_that_never_acks_freezes_the_cursor_and_stays_bounded() {
        let f = InFlight::new(0, 3);
        for id in 1..=10 {
            f.delivered(id);
        }
        assert!(f.unacked() <= 3);
        for id in 1..=10 {
            f.ack(id);
        }
        assert!(f.cursor() < 8, "frozen below the first dropped unacked");
        let g = InFlight::new(0, 3);
        for id in 1..=3 {
            g.delivered(id);
            g.ack(id);
        }
        for id in 4..=10 {
            g.delivered(id);
            g.ack(id);
        }
        assert_eq!(g.cursor(), 10, "an acking device never freezes");
    }
}
