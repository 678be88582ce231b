//! Connection admission for every listener (DESIGN §6 step 4): a per-IP
//! rate of new connections (token bucket, default 100/s), a cap on the
//! connections one IP holds open at once, and a cap on open connections
//! per listener — each protocol has its own, so a flood on one listener
//! never refuses clients of the others. Refused connections are closed at
//! once and counted.
//!
//! Listeners are the rows of `crate::listeners::LISTENERS`, by name: the
//! accept loop (`sessions::listener`) admits every connection here.
//!
//! On a PROXY protocol listener admission has two steps: the listener's cap
//! at accept ([`ConnLimiter::admit_capped`]), then the per-IP rate and
//! share of the client's real address from the header
//! ([`ConnLimiter::admit_ip`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imgate_core::pipeline::{RateLimitConfig, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::listeners::LISTENERS;

pub struct ConnLimiter {
    per_ip: RateLimiter,
    /// One cap per listener.
    open: HashMap<&'static str, Arc<Semaphore>>,
    max_per_ip: u32,
    /// Open connections per IP; an IP with none has no entry, so the map
    /// is bounded by the open connections.
    ip_open: Arc<Mutex<HashMap<IpAddr, u32>>>,
    pub refused_rate: AtomicU64,
    pub refused_full: AtomicU64,
    pub refused_ip_open: AtomicU64,
    /// Listeners behind a PROXY protocol balancer (`proxy_protocol`), and
    /// the time a connection there has to send its header.
    proxied: Vec<&'static str>,
    proxy_header_timeout: Duration,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    IpRate,
    /// This IP already holds its share of open connections.
    IpOpen,
    /// This listener is full.
    Full,
}

/// A slot of an admitted connection: its listener's permit and its IP's
/// count, both released on drop.
#[derive(Debug)]
pub struct Permit {
    _listener: OwnedSemaphorePermit,
    /// None: admitted without per-IP accounting.
    ip: Option<IpAddr>,
    ip_open: Arc<Mutex<HashMap<IpAddr, u32>>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut open = self.ip_open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

impl ConnLimiter {
    /// `max_per_listener` open connections on each listener, at most
    /// `max_per_ip` of all of them from one IP (0 = no per-IP cap).
    pub fn new(per_ip_per_sec: u32, max_per_listener: usize, max_per_ip: u32) -> Self {
        ConnLimiter {
            per_ip: RateLimiter::new(RateLimitConfig {
                messages: per_ip_per_sec.max(1),
                per: Duration::from_secs(1),
            }),
            open: LISTENERS
                .iter()
                .map(|l| (l.name, Arc::new(Semaphore::new(max_per_listener.max(1)))))
                .collect(),
            max_per_ip,
            ip_open: Arc::default(),
            refused_rate: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            refused_ip_open: AtomicU64::new(0),
            proxied: Vec::new(),
            proxy_header_timeout: Duration::from_secs(10),
        }
    }

    /// On `listeners`, every connection starts with a PROXY protocol header
    /// sent within `header_timeout`, and admission is in two steps: the
    /// listener's cap at accept ([`ConnLimiter::admit_capped`]), the
    /// per-IP limits of the client's real address once the header is read
    /// ([`ConnLimiter::admit_ip`]). Never the admin listener.
    pub fn with_proxy_protocol(
        mut self,
        listeners: &[&'static str],
        header_timeout: Duration,
    ) -> Self {
        self.proxied = listeners
            .iter()
            .copied()
            .filter(|l| *l != "admin")
            .collect();
        self.proxy_header_timeout = header_timeout;
        self
    }

    /// The header time limit if `listener` takes a PROXY protocol header.
    pub fn proxy_header_timeout(&self, listener: &str) -> Option<Duration> {
        self.proxied
            .contains(&listener)
            .then_some(self.proxy_header_timeout)
    }

    /// Admit a new connection from `ip` on `listener`: the permit is held
    /// while it is open.
    pub fn admit(&self, listener: &str, ip: IpAddr) -> Result<Permit, Refused> {
        self.check_rate(ip)?;
        let permit = self.listener_slot(listener)?;
        self.count_ip(ip)?;
        Ok(Permit {
            _listener: permit,
            ip: Some(ip),
            ip_open: self.ip_open.clone(),
        })
    }

    /// The second step of admission on a PROXY protocol listener: the
    /// per-IP rate and share of the client's real address `ip` (known once
    /// the header is read), for a connection admitted under its listener's
    /// cap by [`ConnLimiter::admit_capped`]. Refused: the slot is released.
    pub fn admit_ip(&self, mut permit: Permit, ip: IpAddr) -> Result<Permit, Refused> {
        if permit.ip.is_some() {
            // Already counted under an IP (not a capped permit).
            return Ok(permit);
        }
        self.check_rate(ip)?;
        self.count_ip(ip)?;
        permit.ip = Some(ip);
        Ok(permit)
    }

    /// New connections per second from `ip`.
    fn check_rate(&self, ip: IpAddr) -> Result<(), Refused> {
        if self
            .per_ip
            .try_acquire(&[ip.to_string()], Instant::now())
            .is_err()
        {
            self.refused_rate.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::IpRate);
        }
        Ok(())
    }

    /// A slot under `listener`'s cap.
    fn listener_slot(&self, listener: &str) -> Result<OwnedSemaphorePermit, Refused> {
        let Some(slots) = self.open.get(listener) else {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Full);
        };
        slots.clone().try_acquire_owned().map_err(|_| {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            Refused::Full
        })
    }

    /// One more open connection of `ip`, within its share; the caller's
    /// [`Permit`] gives it back.
    fn count_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let mut open = self.ip_open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if self.max_per_ip > 0 && *n >= self.max_per_ip {
            if *n == 0 {
                open.remove(&ip);
            }
            self.refused_ip_open.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::IpOpen);
        }
        *n += 1;
        Ok(())
    }

    /// Admit a connection on `listener` under its cap only (no per-IP
    /// rate or share): the admin listener, reachable under a flood.
    pub fn admit_capped(&self, listener: &str) -> Result<Permit, Refused> {
        let permit = self.listener_slot(listener)?;
        Ok(Permit {
            _listener: permit,
            ip: None,
            ip_open: self.ip_open.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_rate_per_listener_caps_and_per_ip_open_cap() {
        let l = ConnLimiter::new(2, 2, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.admit("pb", a).unwrap();
        let _p2 = l.admit("pb", a).unwrap();
        assert_eq!(l.admit("pb", a).unwrap_err(), Refused::IpRate);
        assert_eq!(l.admit("pb", b).unwrap_err(), Refused::Full);
        // Another listener has its own slots.
        let _m = l.admit("mqtt", b).unwrap();
        drop(p1);
        // (Refused attempts still count against their IP's rate.)
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert!(
            l.admit("pb", c).is_ok(),
            "a closed connection frees its slot"
        );

        let l = ConnLimiter::new(100, 100, 2);
        let x = l.admit("http", a).unwrap();
        let _y = l.admit("mqtt", a).unwrap();
        assert_eq!(l.admit("xmpp", a).unwrap_err(), Refused::IpOpen);
        assert!(l.admit("xmpp", b).is_ok(), "other IPs unaffected");
        drop(x);
        assert!(l.admit("xmpp", a).is_ok(), "released on close");
        assert_eq!(
            l.ip_open.lock().unwrap().len(),
            1,
            "only IPs with open connections (b's closed)"
        );
    }
}
