//! Live listeners on this node: per-user broadcast feeds (SSE and other
//! cursor-keeping streams), setting changes, announcements, and a
//! progress signal of the indexer that device deliveries wait on.
//!
//! Every node indexes every record, so a user's feed on node B carries the
//! messages appended on node A as soon as B indexed them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use imgate_core::model::Message;
use imgate_core::store::{Announcement, SettingChange, UserFeed};
use tokio::sync::{broadcast, watch};

const USER_FEED_BUFFER: usize = 1024;

pub struct LiveFeeds {
    users: Mutex<HashMap<String, broadcast::Sender<Arc<Message>>>>,
    /// Setting changes, in stream order, for `Store::watch_settings`.
    pub settings: broadcast::Sender<SettingChange>,
    /// Announcements, in stream order, for `Store::watch_announcements`.
    pub announcements: broadcast::Sender<Arc<Announcement>>,
    /// Bumped after every applied batch.
    progress: watch::Sender<u64>,
}

impl Default for LiveFeeds {
    fn default() -> Self {
        LiveFeeds {
            users: Mutex::default(),
            settings: broadcast::channel(64).0,
            announcements: broadcast::channel(1024).0,
            progress: watch::channel(0).0,
        }
    }
}

impl LiveFeeds {
    fn users(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Arc<Message>>>> {
        match self.users.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn subscribe_user(&self, user: &str) -> UserFeed {
        let mut users = self.users();
        let tx = users
            .entry(user.to_string())
            .or_insert_with(|| broadcast::channel(USER_FEED_BUFFER).0);
        UserFeed::new(tx.subscribe())
    }

    /// A new message was indexed: tell its recipients' listeners.
    pub fn fan_out(&self, message: &Arc<Message>, recipients: &[String]) {
        let mut users = self.users();
        for user in recipients {
            let gone = match users.get(user) {
                Some(tx) => tx.send(message.clone()).is_err(),
                None => false,
            };
            if gone {
                users.remove(user);
            }
        }
    }

    pub fn advanced(&self) {
        self.progress.send_modify(|n| *n += 1);
    }

    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }
}
