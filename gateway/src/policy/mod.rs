//! The gateway side of the policy pipeline: the live word list, user
//! statuses and rate overrides (persisted in `data_dir/policy.json`, written
//! atomically on every admin change and loaded at start), and the log of
//! sensitive-word hits (`data_dir/sensitive-hits.jsonl` plus the most recent
//! ones in memory for the admin API).

mod hits;

pub use hits::HitLog;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use imgate_core::pipeline::{PolicyBook, PolicySnapshot};
use imgate_core::words::WordFilter;
use serde::{Deserialize, Serialize};

const POLICY_FILE: &str = "policy.json";

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
    path: PathBuf,
    /// Serializes saves so the file always holds the latest state.
    save_lock: Mutex<()>,
}

impl PolicyState {
    pub fn load(data_dir: &Path, daily_quota: u32) -> anyhow::Result<PolicyState> {
        let path = data_dir.join(POLICY_FILE);
        let file: PolicyFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PolicyFile::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(PolicyState {
            book: Arc::new(PolicyBook::new(file.policy, daily_quota)),
            words: Arc::new(WordFilter::new(file.words)),
            hits: Arc::new(HitLog::open(data_dir)?),
            path,
            save_lock: Mutex::new(()),
        })
    }

    /// Write the current state durably (temp file, fsync, rename).
    pub fn save(&self) -> anyhow::Result<()> {
        let _guard = self.save_lock.lock().unwrap_or_else(|p| p.into_inner());
        let file = PolicyFile {
            words: self.words.words(),
            policy: self.book.snapshot(),
        };
        let bytes = serde_json::to_vec_pretty(&file)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgate_core::pipeline::UserStatus;

    #[test]
    fn words_statuses_and_overrides_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let p = PolicyState::load(dir.path(), 0).unwrap();
        p.words.add(&["坏词".into(), "bad".into()]);
        p.book.set_status("mallory", UserStatus::Forbidden);
        p.book.set_rate_override("bot", Some((1000, 1)));
        p.save().unwrap();
        let q = PolicyState::load(dir.path(), 0).unwrap();
        assert_eq!(q.words.words(), vec!["bad".to_string(), "坏词".to_string()]);
        assert_eq!(q.book.status("mallory"), UserStatus::Forbidden);
        assert_eq!(q.book.rate_override("bot").unwrap().messages, 1000);
    }
}
