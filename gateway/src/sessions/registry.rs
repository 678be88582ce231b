//! Online sessions of this node and the login rule of DESIGN §5.1: a new
//! login of the same device always replaces the old session; a new login on
//! the same platform class (mobile / pad / pc / web) kicks the older one
//! unless `multi_endpoint` is set. The kicked session gets a [`Kick`] (code
//! 7) to render in its protocol before it closes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use imgate_core::model::PlatformClass;
use imgate_core::pipeline::{Principal, Protocol};
use imgate_core::ErrorCode;
use tokio::sync::oneshot;

/// Why a session must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    pub code: ErrorCode,
    pub reason: String,
}

struct Entry {
    id: u64,
    device: String,
    class: PlatformClass,
    protocol: Protocol,
    kick: Option<oneshot::Sender<Kick>>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, Vec<Entry>>,
}

pub struct SessionRegistry {
    inner: Arc<Mutex<Inner>>,
    next_id: AtomicU64,
    multi_endpoint: bool,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A registered session; unregisters itself when dropped.
pub struct SessionHandle {
    id: u64,
    user: String,
    inner: Arc<Mutex<Inner>>,
    /// Fires when a newer login kicks this session.
    pub kicked: oneshot::Receiver<Kick>,
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let mut inner = lock(&self.inner);
        if let Some(list) = inner.users.get_mut(&self.user) {
            list.retain(|e| e.id != self.id);
            if list.is_empty() {
                inner.users.remove(&self.user);
            }
        }
    }
}

impl SessionRegistry {
    pub fn new(multi_endpoint: bool) -> Self {
        SessionRegistry {
            inner: Arc::default(),
            next_id: AtomicU64::new(1),
            multi_endpoint,
        }
    }

    /// Register a logged-in session, kicking the sessions it replaces.
    pub fn register(&self, p: &Principal) -> SessionHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let class = p.platform.class();
        let (tx, rx) = oneshot::channel();
        let mut inner = lock(&self.inner);
        let list = inner.users.entry(p.user_id.clone()).or_default();
        for e in list.iter_mut() {
            let same_device = e.device == p.device_id;
            let same_class = !self.multi_endpoint && e.class == class;
            if same_device || same_class {
                let reason = if same_device {
                    format!(
                        "device {} logged in again over {}",
                        p.device_id,
                        p.protocol.name()
                    )
                } else {
                    format!("logged in on another {class:?} device ({})", p.device_id)
                };
                if let Some(k) = e.kick.take() {
                    tracing::info!(user = %p.user_id, old = %e.device, old_protocol = e.protocol.name(), new = %p.device_id, "kicking older session");
                    let _ = k.send(Kick {
                        code: ErrorCode::KickedOff,
                        reason,
                    });
                }
            }
        }
        list.retain(|e| e.kick.is_some());
        list.push(Entry {
            id,
            device: p.device_id.clone(),
            class,
            protocol: p.protocol,
            kick: Some(tx),
        });
        SessionHandle {
            id,
            user: p.user_id.clone(),
            inner: self.inner.clone(),
            kicked: rx,
        }
    }

    /// End every session of `user` on this node (e.g. the user was
    /// forbidden); how many were told.
    pub fn kick_user(&self, user: &str, code: ErrorCode, reason: &str) -> usize {
        let mut inner = lock(&self.inner);
        let Some(list) = inner.users.get_mut(user) else {
            return 0;
        };
        let mut n = 0;
        for e in list.iter_mut() {
            if let Some(k) = e.kick.take() {
                n += usize::from(
                    k.send(Kick {
                        code,
                        reason: reason.to_string(),
                    })
                    .is_ok(),
                );
            }
        }
        n
    }

    /// Devices of `user` online on this node.
    #[cfg(test)]
    pub fn online_devices(&self, user: &str) -> Vec<String> {
        lock(&self.inner)
            .users
            .get(user)
            .map(|l| l.iter().map(|e| e.device.clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgate_core::model::Platform;

    fn p(user: &str, device: &str, platform: Platform) -> Principal {
        Principal {
            user_id: user.into(),
            device_id: device.into(),
            platform,
            protocol: Protocol::Pb,
            admin: false,
        }
    }

    #[test]
    fn same_class_kicks_other_class_does_not() {
        let r = SessionRegistry::new(false);
        let mut phone = r.register(&p("alice", "phone1", Platform::Android));
        let mut laptop = r.register(&p("alice", "laptop", Platform::Windows));
        let _phone2 = r.register(&p("alice", "phone2", Platform::Ios));
        let kick = phone.kicked.try_recv().expect("older phone kicked");
        assert_eq!(kick.code, ErrorCode::KickedOff);
        assert!(laptop.kicked.try_recv().is_err(), "pc session stays");
        let mut devices = r.online_devices("alice");
        devices.sort();
        assert_eq!(devices, vec!["laptop", "phone2"]);
        drop(laptop);
        assert_eq!(r.online_devices("alice"), vec!["phone2"]);
    }

    #[test]
    fn multi_endpoint_keeps_both_but_same_device_is_replaced() {
        let r = SessionRegistry::new(true);
        let mut a = r.register(&p("bob", "p1", Platform::Android));
        let mut b = r.register(&p("bob", "p2", Platform::Android));
        assert!(a.kicked.try_recv().is_err());
        let _b2 = r.register(&p("bob", "p2", Platform::Android));
        assert!(b.kicked.try_recv().is_ok());
        // Other users are untouched.
        let _c = r.register(&p("carol", "p1", Platform::Android));
        assert!(a.kicked.try_recv().is_err());
    }
}
