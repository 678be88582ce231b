//! Replay protection for admin signatures: every accepted signature is
//! remembered until its timestamp leaves the accepted window, and the same
//! signature (same nonce and timestamp) is refused a second time with 244.
//! The seeds' sign format is unchanged, so integrators keep working.
//!
//! Bounded: at most `capacity` signatures are kept. When it is full, the
//! oldest is forgotten and every timestamp at or before it is refused from
//! then on (243), so a forgotten signature can never be replayed: under an
//! extreme request rate the accepted window shrinks instead of the cache
//! growing.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use imgate_core::{ErrorCode, ImError};

pub struct NonceCache {
    window_ms: i64,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seen: HashSet<String>,
    /// (timestamp ms, signature) in arrival order.
    order: VecDeque<(i64, String)>,
    /// Timestamps at or before this are refused (the cache forgot them).
    floor_ms: i64,
}

impl NonceCache {
    pub fn new(window_ms: i64, capacity: usize) -> Self {
        NonceCache {
            window_ms,
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                floor_ms: i64::MIN,
                ..Inner::default()
            }),
        }
    }

    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// Record the signature of a request already checked as correctly
    /// signed and inside the window; refuse it if it was seen before.
    pub fn check(&self, signature: &str, ts_ms: i64, now_ms: i64) -> Result<(), ImError> {
        let key = signature.trim().to_ascii_lowercase();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what has left the window on either side of now.
        while let Some((ts, _)) = g.order.front() {
            if (now_ms - *ts).abs() <= self.window_ms {
                break;
            }
            if let Some((_, sig)) = g.order.pop_front() {
                g.seen.remove(&sig);
            }
        }
        if ts_ms <= g.floor_ms {
            return Err(ImError::new(
                ErrorCode::SignExpired,
                "sign expired: timestamp older than the replay cache holds",
            ));
        }
        if g.seen.contains(&key) {
            return Err(ImError::new(
                ErrorCode::AuthFailure,
                "auth failure: signature already used (nonce replayed)",
            ));
        }
        while g.order.len() >= self.capacity {
            if let Some((ts, sig)) = g.order.pop_front() {
                g.seen.remove(&sig);
                g.floor_ms = g.floor_ms.max(ts);
            }
        }
        g.seen.insert(key.clone());
        g.order.push_back((ts_ms, key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once_within_the_window() {
        let c = NonceCache::new(1000, 10);
        assert!(c.check("aa", 5000, 5000).is_ok());
        let e = c.check("AA", 5000, 5001).unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthFailure);
        assert!(c.check("bb", 5000, 5001).is_ok(), "another nonce is fine");
        // Once its timestamp left the window it is forgotten (and the
        // signature check refuses that timestamp anyway).
        assert!(c.check("cc", 7000, 7000).is_ok());
        assert!(c.inner.lock().unwrap().seen.len() == 1);
    }

    #[test]
    fn when_full_the_forgotten_timestamps_are_refused() {
        let c = NonceCache::new(1_000_000, 3);
        for (i, sig) in ["a", "b", "c", "d"].iter().enumerate() {
            assert!(c.check(sig, 100 + i as i64, 200).is_ok());
        }
        // "a" (ts 100) was evicted: replaying it is refused by the floor.
        assert_eq!(
            c.check("a", 100, 201).unwrap_err().code,
            ErrorCode::SignExpired
        );
        assert_eq!(
            c.check("b", 101, 201).unwrap_err().code,
            ErrorCode::AuthFailure
        );
        assert!(c.check("e", 150, 201).is_ok());
        assert_eq!(c.inner.lock().unwrap().order.len(), 3, "bounded");
    }
}
