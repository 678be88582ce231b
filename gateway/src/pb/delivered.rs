//! The ids this PB session delivered and the client has not acked yet:
//! the fast path of a `DeliverAck`. An ack of one of them is genuine (this
//! device was handed the message), so it needs no store lookup; any other
//! ack (a message delivered to an earlier connection, or forgotten here)
//! is checked against the store ([`crate::sessions::SessionCtx`]`::ack_claimed`).
//!
//! Bounded at [`DELIVERED_MAX`] ids, oldest forgotten first (a forgotten
//! one only costs its ack a lookup). Deliveries come in ascending id order
//! and acks mostly in the same order, so an ack is usually found at the
//! front. The buffer is released whenever it empties, so an idle session
//! keeps none.

use std::collections::VecDeque;

/// Unacked deliveries remembered per session (8 bytes each).
pub const DELIVERED_MAX: usize = 1024;

#[derive(Default)]
pub struct DeliveredIds {
    ids: VecDeque<u64>,
}

impl DeliveredIds {
    /// The session pushed message `id` to the client.
    pub fn delivered(&mut self, id: u64) {
        if self.ids.len() >= DELIVERED_MAX {
            self.ids.pop_front();
        }
        self.ids.push_back(id);
    }

    /// The client acked `id`: true (and forgotten) if it was delivered
    /// here and not acked yet.
    pub fn take(&mut self, id: u64) -> bool {
        let Some(i) = self.ids.iter().position(|&d| d == id) else {
            return false;
        };
        self.ids.remove(i);
        if self.ids.is_empty() {
            self.ids = VecDeque::new();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_is_known_once_in_any_order() {
        let mut d = DeliveredIds::default();
        for id in [10, 20, 30] {
            d.delivered(id);
        }
        assert!(d.take(20));
        assert!(!d.take(20), "acked already");
        assert!(!d.take(15), "never delivered here");
        assert!(d.take(10));
        assert!(d.take(30));
        assert_eq!(d.ids.capacity(), 0, "released when empty");
    }

    #[test]
    fn bounded_oldest_forgotten_first() {
        let mut d = DeliveredIds::default();
        for id in 0..(DELIVERED_MAX as u64 + 2) {
            d.delivered(id);
        }
        assert_eq!(d.ids.len(), DELIVERED_MAX);
        assert!(!d.take(0));
        assert!(!d.take(1));
        assert!(d.take(2));
        assert!(d.take(DELIVERED_MAX as u64 + 1));
    }
}
