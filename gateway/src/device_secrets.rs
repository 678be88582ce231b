//! Long-lived device credentials (DESIGN §5.1) and per-user token
//! revocation.
//!
//! An IoT device that cannot refresh a token logs in with a *device
//! secret*: 32 random bytes, shown once when the admin API issues it,
//! bound to one (user, device). Only its SHA-256 digest (domain-separated)
//! is kept; a login compares digests in constant time. A secret is
//! revoked through the admin API; the device's live sessions are kicked.
//!
//! The same record keeps, per user, a watermark "tokens issued at or
//! before T (ms) are invalid" (revoke all tokens of a user). Tokens
//! without an issue time (older versions) are valid until their user's
//! first such revocation.
//!
//! Storage is the mechanism the policy uses (`crate::policy`): one
//! cluster-wide setting of the store (key [`CREDENTIALS_KEY`], a JSON
//! snapshot) — durable, read at start, and handed to every node's
//! [`DeviceCredentials::follow`] task. Each snapshot has a version that
//! only grows, so an echo of an older change never replaces a newer one.
//! The snapshot is bounded: secrets per user and in total are limits of
//! the config (`device_secrets_per_user`, `device_secrets_max_total`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use anyhow::Context;
use imgate_core::{ErrorCode, ImError, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;

/// The store setting that holds every device secret and token watermark.
pub const CREDENTIALS_KEY: &str = "device_credentials";

/// Every device secret starts with this (a token never does: it is
/// base64url JSON, `eyJ...`), so a log or a support request shows which
/// kind of credential it is without showing the secret.
pub const SECRET_PREFIX: &str = "ds1_";

/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;

/// Longest user or device id a secret is issued for.
pub const MAX_ID_BYTES: usize = 128;

/// One device's secret, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SecretRecord {
    /// Hex of [`digest`] of the secret.
    hash: String,
    #[serde(rename = "issuedMs")]
    issued_ms: i64,
    /// SCRAM keys (hex `storedKey:serverKey`) for XMPP SCRAM-SHA-1 and
    /// -256 logins (`xmpp::scram`); absent on secrets issued before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scram1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scram256: Option<String>,
}

fn scram_hex(k: &crate::scram_keys::Keys) -> String {
    format!(
        "{}:{}",
        hex::encode(&k.stored_key),
        hex::encode(&k.server_key)
    )
}

fn scram_keys(s: &str) -> Option<crate::scram_keys::Keys> {
    let (stored, server) = s.split_once(':')?;
    Some(crate::scram_keys::Keys {
        stored_key: hex::decode(stored).ok()?,
        server_key: hex::decode(server).ok()?,
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Snapshot {
    /// Grows with every change (see the module docs).
    #[serde(default)]
    version: u64,
    /// user → device → secret.
    #[serde(default)]
    devices: BTreeMap<String, BTreeMap<String, SecretRecord>>,
    /// user → tokens issued at or before this instant (ms) are invalid.
    #[serde(rename = "tokensRevokedBefore", default)]
    tokens_revoked: BTreeMap<String, i64>,
}

impl Snapshot {
    fn total(&self) -> usize {
        self.devices.values().map(BTreeMap::len).sum()
    }
}

/// A device secret as the admin API lists it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    #[serde(rename = "userId")]
    pub user_id: String,
    #[serde(rename = "deviceId")]
    pub device_id: String,
    #[serde(rename = "issuedMs")]
    pub issued_ms: i64,
}

pub use crate::config::SecretLimits;

/// The digest kept for `secret`: SHA-256 over a domain tag and the
/// secret. The secret has 256 random bits, so a digest leak does not
/// help to find it and no slow hash is needed.
pub fn digest(secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"imgate device secret v1\0");
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// Constant-time comparison of a presented digest with a stored one
/// (hex); a stored value that is not 32 bytes of hex never matches.
fn digest_matches(presented: &[u8; 32], stored_hex: &str) -> bool {
    let mut stored = [0u8; 32];
    if hex::decode_to_slice(stored_hex, &mut stored).is_err() {
        return false;
    }
    presented
        .iter()
        .zip(stored.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A fresh secret: the prefix and 32 random bytes, base64url.
fn new_secret() -> Result<String, ImError> {
    use base64::Engine;
    let mut buf = [0u8; SECRET_BYTES];
    getrandom::getrandom(&mut buf)
        .map_err(|e| ImError::new(ErrorCode::ServerError, format!("no system randomness: {e}")))?;
    Ok(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    ))
}

fn check_id(id: &str, what: &str) -> Result<(), ImError> {
    if id.trim().is_empty()
        || id.len() > MAX_ID_BYTES
        || id.chars().any(char::is_control)
        || id == crate::token::ANY_DEVICE
    {
        return Err(ImError::new(
            ErrorCode::InvalidParameter,
            format!("{what} must be 1..{MAX_ID_BYTES} bytes, not `*`, no control characters"),
        ));
    }
    Ok(())
}

/// The device credentials one gateway node holds.
pub struct DeviceCredentials {
    inner: RwLock<Snapshot>,
    limits: SecretLimits,
    /// Serializes changes so the store's last value is this node's latest.
    save_lock: tokio::sync::Mutex<()>,
}

impl DeviceCredentials {
    /// The credentials as the store has them (none if never set).
    pub async fn load(store: &dyn Store, limits: SecretLimits) -> anyhow::Result<Self> {
        let snapshot = match store
            .setting(CREDENTIALS_KEY)
            .await
            .context("reading the device credentials from the store")?
        {
            Some(json) => {
                serde_json::from_str(&json).context("parsing the stored device credentials")?
            }
            None => Snapshot::default(),
        };
        Ok(DeviceCredentials {
            inner: RwLock::new(snapshot),
            limits,
            save_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `change` to a copy of the current snapshot, store it, then
    /// make it live here. Nothing changes when the store write fails.
    async fn change<T>(
        &self,
        store: &dyn Store,
        now_ms: i64,
        change: impl FnOnce(&mut Snapshot) -> Result<T, ImError>,
    ) -> Result<T, ImError> {
        let _guard = self.save_lock.lock().await;
        let mut next = self.read().clone();
        let out = change(&mut next)?;
        next.version = next.version.saturating_add(1).max(now_ms.max(0) as u64);
        let json = serde_json::to_string(&next)
            .map_err(|e| ImError::new(ErrorCode::ServerError, e.to_string()))?;
        store
            .put_setting(CREDENTIALS_KEY.to_string(), json)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot store the device credentials");
                ImError::new(ErrorCode::ServerError, format!("not stored: {e}"))
            })?;
        let mut live = self.write();
        if next.version > live.version {
            *live = next;
        }
        Ok(out)
    }

    /// Issue (or replace) the secret of `device` of `user`; the secret,
    /// to be shown once.
    pub async fn issue(
        &self,
        store: &dyn Store,
        user: &str,
        device: &str,
        now_ms: i64,
    ) -> Result<String, ImError> {
        check_id(user, "userId")?;
        check_id(device, "deviceId")?;
        let secret = new_secret()?;
        use crate::scram_keys::{derive, Hash};
        let record = SecretRecord {
            hash: hex::encode(digest(&secret)),
            issued_ms: now_ms,
            scram1: Some(scram_hex(&derive(Hash::Sha1, user, &secret))),
            scram256: Some(scram_hex(&derive(Hash::Sha256, user, &secret))),
        };
        let limits = self.limits;
        self.change(store, now_ms, |s| {
            let replacing = s.devices.get(user).is_some_and(|d| d.contains_key(device));
            if !replacing {
                let of_user = s.devices.get(user).map_or(0, BTreeMap::len);
                if of_user >= limits.per_user {
                    return Err(ImError::new(
                        ErrorCode::OverFrequency,
                        format!(
                            "user has {of_user} device secrets (limit {})",
                            limits.per_user
                        ),
                    ));
                }
                if s.total() >= limits.total {
                    return Err(ImError::new(
                        ErrorCode::OverFrequency,
                        format!(
                            "{} device secrets stored (limit {})",
                            s.total(),
                            limits.total
                        ),
                    ));
                }
            }
            s.devices
                .entry(user.to_string())
                .or_default()
                .insert(device.to_string(), record);
            Ok(())
        })
        .await?;
        Ok(secret)
    }

    /// Revoke the secret of `device` of `user`; false if it had none.
    pub async fn revoke(
        &self,
        store: &dyn Store,
        user: &str,
        device: &str,
        now_ms: i64,
    ) -> Result<bool, ImError> {
        if !self
            .read()
            .devices
            .get(user)
            .is_some_and(|d| d.contains_key(device))
        {
            return Ok(false);
        }
        self.change(store, now_ms, |s| {
            let Some(devices) = s.devices.get_mut(user) else {
                return Ok(false);
            };
            let removed = devices.remove(device).is_some();
            if devices.is_empty() {
                s.devices.remove(user);
            }
            Ok(removed)
        })
        .await
    }

    /// Invalidate every token of `user` issued at or before `now_ms`.
    pub async fn revoke_tokens(
        &self,
        store: &dyn Store,
        user: &str,
        now_ms: i64,
    ) -> Result<(), ImError> {
        check_id(user, "userId")?;
        self.change(store, now_ms, |s| {
            let mark = s.tokens_revoked.entry(user.to_string()).or_insert(now_ms);
            *mark = (*mark).max(now_ms);
            Ok(())
        })
        .await
    }

    /// The secrets of `user` (every user's if None), without the secrets.
    pub fn list(&self, user: Option<&str>) -> Vec<SecretInfo> {
        let s = self.read();
        s.devices
            .iter()
            .filter(|(u, _)| user.is_none_or(|want| want == u.as_str()))
            .flat_map(|(u, devices)| {
                devices.iter().map(|(d, r)| SecretInfo {
                    user_id: u.clone(),
                    device_id: d.clone(),
                    issued_ms: r.issued_ms,
                })
            })
            .collect()
    }

    /// The device of `user` that `secret` belongs to: `device` itself if
    /// given (and the secret is its), else whichever of the user's devices
    /// it is (a protocol that logs in before it names the device, such as
    /// XMPP SASL). Every candidate is compared in constant time.
    pub fn check_secret(&self, user: &str, device: Option<&str>, secret: &str) -> Option<String> {
        if !secret.starts_with(SECRET_PREFIX) {
            return None;
        }
        let presented = digest(secret);
        let s = self.read();
        let devices = s.devices.get(user)?;
        match device {
            Some(d) => devices
                .get(d)
                .filter(|r| digest_matches(&presented, &r.hash))
                .map(|_| d.to_string()),
            None => devices
                .iter()
                .find(|(_, r)| digest_matches(&presented, &r.hash))
                .map(|(d, _)| d.clone()),
        }
    }

    /// The SCRAM keys of `user`'s device secrets for `hash`, by device
    /// (what an XMPP SCRAM proof is checked against).
    pub fn scram_candidates(
        &self,
        user: &str,
        hash: crate::scram_keys::Hash,
    ) -> Vec<(String, crate::scram_keys::Keys)> {
        let s = self.read();
        let Some(devices) = s.devices.get(user) else {
            return Vec::new();
        };
        devices
            .iter()
            .filter_map(|(d, r)| {
                let keys = match hash {
                    crate::scram_keys::Hash::Sha1 => r.scram1.as_deref(),
                    crate::scram_keys::Hash::Sha256 => r.scram256.as_deref(),
                }?;
                Some((d.clone(), scram_keys(keys)?))
            })
            .collect()
    }

    /// A token of `user` issued at `issued_ms` (None: before issue times
    /// were recorded) was revoked.
    pub fn token_revoked(&self, user: &str, issued_ms: Option<i64>) -> bool {
        match self.read().tokens_revoked.get(user) {
            None => false,
            Some(mark) => issued_ms.is_none_or(|at| at <= *mark),
        }
    }

    /// Replace the live snapshot with a stored one if it is newer; what it
    /// revoked: (user, device) secrets removed or replaced, and users
    /// whose tokens were revoked.
    fn apply(&self, json: &str) -> anyhow::Result<Revoked> {
        let next: Snapshot = serde_json::from_str(json)?;
        let mut live = self.write();
        if next.version <= live.version {
            return Ok(Revoked::default());
        }
        let mut revoked = Revoked::default();
        for (user, devices) in &live.devices {
            for (device, record) in devices {
                if next.devices.get(user).and_then(|d| d.get(device)) != Some(record) {
                    revoked.devices.push((user.clone(), device.clone()));
                }
            }
        }
        for (user, mark) in &next.tokens_revoked {
            if live.tokens_revoked.get(user).is_none_or(|old| old < mark) {
                revoked.token_users.push(user.clone());
            }
        }
        *live = next;
        Ok(revoked)
    }

    /// Apply every change the store reports (from any node) until it
    /// closes; `revoked` is told what each change took away (the gateway
    /// kicks this node's sessions that used it, `sessions::enforce`).
    pub async fn follow(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        revoked: impl Fn(Revoked) + Send + 'static,
    ) {
        let mut changes = store.watch_settings();
        loop {
            let json = match changes.recv().await {
                Ok((key, value)) if key == CREDENTIALS_KEY => value.as_str().to_string(),
                Ok(_) => continue,
                // Missed some: the last value is all that matters.
                Err(RecvError::Lagged(_)) => match store.setting(CREDENTIALS_KEY).await {
                    Ok(Some(json)) => json,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot re-read the device credentials");
                        continue;
                    }
                },
                Err(RecvError::Closed) => return,
            };
            match self.apply(&json) {
                Ok(r) => revoked(r),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring an unreadable device credentials update")
                }
            }
        }
    }
}

/// Credentials a change took away.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    pub devices: Vec<(String, String)>,
    pub token_users: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgate_adapters::{EmbeddedConfig, EmbeddedStore};

    const LIMITS: SecretLimits = SecretLimits {
        per_user: 2,
        total: 3,
    };

    fn store(dir: &std::path::Path) -> Arc<dyn Store> {
        Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir)).unwrap())
    }

    #[test]
    fn digests_compare_exactly() {
        let d = digest("ds1_abc");
        assert!(digest_matches(&d, &hex::encode(d)));
        assert!(!digest_matches(&digest("ds1_abd"), &hex::encode(d)));
        assert!(!digest_matches(&d, "not hex"));
        assert!(!digest_matches(&d, &hex::encode(&d[..31])));
        // Domain-separated: not the plain SHA-256 of the secret.
        let plain: [u8; 32] = Sha256::digest(b"ds1_abc").into();
        assert_ne!(d, plain);
    }

    #[tokio::test]
    async fn issue_check_revoke_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let c = DeviceCredentials::load(store.as_ref(), LIMITS)
            .await
            .unwrap();
        let s1 = c.issue(store.as_ref(), "u", "d1", 10).await.unwrap();
        let s2 = c.issue(store.as_ref(), "u", "d2", 11).await.unwrap();
        assert!(s1.starts_with(SECRET_PREFIX) && s1.len() > 40);
        assert_ne!(s1, s2);
        assert_eq!(c.check_secret("u", Some("d1"), &s1).as_deref(), Some("d1"));
        assert_eq!(c.check_secret("u", None, &s2).as_deref(), Some("d2"));
        assert_eq!(
            c.check_secret("u", Some("d2"), &s1),
            None,
            "another device's"
        );
        assert_eq!(c.check_secret("v", None, &s1), None, "another user's");
        assert_eq!(c.check_secret("u", None, "ds1_wrong"), None);
        // Nothing secret is kept or listed.
        let stored = store.setting(CREDENTIALS_KEY).await.unwrap().unwrap();
        assert!(!stored.contains(&s1[SECRET_PREFIX.len()..]));
        assert_eq!(c.list(Some("u")).len(), 2);
        // Limits: per user, then in total; replacing is always allowed.
        let e = c.issue(store.as_ref(), "u", "d3", 12).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::OverFrequency);
        let s1b = c.issue(store.as_ref(), "u", "d1", 13).await.unwrap();
        assert_eq!(c.check_secret("u", None, &s1), None, "replaced");
        c.issue(store.as_ref(), "w", "x", 14).await.unwrap();
        assert!(c.issue(store.as_ref(), "w", "y", 15).await.is_err());
        assert!(c.issue(store.as_ref(), "w", "*", 15).await.is_err());
        // Revoke; a reload (restart) sees the same.
        assert!(c.revoke(store.as_ref(), "u", "d2", 16).await.unwrap());
        assert!(!c.revoke(store.as_ref(), "u", "d2", 17).await.unwrap());
        let again = DeviceCredentials::load(store.as_ref(), LIMITS)
            .await
            .unwrap();
        assert_eq!(again.check_secret("u", None, &s2), None);
        assert_eq!(
            again.check_secret("u", Some("d1"), &s1b).as_deref(),
            Some("d1")
        );
    }

    #[tokio::test]
    async fn token_watermark_and_followers() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let a = DeviceCredentials::load(store.as_ref(), LIMITS)
            .await
            .unwrap();
        let b = Arc::new(
            DeviceCredentials::load(store.as_ref(), LIMITS)
                .await
                .unwrap(),
        );
        assert!(
            !a.token_revoked("u", None),
            "no revocation yet: old tokens valid"
        );
        let secret = a.issue(store.as_ref(), "u", "d", 5).await.unwrap();
        a.revoke_tokens(store.as_ref(), "u", 1000).await.unwrap();
        assert!(a.token_revoked("u", None));
        assert!(a.token_revoked("u", Some(1000)));
        assert!(!a.token_revoked("u", Some(1001)));
        assert!(!a.token_revoked("v", Some(1)));
        // Node b applies a's snapshot and reports what it revoked.
        let json = store.setting(CREDENTIALS_KEY).await.unwrap().unwrap();
        assert_eq!(b.apply(&json).unwrap().token_users, vec!["u".to_string()]);
        assert_eq!(
            b.check_secret("u", Some("d"), &secret).as_deref(),
            Some("d")
        );
        a.revoke(store.as_ref(), "u", "d", 2000).await.unwrap();
        let newer = store.setting(CREDENTIALS_KEY).await.unwrap().unwrap();
        let r = b.apply(&newer).unwrap();
        assert_eq!(r.devices, vec![("u".to_string(), "d".to_string())]);
        assert!(r.token_users.is_empty());
        // An older snapshot arriving late changes nothing.
        assert_eq!(b.apply(&json).unwrap(), Revoked::default());
        assert_eq!(b.check_secret("u", Some("d"), &secret), None);
    }
}
