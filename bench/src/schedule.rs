//! When each message is meant to be sent, and the clock every latency is
//! measured on.
//!
//! A run has one clock base. In flood mode a message's send time is the
//! moment it is written; in paced mode (`--rate N` messages per second in
//! total) message `seq` is *due* at `start + seq / N`, whichever sender
//! carries it, and its latency is measured from that due time. A sender
//! that falls behind (window full, server slow) sends late, and the delay
//! shows in the latency instead of silently lowering the offered rate
//! (no coordinated omission).

use std::time::{Duration, Instant};

/// Time between the last connection being up and the first message due.
pub const PACED_START: Duration = Duration::from_millis(100);

/// When the first message is due, `started` being when every connection
/// was up: at once in flood mode, [`PACED_START`] later in paced mode.
pub fn start_of(started: Duration, rate: Option<f64>) -> Duration {
    if rate.is_some() {
        started + PACED_START
    } else {
        started
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The clock base: payload timestamps are nanoseconds since it.
    pub base: Instant,
    /// When the first message is due (after every connection is up).
    pub start: Duration,
    /// Messages per second in total; `None` = flood.
    pub rate: Option<f64>,
}

impl Schedule {
    pub fn new(base: Instant, start: Duration, rate: Option<f64>) -> Schedule {
        Schedule {
            base,
            start,
            rate: rate.filter(|r| *r > 0.0),
        }
    }

    /// Time since the base.
    pub fn now(&self) -> Duration {
        self.base.elapsed()
    }

    /// When `seq` is due, since the base (`None` in flood mode: now).
    pub fn due(&self, seq: usize) -> Option<Duration> {
        self.rate
            .map(|r| self.start + Duration::from_secs_f64(seq as f64 / r))
    }

    /// The instant `seq` is due, for `sleep_until`.
    pub fn due_instant(&self, seq: usize) -> Option<tokio::time::Instant> {
        self.due(seq)
            .map(|d| tokio::time::Instant::from_std(self.base + d))
    }

    /// The send time to stamp into `seq`'s payload: its due time when
    /// paced, else now.
    pub fn stamp(&self, seq: usize) -> Duration {
        self.due(seq).unwrap_or_else(|| self.now())
    }
}

/// The sequence numbers sender `index` of `senders` carries: every
/// `senders`-th of `0..messages`, so a paced load is spread evenly.
pub fn seqs_of(index: usize, senders: usize, messages: usize) -> impl Iterator<Item = usize> {
    (index..messages).step_by(senders.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_seqs_are_due_at_seq_over_rate() {
        let s = Schedule::new(Instant::now(), Duration::from_secs(1), Some(1000.0));
        assert_eq!(s.due(0), Some(Duration::from_secs(1)));
        assert_eq!(s.due(500), Some(Duration::from_millis(1500)));
        assert!(Schedule::new(Instant::now(), Duration::ZERO, None)
            .due(5)
            .is_none());
    }

    #[test]
    fn senders_share_the_sequence_space() {
        let a: Vec<_> = seqs_of(1, 3, 8).collect();
        assert_eq!(a, vec![1, 4, 7]);
    }
}
