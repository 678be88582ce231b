//! The sensitive-word hit log: every hit appended to a JSONL file in the
//! data directory, the most recent kept in memory for the admin API.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use imgate_core::pipeline::{HitRecord, HitSink};

const HITS_FILE: &str = "sensitive-hits.jsonl";
const KEEP_IN_MEMORY: usize = 10_000;

pub struct HitLog {
    recent: Mutex<VecDeque<HitRecord>>,
    file: Mutex<std::fs::File>,
}

impl HitLog {
    pub fn open(data_dir: &Path) -> anyhow::Result<HitLog> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(HITS_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(HitLog {
            recent: Mutex::new(VecDeque::new()),
            file: Mutex::new(file),
        })
    }

    /// The newest hits first, optionally of one sender.
    pub fn recent(&self, sender: Option<&str>, limit: usize) -> Vec<HitRecord> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .rev()
            .filter(|h| sender.is_none_or(|s| h.sender == s))
            .take(limit)
            .cloned()
            .collect()
    }
}

impl HitSink for HitLog {
    fn record(&self, hit: HitRecord) {
        tracing::info!(sender = %hit.sender, words = ?hit.words, action = ?hit.action, "sensitive words matched");
        if let Ok(line) = serde_json::to_string(&hit) {
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = writeln!(f, "{line}") {
                tracing::warn!(error = %e, "cannot append to the hit log");
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEEP_IN_MEMORY {
            recent.pop_front();
        }
        recent.push_back(hit);
    }
}
