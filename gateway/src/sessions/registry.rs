//! Online sessions of this node and the login rule of DESIGN §5.1: a new
//! login of the same device always replaces the old session; a new login on
//! the same platform class (mobile / pad / pc / web) kicks the older one
//! unless `multi_endpoint` is set; a login without a platform is in no
//! class (see `Platform::class`). The kicked session gets a [`Kick`] (code
//! 7) to render in its protocol before it closes.
//!
//! Across nodes (see [`super::cluster`]) every login is announced through
//! the store; a node applies another node's login to its own sessions
//! with the same rule. "Older" is then the order of the announcements in
//! the store, the same on every node: a local session is kicked by a
//! remote login only once its own announcement went through (so it came
//! first). Two logins racing on two nodes thus end with exactly one
//! survivor, the one announced last.
//!
//! Every protocol's login goes through [`SessionRegistry::register`] and
//! every session's end through [`SessionHandle`]'s drop, so the event
//! webhooks' `connected` and `disconnected` are emitted here, once for
//! all protocols ([`SessionRegistry::set_webhooks`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use imgate_core::model::PlatformClass;
use imgate_core::pipeline::{Principal, Protocol};
use imgate_core::{ErrorCode, Store};
use tokio::sync::oneshot;

use crate::webhooks::{EventKind, Webhooks};

/// Why a session must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    pub code: ErrorCode,
    pub reason: String,
}

struct Entry {
    id: u64,
    device: String,
    class: Option<PlatformClass>,
    protocol: Protocol,
    kick: Option<oneshot::Sender<Kick>>,
    /// Its login announcement came back from the store (cluster order).
    announced: bool,
}

/// A login as the kick rule sees it.
pub struct Login<'a> {
    pub user: &'a str,
    pub device: &'a str,
    /// None: a platform-less login, which kicks no other device.
    pub class: Option<PlatformClass>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, Vec<Entry>>,
}

pub struct SessionRegistry {
    inner: Arc<Mutex<Inner>>,
    next_id: AtomicU64,
    multi_endpoint: bool,
    /// Where logins are announced to the other nodes, once joined.
    cluster: OnceLock<Arc<dyn Store>>,
    /// Where `connected` / `disconnected` events go, if configured.
    webhooks: OnceLock<Arc<Webhooks>>,
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
    /// The session's device and protocol, and where its `disconnected`
    /// event goes.
    ended: Option<(String, Protocol, Arc<Webhooks>)>,
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let mut inner = lock(&self.inner);
        if let Some(list) = inner.users.get_mut(&self.user) {
            if let Some(e) = list.iter().find(|e| e.id == self.id) {
                tracing::info!(user = %self.user, device = %e.device, protocol = e.protocol.name(), "logout");
            }
            list.retain(|e| e.id != self.id);
            if list.is_empty() {
                inner.users.remove(&self.user);
            }
        }
        drop(inner);
        if let Some((device, protocol, hooks)) = self.ended.take() {
            hooks.session(EventKind::Disconnected, &self.user, &device, protocol);
        }
    }
}

impl SessionRegistry {
    pub fn new(multi_endpoint: bool) -> Self {
        SessionRegistry {
            inner: Arc::default(),
            next_id: AtomicU64::new(1),
            multi_endpoint,
            cluster: OnceLock::new(),
            webhooks: OnceLock::new(),
        }
    }

    /// Emit `connected` and `disconnected` events of later sessions.
    pub fn set_webhooks(&self, webhooks: Arc<Webhooks>) {
        let _ = self.webhooks.set(webhooks);
    }

    /// The protocol of `device`'s session of `user` on this node, if any.
    pub fn protocol_of(&self, user: &str, device: &str) -> Option<Protocol> {
        lock(&self.inner)
            .users
            .get(user)?
            .iter()
            .find(|e| e.device == device)
            .map(|e| e.protocol)
    }

    /// Announce every later login through `store` and apply the other
    /// nodes' logins here (see [`super::cluster`]).
    pub fn join_cluster(self: &Arc<Self>, store: Arc<dyn Store>) {
        if self.cluster.set(store.clone()).is_ok() {
            tokio::spawn(super::cluster::follow_kicks(store.clone(), self.clone()));
            tokio::spawn(super::cluster::follow_logins(store, self.clone()));
        }
    }

    /// Register a logged-in session, kicking the sessions it replaces,
    /// and announce it to the other nodes.
    pub fn register(&self, p: &Principal) -> SessionHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let class = p.platform.class();
        let (tx, rx) = oneshot::channel();
        let login = Login {
            user: &p.user_id,
            device: &p.device_id,
            class,
        };
        let mut inner = lock(&self.inner);
        let list = inner.users.entry(p.user_id.clone()).or_default();
        self.kick_replaced(list, &login, p.protocol.name(), |_| true);
        list.push(Entry {
            id,
            device: p.device_id.clone(),
            class,
            protocol: p.protocol,
            kick: Some(tx),
            announced: false,
        });
        drop(inner);
        if let Some(store) = self.cluster.get() {
            super::cluster::announce_login(store.clone(), &p.user_id, &p.device_id, p.platform, id);
        }
        let hooks = self.webhooks.get().cloned();
        if let Some(h) = &hooks {
            h.session(EventKind::Connected, &p.user_id, &p.device_id, p.protocol);
        }
        SessionHandle {
            id,
            user: p.user_id.clone(),
            inner: self.inner.clone(),
            kicked: rx,
            ended: hooks.map(|h| (p.device_id.clone(), p.protocol, h)),
        }
    }

    /// A login on another node: kick the local sessions it replaces among
    /// those announced before it; how many were told.
    pub fn remote_login(&self, login: &Login<'_>) -> usize {
        let mut inner = lock(&self.inner);
        let Some(list) = inner.users.get_mut(login.user) else {
            return 0;
        };
        let before = list.len();
        self.kick_replaced(list, login, "another node", |e| e.announced);
        before - list.len()
    }

    /// This node's announcement of session `id` went through.
    pub fn announced(&self, user: &str, id: u64) {
        let mut inner = lock(&self.inner);
        if let Some(e) = inner
            .users
            .get_mut(user)
            .and_then(|l| l.iter_mut().find(|e| e.id == id))
        {
            e.announced = true;
        }
    }

    /// Kick the sessions in `list` that `login` replaces (among those
    /// `eligible`) and drop them from the list.
    fn kick_replaced(
        &self,
        list: &mut Vec<Entry>,
        login: &Login<'_>,
        via: &str,
        eligible: impl Fn(&Entry) -> bool,
    ) {
        for e in list.iter_mut().filter(|e| eligible(e)) {
            let same_device = e.device == login.device;
            let same_class =
                !self.multi_endpoint && login.class.is_some() && e.class == login.class;
            if !(same_device || same_class) {
                continue;
            }
            let reason = if same_device {
                format!("device {} logged in again over {via}", login.device)
            } else {
                format!(
                    "logged in on another {:?} device ({})",
                    login.class, login.device
                )
            };
            if let Some(k) = e.kick.take() {
                tracing::info!(user = %login.user, old = %e.device, old_protocol = e.protocol.name(), new = %login.device, via, "kicking older session");
                let _ = k.send(Kick {
                    code: ErrorCode::KickedOff,
                    reason,
                });
            }
        }
        list.retain(|e| e.kick.is_some());
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
                tracing::info!(user, device = %e.device, protocol = e.protocol.name(), code = code.as_i32(), reason, "kicking session");
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

    /// End the sessions of one device of `user` on this node (e.g. its
    /// device secret was revoked); how many were told.
    pub fn kick_device(&self, user: &str, device: &str, code: ErrorCode, reason: &str) -> usize {
        let mut inner = lock(&self.inner);
        let Some(list) = inner.users.get_mut(user) else {
            return 0;
        };
        let mut n = 0;
        for e in list.iter_mut().filter(|e| e.device == device) {
            if let Some(k) = e.kick.take() {
                tracing::info!(
                    user,
                    device,
                    protocol = e.protocol.name(),
                    code = code.as_i32(),
                    reason,
                    "kicking session"
                );
                n += usize::from(
                    k.send(Kick {
                        code,
                        reason: reason.to_string(),
                    })
                    .is_ok(),
                );
            }
        }
        list.retain(|e| e.kick.is_some());
        n
    }

    /// The sessions of `user` on this node: (device, protocol, whether
    /// its login is placed in the cluster order).
    pub fn sessions_of(&self, user: &str) -> Vec<(String, Protocol, bool)> {
        lock(&self.inner)
            .users
            .get(user)
            .map(|l| {
                l.iter()
                    .map(|e| (e.device.clone(), e.protocol, e.announced))
                    .collect()
            })
            .unwrap_or_default()
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
    fn remote_logins_kick_only_sessions_announced_before_them() {
        let r = SessionRegistry::new(false);
        let mut old = r.register(&p("dan", "phone1", Platform::Android));
        r.announced("dan", old.id);
        let mut fresh = r.register(&p("dan", "laptop", Platform::Windows));
        let remote = |device, class| Login {
            user: "dan",
            device,
            class,
        };
        // A remote phone login came after `old` (announced) in cluster order.
        assert_eq!(
            r.remote_login(&remote("phone9", Some(PlatformClass::Mobile))),
            1
        );
        assert!(old.kicked.try_recv().is_ok());
        // `fresh` is not announced yet: the remote PC login came first.
        assert_eq!(r.remote_login(&remote("pc9", Some(PlatformClass::Pc))), 0);
        assert!(fresh.kicked.try_recv().is_err());
        r.announced("dan", fresh.id);
        assert_eq!(
            r.remote_login(&remote("laptop", Some(PlatformClass::Web))),
            1
        );
        assert!(fresh.kicked.try_recv().is_ok(), "same device, any class");
        assert!(r.online_devices("dan").is_empty());
    }

    #[test]
    fn platform_less_logins_kick_only_their_own_device() {
        let r = SessionRegistry::new(false);
        let mut a = r.register(&p("iot", "sensor1", Platform::Unknown));
        let mut b = r.register(&p("iot", "sensor2", Platform::Unknown));
        let mut pc = r.register(&p("iot", "desk", Platform::Windows));
        assert!(a.kicked.try_recv().is_err(), "no class: no kick");
        assert!(b.kicked.try_recv().is_err());
        let remote = Login {
            user: "iot",
            device: "sensor9",
            class: None,
        };
        r.announced("iot", a.id);
        r.announced("iot", pc.id);
        assert_eq!(r.remote_login(&remote), 0);
        // The same device still replaces its older session.
        let _b2 = r.register(&p("iot", "sensor2", Platform::Unknown));
        assert!(b.kicked.try_recv().is_ok());
        assert!(pc.kicked.try_recv().is_err());
        assert_eq!(
            r.kick_device("iot", "sensor1", ErrorCode::AuthFailure, "revoked"),
            1
        );
        assert_eq!(a.kicked.try_recv().unwrap().code, ErrorCode::AuthFailure);
        assert!(pc.kicked.try_recv().is_err());
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
