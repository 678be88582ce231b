//! The login rule across nodes: every login is announced through the
//! store (`Store::announce`, one log record on RabbitMQ, in-process on the
//! embedded store), and every node applies the other nodes' logins to its
//! own sessions ([`SessionRegistry::remote_login`]). A node's own
//! announcements coming back mark its sessions as placed in the cluster
//! order ([`SessionRegistry::announced`]).

use std::sync::Arc;

use imgate_core::model::Platform;
use imgate_core::Store;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::registry::{Login, SessionRegistry};

/// The announcement topic of logins.
pub const LOGIN_TOPIC: &str = "login";
/// The announcement topic of admin kicks (`/admin/user/kick`).
pub const KICK_TOPIC: &str = "kick";

/// An admin kick: the sessions of `device` (every device when None) of
/// `user`, on every node.
#[derive(Debug, Serialize, Deserialize)]
pub struct KickNotice {
    pub user: String,
    pub device: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LoginNotice {
    user: String,
    device: String,
    platform: i32,
    /// The session's id in the announcing process.
    session: u64,
}

/// Announce a new session of this node (in the background: a login never
/// waits for the cluster).
pub fn announce_login(
    store: Arc<dyn Store>,
    user: &str,
    device: &str,
    platform: Platform,
    session: u64,
) {
    let notice = LoginNotice {
        user: user.to_string(),
        device: device.to_string(),
        platform: platform.as_i32(),
        session,
    };
    let Ok(payload) = serde_json::to_string(&notice) else {
        return;
    };
    tokio::spawn(async move {
        if let Err(e) = store.announce(LOGIN_TOPIC.to_string(), payload).await {
            tracing::warn!(user = %notice.user, error = %e, "login not announced to the other nodes");
        }
    });
}

/// Call `apply(value, local)` for every announcement on `topic`, its
/// payload decoded as `T`, until the store closes. Subscribes at once.
pub async fn follow_topic<T: DeserializeOwned>(
    store: Arc<dyn Store>,
    topic: &'static str,
    mut apply: impl FnMut(T, bool),
) {
    let mut rx = store.watch_announcements();
    drop(store);
    loop {
        let a = match rx.recv().await {
            Ok(a) => a,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    topic,
                    "announcements lagged; some were not applied"
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if a.topic != topic {
            continue;
        }
        match serde_json::from_str::<T>(&a.payload) {
            Ok(v) => apply(v, a.local),
            Err(e) => tracing::warn!(error = %e, topic, "undecodable announcement"),
        }
    }
}

/// Announce an admin kick to every node (this one included: it applies
/// it when the announcement comes back, in the cluster's order).
pub async fn announce_kick(store: &dyn Store, notice: &KickNotice) -> Result<(), String> {
    let payload = serde_json::to_string(notice).map_err(|e| e.to_string())?;
    store
        .announce(KICK_TOPIC.to_string(), payload)
        .await
        .map_err(|e| e.to_string())
}

/// Apply the cluster's admin kicks to this node's sessions until the
/// store closes.
pub async fn follow_kicks(store: Arc<dyn Store>, sessions: Arc<SessionRegistry>) {
    follow_topic(store, KICK_TOPIC, |n: KickNotice, _local| {
        const REASON: &str = "kicked by the administrator";
        match &n.device {
            Some(d) => sessions.kick_device(&n.user, d, imgate_core::ErrorCode::KickedOff, REASON),
            None => sessions.kick_user(&n.user, imgate_core::ErrorCode::KickedOff, REASON),
        };
    })
    .await;
}

/// Apply the cluster's logins to this node's sessions until the store
/// closes. Subscribe before the listeners start.
pub async fn follow_logins(store: Arc<dyn Store>, sessions: Arc<SessionRegistry>) {
    follow_topic(store, LOGIN_TOPIC, |n: LoginNotice, local| {
        if local {
            sessions.announced(&n.user, n.session);
        } else {
            sessions.remote_login(&Login {
                user: &n.user,
                device: &n.device,
                class: Platform::from_i32(n.platform).class(),
            });
        }
    })
    .await;
}
