//! In-process fan-out: which devices are attached here, and who listens to
//! a user's live messages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use imgate_core::model::Message;
use imgate_core::store::{Announcement, SettingChange, UserFeed};
use tokio::sync::{broadcast, mpsc};

type DeviceRoute = (u64, mpsc::Sender<Arc<Message>>);

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
    routes: Arc<Mutex<Routes>>,
    generation: AtomicU64,
    device_buffer: usize,
}

fn lock(m: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Router {
    pub fn new(device_buffer: usize) -> Self {
        Router {
            settings: broadcast::channel(64).0,
            announcements: broadcast::channel(1024).0,
            routes: Arc::default(),
            generation: AtomicU64::new(1),
            device_buffer: device_buffer.max(1),
        }
    }

    /// Route the device's live messages to a new channel. A previous
    /// attachment of the same device is replaced (its feed ends). The
    /// returned closure detaches, unless a newer attachment replaced it.
    #[allow(clippy::type_complexity)]
    pub fn attach(
        &self,
        user: &str,
        device: &str,
    ) -> (
        mpsc::Receiver<Arc<Message>>,
        Box<dyn FnOnce() + Send + Sync>,
    ) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.device_buffer);
        lock(&self.routes)
            .devices
            .entry(user.to_string())
            .or_default()
            .insert(device.to_string(), (generation, tx));
        let routes = self.routes.clone();
        let (user, device) = (user.to_string(), device.to_string());
        let detach = Box::new(move || {
            let mut r = lock(&routes);
            if let Some(devs) = r.devices.get_mut(&user) {
                if devs.get(&device).is_some_and(|(g, _)| *g == generation) {
                    devs.remove(&device);
                }
                if devs.is_empty() {
                    r.devices.remove(&user);
                }
            }
        });
        (rx, detach)
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
    /// device that cannot keep up is detached: its messages stay pending
    /// and it gets them when it reconnects, never a silent loss.
    pub fn fan_out(
        &self,
        message: &Arc<Message>,
        recipients: &[String],
        sender_device: Option<&str>,
    ) {
        let mut r = lock(&self.routes);
        for user in recipients {
            if let Some(devs) = r.devices.get_mut(user) {
                devs.retain(|device, (_, tx)| {
                    if *user == message.sender && Some(device.as_str()) == sender_device {
                        return true;
                    }
                    match tx.try_send(message.clone()) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::warn!(%user, %device, "device too slow; detached, pending kept");
                            false
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
