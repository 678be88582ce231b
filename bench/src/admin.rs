//! A blocking client of imgate's signed admin API (DESIGN §5.1), enough for
//! the load generators: sign a request, and issue tokens for many users.
//!
//! It is a copy of the few lines of the gateway's own client rather than a
//! dependency on the gateway crate, so the load tool stays apart from the
//! server binary.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

/// The file in the server's data directory that holds the generated secret.
const ADMIN_SECRET_FILE: &str = "admin-secret";
/// Bounded wait for one admin call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Threads issuing tokens in parallel (thousands of idle connections each
/// need their own user).
const TOKEN_THREADS: usize = 8;

/// Where the admin API is and the secret to sign with (DESIGN §8).
#[derive(clap::Args, Debug, Clone)]
pub struct AdminConn {
    /// Admin API base URL.
    #[arg(
        long,
        env = "IMGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:18080"
    )]
    pub admin_url: String,
    /// The admin secret (default: read from the data directory).
    #[arg(long, env = "IMGATE_ADMIN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The server's data directory, where `admin-secret` is kept.
    #[arg(long, env = "IMGATE_DATA_DIR", default_value = "imgate-data")]
    pub data_dir: PathBuf,
}

impl AdminConn {
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        AdminClient::new(&self.admin_url, self.secret.clone(), &self.data_dir)
    }
}

/// A user's login on one device: what every protocol's CONNECT/login needs.
#[derive(Debug, Clone)]
pub struct Credential {
    pub user: String,
    pub device: String,
    pub token: String,
}

#[derive(Clone)]
pub struct AdminClient {
    base: String,
    secret: String,
    agent: ureq::Agent,
}

impl AdminClient {
    /// Secret: explicit (or `IMGATE_ADMIN_SECRET`), else the data
    /// directory's `admin-secret` file.
    pub fn new(url: &str, secret: Option<String>, data_dir: &Path) -> anyhow::Result<Self> {
        let secret = match secret.filter(|s| !s.is_empty()) {
            Some(s) => s,
            None => {
                let path = data_dir.join(ADMIN_SECRET_FILE);
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "no admin secret: set IMGATE_ADMIN_SECRET or --data-dir (reading {})",
                        path.display()
                    )
                })?;
                text.trim().to_owned()
            }
        };
        Ok(AdminClient {
            base: url.trim_end_matches('/').to_owned(),
            secret,
            agent: ureq::AgentBuilder::new().timeout(CALL_TIMEOUT).build(),
        })
    }

    /// POST a signed JSON request; the `result` on code 0, an error naming
    /// the code and message otherwise.
    pub fn call(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let nonce = unique_hex();
        let ts = unix_ms().to_string();
        let sign = sign(&nonce, &self.secret, &ts);
        let url = format!("{}{}", self.base, path);
        let resp = self
            .agent
            .post(&url)
            .set("nonce", &nonce)
            .set("timestamp", &ts)
            .set("sign", &sign)
            .send_json(body.clone());
        let reply: Value = match resp {
            Ok(r) => r.into_json().context("reading the reply")?,
            Err(ureq::Error::Status(status, r)) => r
                .into_json()
                .unwrap_or_else(|_| json!({"code": -1, "msg": format!("HTTP {status}")})),
            Err(e) => return Err(e).with_context(|| format!("calling {url}")),
        };
        match reply.get("code").and_then(Value::as_i64) {
            Some(0) => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
            Some(code) => bail!(
                "{path} failed: code {code}: {}",
                reply.get("msg").and_then(Value::as_str).unwrap_or("")
            ),
            None => bail!("{path}: unexpected reply {reply}"),
        }
    }

    /// A token for `user` on `device` (platform 3 = pc).
    pub fn token(&self, user: &str, device: &str) -> anyhow::Result<String> {
        let r = self.call(
            "/admin/user/get_token",
            &json!({"userId": user, "clientId": device, "platform": 3}),
        )?;
        r.get("token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("get_token for {user}: no token in {r}"))
    }

    /// Credentials for `users`, one device `d` each, fetched on a few
    /// threads (15,000 idle connections need 15,000 tokens).
    pub fn credentials(&self, users: Vec<String>) -> anyhow::Result<Vec<Credential>> {
        let chunk = users.len().div_ceil(TOKEN_THREADS).max(1);
        let handles: Vec<_> = users
            .chunks(chunk)
            .map(|part| {
                let (client, part) = (self.clone(), part.to_vec());
                std::thread::spawn(move || -> anyhow::Result<Vec<Credential>> {
                    part.into_iter()
                        .map(|user| {
                            let token = client.token(&user, "d")?;
                            Ok(Credential {
                                user,
                                device: "d".into(),
                                token,
                            })
                        })
                        .collect()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(users.len());
        for h in handles {
            out.extend(h.join().map_err(|_| anyhow!("a token thread panicked"))??);
        }
        Ok(out)
    }
}

/// `sha1_hex(nonce + "|" + secret + "|" + timestamp)` (DESIGN §5.1).
fn sign(nonce: &str, secret: &str, timestamp: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce.as_bytes());
    h.update(b"|");
    h.update(secret.as_bytes());
    h.update(b"|");
    h.update(timestamp.as_bytes());
    hex::encode(h.finalize())
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// A hex string unique within this process and very likely across runs
/// (time, pid and a counter): admin nonces and run ids. Not a secret.
pub fn unique_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{n:x}", nanos, std::process::id())
}

/// A short id for one run's user names and topics.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id() & 0xffff, nanos >> 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_is_sha1_of_the_three_parts() {
        // python3 -c "import hashlib; print(hashlib.sha1(b'n|s|1').hexdigest())"
        assert_eq!(
            sign("n", "s", "1"),
            "69800e9006d2e28ecbe8cbba76a6b878d484961d"
        );
    }

    #[test]
    fn unique_hex_differs_each_call() {
        assert_ne!(unique_hex(), unique_hex());
    }
}
