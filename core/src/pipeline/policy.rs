//! Per-user policy set through the admin API: status (normal / muted /
//! forbidden), rate-limit overrides, and the daily quota counters; and
//! each user's own block list (XMPP XEP-0191): a private message between
//! two users one of whom blocks the other is refused with 245. Shared by
//! the auth and rate-limit layers and by every protocol's login.

/// Most users one user may block.
pub const MAX_BLOCKED_PER_USER: usize = 500;
/// Most block-list entries of all users together (the policy is one
/// stored snapshot).
pub const MAX_BLOCKED_TOTAL: usize = 100_000;

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::RateLimitConfig;
use crate::{ErrorCode, ImError};

/// A user's status (the seeds' server numbering: 0 normal, 1 muted, 2 forbidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum UserStatus {
    #[default]
    Normal,
    /// May log in and receive, may not send (code 8).
    Muted,
    /// May not log in (code 245); online sessions are kicked.
    Forbidden,
}

impl UserStatus {
    pub fn from_i32(v: i32) -> Option<UserStatus> {
        match v {
            0 => Some(UserStatus::Normal),
            1 => Some(UserStatus::Muted),
            2 => Some(UserStatus::Forbidden),
            _ => None,
        }
    }

    pub fn as_i32(self) -> i32 {
        match self {
            UserStatus::Normal => 0,
            UserStatus::Muted => 1,
            UserStatus::Forbidden => 2,
        }
    }
}

/// The persisted part of the policy (statuses and overrides).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicySnapshot {
    #[serde(default)]
    pub statuses: HashMap<String, UserStatus>,
    /// user → (messages, per seconds)
    #[serde(default)]
    pub rate_overrides: HashMap<String, (u32, u64)>,
    /// user → the users they block.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub blocks: HashMap<String, std::collections::BTreeSet<String>>,
}

/// Live per-user policy.
#[derive(Default)]
pub struct PolicyBook {
    snapshot: RwLock<PolicySnapshot>,
}

impl PolicyBook {
    pub fn new(snapshot: PolicySnapshot) -> Self {
        PolicyBook {
            snapshot: RwLock::new(snapshot),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, PolicySnapshot> {
        match self.snapshot.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, PolicySnapshot> {
        match self.snapshot.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Replace statuses and overrides (a snapshot from the store).
    pub fn replace(&self, snapshot: PolicySnapshot) {
        *self.write() = snapshot;
    }

    pub fn snapshot(&self) -> PolicySnapshot {
        self.read().clone()
    }

    pub fn status(&self, user: &str) -> UserStatus {
        self.read().statuses.get(user).copied().unwrap_or_default()
    }

    pub fn set_status(&self, user: &str, status: UserStatus) {
        let mut s = self.write();
        if status == UserStatus::Normal {
            s.statuses.remove(user);
        } else {
            s.statuses.insert(user.to_string(), status);
        }
    }

    /// Refuse a login of a forbidden user (every protocol calls this).
    pub fn check_login(&self, user: &str) -> Result<(), ImError> {
        match self.status(user) {
            UserStatus::Forbidden => Err(ImError::new(ErrorCode::UserBlocked, "user is forbidden")),
            _ => Ok(()),
        }
    }

    /// Refuse a send by a muted or forbidden user.
    pub fn check_send(&self, user: &str) -> Result<(), ImError> {
        match self.status(user) {
            UserStatus::Normal => Ok(()),
            UserStatus::Muted => Err(ImError::new(ErrorCode::UserForbidden, "user is muted")),
            UserStatus::Forbidden => Err(ImError::new(ErrorCode::UserBlocked, "user is forbidden")),
        }
    }

    /// Refuse a private message between `sender` and `target` when one
    /// blocks the other (245).
    pub fn check_blocks(&self, sender: &str, target: &str) -> Result<(), ImError> {
        let s = self.read();
        if s.blocks.get(target).is_some_and(|b| b.contains(sender)) {
            return Err(ImError::new(
                ErrorCode::UserBlocked,
                "blocked by the recipient",
            ));
        }
        if s.blocks.get(sender).is_some_and(|b| b.contains(target)) {
            return Err(ImError::new(ErrorCode::UserBlocked, "you block this user"));
        }
        Ok(())
    }

    /// The users `user` blocks.
    pub fn blocked_by(&self, user: &str) -> Vec<String> {
        self.read()
            .blocks
            .get(user)
            .map(|b| b.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Add `targets` to `user`'s block list (within the limits; nothing
    /// changes when they would be passed).
    pub fn block(&self, user: &str, targets: &[String]) -> Result<(), ImError> {
        let mut s = self.write();
        let total: usize = s.blocks.values().map(|b| b.len()).sum();
        let list = s.blocks.get(user);
        let new: Vec<&String> = targets
            .iter()
            .filter(|t| *t != user && !list.is_some_and(|l| l.contains(*t)))
            .collect();
        let have = list.map_or(0, |l| l.len());
        if have + new.len() > MAX_BLOCKED_PER_USER || total + new.len() > MAX_BLOCKED_TOTAL {
            return Err(ImError::new(
                ErrorCode::OverFrequency,
                format!("at most {MAX_BLOCKED_PER_USER} blocked users"),
            ));
        }
        let new: Vec<String> = new.into_iter().cloned().collect();
        s.blocks.entry(user.to_string()).or_default().extend(new);
        Ok(())
    }

    /// Remove `targets` (all when empty) from `user`'s block list.
    pub fn unblock(&self, user: &str, targets: &[String]) {
        let mut s = self.write();
        if targets.is_empty() {
            s.blocks.remove(user);
            return;
        }
        if let Some(list) = s.blocks.get_mut(user) {
            for t in targets {
                list.remove(t);
            }
            if list.is_empty() {
                s.blocks.remove(user);
            }
        }
    }

    pub fn rate_override(&self, user: &str) -> Option<RateLimitConfig> {
        self.read()
            .rate_overrides
            .get(user)
            .map(|(messages, per)| RateLimitConfig {
                messages: *messages,
                per: std::time::Duration::from_secs(*per),
            })
    }

    /// Set (Some) or clear (None) a user's own rate limit.
    pub fn set_rate_override(&self, user: &str, limit: Option<(u32, u64)>) {
        let mut s = self.write();
        match limit {
            Some(l) => s.rate_overrides.insert(user.to_string(), l),
            None => s.rate_overrides.remove(user),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decide_sending_and_login() {
        let p = PolicyBook::new(PolicySnapshot::default());
        assert!(p.check_send("a").is_ok());
        p.set_status("a", UserStatus::Muted);
        assert_eq!(
            p.check_send("a").unwrap_err().code,
            ErrorCode::UserForbidden
        );
        assert!(p.check_login("a").is_ok());
        p.set_status("a", UserStatus::Forbidden);
        assert_eq!(p.check_login("a").unwrap_err().code, ErrorCode::UserBlocked);
        p.set_status("a", UserStatus::Normal);
        assert!(p.snapshot().statuses.is_empty());
    }

    #[test]
    fn blocks_refuse_private_messages_both_ways_within_limits() {
        let p = PolicyBook::default();
        p.block("bob", &["alice".into(), "bob".into()]).unwrap();
        assert_eq!(p.blocked_by("bob"), ["alice"]);
        assert_eq!(
            p.check_blocks("alice", "bob").unwrap_err().code,
            ErrorCode::UserBlocked
        );
        assert_eq!(
            p.check_blocks("bob", "alice").unwrap_err().code,
            ErrorCode::UserBlocked
        );
        assert!(p.check_blocks("carol", "bob").is_ok());
        let many: Vec<String> = (0..MAX_BLOCKED_PER_USER).map(|i| format!("u{i}")).collect();
        assert!(p.block("bob", &many).is_err(), "over the per-user limit");
        assert_eq!(p.blocked_by("bob").len(), 1, "nothing changed");
        p.unblock("bob", &[]);
        assert!(p.check_blocks("alice", "bob").is_ok());
    }
}
