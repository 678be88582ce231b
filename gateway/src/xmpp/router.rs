//! `XmppRouter`: the XMPP sessions of this node by user, for what is not a
//! stored message — presence to a user's other resources, XEP-0184
//! receipts forwarded to the original sender (other nodes' receipts come
//! through [`super::receipts`]), and stanzas addressed to a full or bare
//! JID that are not stored ([`super::routing`]: IQs, chat states,
//! markers). Best effort: messages with content always go through the
//! store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use imgate_codecs::xmpp::Element;
use tokio::sync::{mpsc, Notify};

/// Stanzas queued per session before further ones are dropped.
const ROUTE_QUEUE: usize = 256;

struct Route {
    id: u64,
    resource: String,
    available: bool,
    /// Boxed: a tokio channel allocates its first block of 32 slots up
    /// front, 32 × 8 bytes per session instead of 32 × 96.
    tx: mpsc::Sender<Box<Element>>,
    /// Wakes the session (its driver's wake source) when `tx` got one.
    wake: Arc<Notify>,
}

impl Route {
    /// Queue `el` and wake the session; false if its queue is full.
    fn send(&self, el: Element) -> bool {
        let sent = self.tx.try_send(Box::new(el)).is_ok();
        if sent {
            self.wake.notify_one();
        }
        sent
    }
}

/// A session's queue of routed stanzas and what announces them.
pub struct Routed {
    pub rx: mpsc::Receiver<Box<Element>>,
    pub wake: Arc<Notify>,
}

#[derive(Default)]
struct Routes {
    users: HashMap<String, Vec<Route>>,
}

#[derive(Default)]
pub struct XmppRouter {
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
}

fn lock(m: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A session's entry; removed when dropped.
pub struct RouteHandle {
    id: u64,
    user: String,
    routes: Arc<Mutex<Routes>>,
}

impl Drop for RouteHandle {
    fn drop(&mut self) {
        let mut r = lock(&self.routes);
        if let Some(list) = r.users.get_mut(&self.user) {
            list.retain(|e| e.id != self.id);
            if list.is_empty() {
                r.users.remove(&self.user);
            }
        }
    }
}

impl XmppRouter {
    /// Add a session of `user` bound to `resource`.
    pub fn register(&self, user: &str, resource: &str) -> (RouteHandle, Routed) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(ROUTE_QUEUE);
        let wake = Arc::new(Notify::new());
        lock(&self.routes)
            .users
            .entry(user.to_string())
            .or_default()
            .push(Route {
                id,
                resource: resource.to_string(),
                available: false,
                tx,
                wake: wake.clone(),
            });
        let handle = RouteHandle {
            id,
            user: user.to_string(),
            routes: self.routes.clone(),
        };
        (handle, Routed { rx, wake })
    }

    /// Whether no XMPP session is on this node at all.
    pub fn is_empty(&self) -> bool {
        lock(&self.routes).users.is_empty()
    }

    /// Mark a session available (initial presence sent) or not.
    pub fn set_available(&self, handle: &RouteHandle, available: bool) {
        if let Some(list) = lock(&self.routes).users.get_mut(&handle.user) {
            for r in list.iter_mut().filter(|r| r.id == handle.id) {
                r.available = available;
            }
        }
    }

    /// Every resource of `user` on this node that announced presence.
    pub fn available_of(&self, user: &str) -> Vec<String> {
        lock(&self.routes)
            .users
            .get(user)
            .map(|l| {
                l.iter()
                    .filter(|r| r.available)
                    .map(|r| r.resource.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Resources of `user` other than `except` that announced presence.
    pub fn available_resources(&self, user: &str, except: &RouteHandle) -> Vec<String> {
        lock(&self.routes)
            .users
            .get(user)
            .map(|l| {
                l.iter()
                    .filter(|r| r.available && r.id != except.id)
                    .map(|r| r.resource.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Queue `el` for the session of `user` bound to `resource`; false if
    /// there is none on this node (or its queue is full).
    pub fn send_to_resource(&self, user: &str, resource: &str, el: Element) -> bool {
        let routes = lock(&self.routes);
        let Some(r) = routes
            .users
            .get(user)
            .and_then(|l| l.iter().rev().find(|r| r.resource == resource))
        else {
            return false;
        };
        r.send(el)
    }

    /// Queue a stanza built per resource for every available session of
    /// `user` (RFC 6121 §8.5.2.1.1: a message to a bare JID goes to the
    /// resources that sent presence); how many got it.
    pub fn send_to_available(&self, user: &str, make: impl Fn(&str) -> Element) -> usize {
        let routes = lock(&self.routes);
        let Some(list) = routes.users.get(user) else {
            return 0;
        };
        list.iter()
            .filter(|r| r.available)
            .filter(|r| r.send(make(&r.resource)))
            .count()
    }

    /// Queue a stanza built per resource for every session of `user`
    /// (except `except`); a full queue drops it (best effort).
    pub fn send_to_user(
        &self,
        user: &str,
        except: Option<&RouteHandle>,
        make: impl Fn(&str) -> Element,
    ) {
        let routes = lock(&self.routes);
        let Some(list) = routes.users.get(user) else {
            return;
        };
        for r in list.iter().filter(|r| except.is_none_or(|h| h.id != r.id)) {
            let _ = r.send(make(&r.resource));
        }
    }
}
