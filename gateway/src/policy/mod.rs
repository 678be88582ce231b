//! The gateway side of the policy pipeline: the live word list, user
//! statuses and rate overrides, and the log of sensitive-word hits.
//!
//! The policy is one cluster-wide setting of the store (key `policy`, a
//! JSON snapshot): an admin change is applied here at once, then written
//! to the store, which makes it durable and hands it to every node's
//! [`PolicyState::follow`] task (on RabbitMQ through the log stream; a
//! node started later reads the last value at start). Concurrent changes
//! on two nodes are last-writer-wins per snapshot.
//!
//! Hits are appended to `data_dir/sensitive-hits.jsonl` (per node), the
//! most recent kept in memory for the admin API.

mod hits;

pub use hits::HitLog;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use imgate_core::pipeline::{PolicyBook, PolicySnapshot, UserStatus};
use imgate_core::words::WordFilter;
use imgate_core::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

/// The store setting that holds the policy.
pub const POLICY_KEY: &str = "policy";

#[derive(Debug, Default, Serialize, Deserialize)]
struct PolicyFile {
    #[serde(default)]
    words: Vec<String>,
    #[serde(default, flatten)]
    policy: PolicySnapshot,
}

/// The policy state one gateway node holds.
pub struct PolicyState {
    pub book: Arc<PolicyBook>,
    pub words: Arc<WordFilter>,
    pub hits: Arc<HitLog>,
    /// Serializes writes so the store's last value is this node's latest.
    save_lock: tokio::sync::Mutex<()>,
}

impl PolicyState {
    /// The policy as the store has it (empty if never set).
    pub async fn load(store: &dyn Store, data_dir: &Path) -> anyhow::Result<PolicyState> {
        let file = match store
            .setting(POLICY_KEY)
            .await
            .context("reading the policy from the store")?
        {
            Some(json) => serde_json::from_str(&json).context("parsing the stored policy")?,
            None => PolicyFile::default(),
        };
        Ok(PolicyState {
            book: Arc::new(PolicyBook::new(file.policy)),
            words: Arc::new(WordFilter::new(file.words)),
            hits: Arc::new(HitLog::open(data_dir)?),
            save_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Write the current state to the store (durable, and to every node).
    pub async fn save(&self, store: &dyn Store) -> anyhow::Result<()> {
        let _guard = self.save_lock.lock().await;
        let file = PolicyFile {
            words: self.words.words(),
            policy: self.book.snapshot(),
        };
        let json = serde_json::to_string(&file)?;
        store.put_setting(POLICY_KEY.to_string(), json).await?;
        Ok(())
    }

    /// Replace the live state with a stored snapshot; the users who are
    /// forbidden now and were not before.
    fn apply(&self, json: &str) -> anyhow::Result<Vec<String>> {
        let file: PolicyFile = serde_json::from_str(json)?;
        let before = self.book.snapshot();
        let newly_forbidden = file
            .policy
            .statuses
            .iter()
            .filter(|(u, s)| {
                **s == UserStatus::Forbidden
                    && before.statuses.get(*u) != Some(&UserStatus::Forbidden)
            })
            .map(|(u, _)| u.clone())
            .collect();
        self.words.replace_all(file.words);
        self.book.replace(file.policy);
        Ok(newly_forbidden)
    }

    /// Apply every policy change the store reports (from any node) until
    /// the store closes; `forbidden` is told each user that became
    /// forbidden (the gateway kicks them on this node,
    /// `sessions::enforce`).
    pub async fn follow(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        forbidden: impl Fn(&str) + Send + 'static,
    ) {
        let mut changes = store.watch_settings();
        loop {
            let json = match changes.recv().await {
                Ok((key, value)) if key == POLICY_KEY => value.as_str().to_string(),
                Ok(_) => continue,
                // Missed some: the last value is all that matters.
                Err(RecvError::Lagged(_)) => match store.setting(POLICY_KEY).await {
                    Ok(Some(json)) => json,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot re-read the policy");
                        continue;
                    }
                },
                Err(RecvError::Closed) => return,
            };
            match self.apply(&json) {
                Ok(newly) => newly.iter().for_each(|user| forbidden(user)),
                Err(e) => tracing::warn!(error = %e, "ignoring an unreadable policy update"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgate_adapters::{EmbeddedConfig, EmbeddedStore};

    #[tokio::test]
    async fn changes_are_stored_and_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap());
        let p = PolicyState::load(store.as_ref(), dir.path()).await.unwrap();
        p.words.add(&["坏词".into(), "bad".into()]);
        p.book.set_status("mallory", UserStatus::Forbidden);
        p.book.set_rate_override("bot", Some((1000, 1)));
        p.save(store.as_ref()).await.unwrap();
        // Another node's view: loaded from the store, then following it.
        let q = Arc::new(PolicyState::load(store.as_ref(), dir.path()).await.unwrap());
        assert_eq!(q.words.words(), vec!["bad".to_string(), "坏词".to_string()]);
        assert_eq!(q.book.status("mallory"), UserStatus::Forbidden);
        assert_eq!(q.book.rate_override("bot").unwrap().messages, 1000);
        let (forbidden_tx, mut forbidden) = tokio::sync::mpsc::unbounded_channel();
        let follower = tokio::spawn(q.clone().follow(store.clone(), move |user| {
            let _ = forbidden_tx.send(user.to_string());
        }));
        let mut watch = store.watch_settings();
        p.words.remove(&["bad".into()]);
        p.save(store.as_ref()).await.unwrap();
        watch.recv().await.unwrap();
        // The follower applies it right after the same notification.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while q.words.words() != vec!["坏词".to_string()] {
            assert!(
                std::time::Instant::now() < deadline,
                "follower never applied the change"
            );
            tokio::task::yield_now().await;
        }
        // A user forbidden on the other node is reported (to be kicked).
        p.book.set_status("eve", UserStatus::Forbidden);
        p.save(store.as_ref()).await.unwrap();
        let user = tokio::time::timeout(std::time::Duration::from_secs(10), forbidden.recv())
            .await
            .expect("the follower reports the newly forbidden user");
        assert_eq!(user.as_deref(), Some("eve"));
        follower.abort();
    }
}
