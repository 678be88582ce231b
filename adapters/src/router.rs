//! In-process fan-out, shared by both stores: which devices are attached
//! to this process, who listens to a user's live messages, and the
//! watchers of settings, announcements and cursor moves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use imgate_core::model::Message;
use imgate_core::store::{
    Announcement, CursorMoved, InFlight, Lag, SettingChange, UserFeed, CURSOR_WATCH_BUFFER,
};
use tokio::sync::{broadcast, mpsc};

/// One attached device.
struct DeviceRoute {
    generation: u64,
    live: mpsc::Sender<Arc<Message>>,
    /// Set when a live message was skipped because the device's buffer
    /// was full; its feed then reads the timeline again.
    lagged: Arc<Lag>,
    in_flight: Arc<InFlight>,
}

/// What an attached device's feed is built from.
pub struct Attached {
    pub live: mpsc::Receiver<Arc<Message>>,
    pub lagged: Arc<Lag>,
    pub in_flight: Arc<InFlight>,
    pub detach: Box<dyn FnOnce() + Send + Sync>,
}

#[derive(Default)]
struct Routes {
    devices: HashMap<String, HashMap<String, DeviceRoute>>,
    users: HashMap<String, broadcast::Sender<Arc<Message>>>,
}

pub struct Router {
    /// Setting changes, for `Store::watch_settings`.
    pub settings: broadcast::Sender<SettingChange>,
    /// Announcements, for `Store::watch_announcements` (one node: every
    /// announcement is local).
    pub announcements: broadcast::Sender<Arc<Announcement>>,
    /// Cursor moves of this node's acks, for `Store::watch_cursors`.
    pub cursors: broadcast::Sender<Arc<CursorMoved>>,
    routes: Arc<Mutex<Routes>>,
    generation: AtomicU64,
    device_buffer: usize,
    device_window: usize,
}

fn lock(m: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Router {
    pub fn new(device_buffer: usize, device_window: usize) -> Self {
        Router {
            settings: broadcast::channel(64).0,
            announcements: broadcast::channel(1024).0,
            cursors: broadcast::channel(CURSOR_WATCH_BUFFER).0,
            routes: Arc::default(),
            generation: AtomicU64::new(1),
            device_buffer: device_buffer.max(1),
            device_window: device_window.max(1),
        }
    }

    /// Route the device's live messages to a new channel, with its cursor
    /// as the start of its in-flight window. A previous attachment of the
    /// same device is replaced (its feed ends). `detach` removes the route
    /// unless a newer attachment replaced it.
    pub fn attach(&self, user: &str, device: &str, cursor: u64) -> Attached {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.device_buffer);
        let lagged = Arc::new(Lag::default());
        let in_flight = Arc::new(InFlight::new(cursor, self.device_window));
        lock(&self.routes)
            .devices
            .entry(user.to_string())
            .or_default()
            .insert(
                device.to_string(),
                DeviceRoute {
                    generation,
                    live: tx,
                    lagged: lagged.clone(),
                    in_flight: in_flight.clone(),
                },
            );
        let routes = self.routes.clone();
        let (user, device) = (user.to_string(), device.to_string());
        let detach = Box::new(move || {
            let mut r = lock(&routes);
            if let Some(devs) = r.devices.get_mut(&user) {
                if devs
                    .get(&device)
                    .is_some_and(|d| d.generation == generation)
                {
                    devs.remove(&device);
                }
                if devs.is_empty() {
                    r.devices.remove(&user);
                }
            }
        });
        Attached {
            live: rx,
            lagged,
            in_flight,
            detach,
        }
    }

    /// An ack of the device's current attachment: its new cursor if the
    /// ack moved it.
    pub fn ack(&self, user: &str, device: &str, message_id: u64) -> Option<u64> {
        let in_flight = {
            let r = lock(&self.routes);
            r.devices.get(user)?.get(device)?.in_flight.clone()
        };
        if !in_flight.ack(message_id) {
            return None;
        }
        let cursor = in_flight.cursor();
        if self.cursors.receiver_count() > 0 {
            let _ = self.cursors.send(Arc::new(CursorMoved {
                user: user.to_string(),
                device: device.to_string(),
                cursor,
                local: true,
            }));
        }
        Some(cursor)
    }

    /// Every device attached here, with its cursor now.
    pub fn attached(&self) -> Vec<(String, String, u64)> {
        let r = lock(&self.routes);
        r.devices
            .iter()
            .flat_map(|(user, devs)| {
                devs.iter().map(move |(device, route)| {
                    (user.clone(), device.clone(), route.in_flight.cursor())
                })
            })
            .collect()
    }

    /// How many devices are attached here.
    pub fn attached_count(&self) -> usize {
        lock(&self.routes).devices.values().map(HashMap::len).sum()
    }

    pub fn subscribe_user(&self, user: &str) -> UserFeed {
        let mut r = lock(&self.routes);
        let tx = r
            .users
            .entry(user.to_string())
            .or_insert_with(|| broadcast::channel(1024).0);
        UserFeed::new(tx.subscribe())
    }

    /// Deliver a committed message to every attached device of every
    /// recipient (except the sending device) and to user listeners. A
    /// device whose buffer is full is marked lagged and skipped: its feed
    /// reads the message from the timeline, never a silent loss.
    pub fn fan_out(
        &self,
        message: &Arc<Message>,
        recipients: &[String],
        sender_device: Option<&str>,
    ) {
        let mut r = lock(&self.routes);
        for user in recipients {
            if let Some(devs) = r.devices.get_mut(user) {
                devs.retain(|device, route| {
                    if *user == message.sender && Some(device.as_str()) == sender_device {
                        return true;
                    }
                    if route.lagged.is_raised() {
                        return true;
                    }
                    match route.live.try_send(message.clone()) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            route.lagged.raise();
                            true
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    }
                });
            }
            let drop_user = match r.users.get(user) {
                Some(tx) => tx.send(message.clone()).is_err(),
                None => false,
            };
            if drop_user {
                r.users.remove(user);
            }
        }
    }
}
