//! The bookkeeping of a pipelined sender, shared by the MQTT publisher
//! (`mqtt_client`) and the PB sender (`pb_load`): which 16-bit ids (MQTT
//! packet ids, PB seqs) are awaiting their answer under a window, and how
//! many messages were sent, acked and refused.

use tokio::time::Instant;

/// The ids in flight, at most `window` of them; id 0 is never taken.
pub struct InFlight {
    window: usize,
    /// `slots[id]`: sent with this id, not yet answered.
    slots: Vec<bool>,
    count: usize,
    last: u16,
}

impl InFlight {
    pub fn new(window: usize) -> InFlight {
        InFlight {
            window: window.clamp(1, usize::from(u16::MAX) - 1),
            slots: vec![false; usize::from(u16::MAX) + 1],
            count: 0,
            last: 0,
        }
    }

    /// Whether the window has no room for another id.
    pub fn is_full(&self) -> bool {
        self.count >= self.window
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The next free nonzero id, now in flight.
    pub fn take(&mut self) -> u16 {
        loop {
            self.last = self.last.wrapping_add(1);
            if self.last != 0 && !self.slots[usize::from(self.last)] {
                self.slots[usize::from(self.last)] = true;
                self.count += 1;
                return self.last;
            }
        }
    }

    /// Mark `id` answered; false when it was not in flight.
    pub fn release(&mut self, id: u16) -> bool {
        let slot = &mut self.slots[usize::from(id)];
        if !*slot {
            return false;
        }
        *slot = false;
        self.count -= 1;
        true
    }
}

/// What one sender sent and what the server answered; `R` is the
/// protocol's refusal code.
pub struct SendCounts<R> {
    pub sent: usize,
    pub acked: usize,
    pub refused: usize,
    pub first_refusal: Option<R>,
    /// When the last answer the sender counts arrived.
    pub last_ack: Option<Instant>,
}

impl<R> Default for SendCounts<R> {
    fn default() -> Self {
        SendCounts {
            sent: 0,
            acked: 0,
            refused: 0,
            first_refusal: None,
            last_ack: None,
        }
    }
}

impl<R> SendCounts<R> {
    /// Count one refusal, keeping the first code.
    pub fn refuse(&mut self, code: R) {
        self.refused += 1;
        self.first_refusal.get_or_insert(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_skip_zero_and_those_in_flight() {
        let mut f = InFlight::new(2);
        assert_eq!((f.take(), f.take()), (1, 2));
        assert!(f.is_full());
        assert!(f.release(1) && !f.release(1));
        assert!(!f.is_full() && !f.is_empty());
        assert_eq!(f.take(), 3);
    }
}
