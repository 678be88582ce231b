//! A blocking admin API client that signs every request (DESIGN §5.1), so
//! nobody has to compute SHA-1 signatures by hand.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::{admin_sign, secrets};

/// Where the admin API is and the secret to sign with: the options of
/// every command that calls it (DESIGN §8).
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

pub struct AdminClient {
    base: String,
    secret: String,
    agent: ureq::Agent,
}

impl AdminClient {
    /// Secret: explicit, else `IMGATE_ADMIN_SECRET` (handled by clap), else
    /// the data directory's `admin-secret` file.
    pub fn new(url: &str, secret: Option<String>, data_dir: &Path) -> anyhow::Result<Self> {
        let secret = match secret.filter(|s| !s.is_empty()) {
            Some(s) => s,
            None => secrets::read_secret(data_dir)?.ok_or_else(|| {
                anyhow!(
                    "no admin secret: set IMGATE_ADMIN_SECRET, or IMGATE_DATA_DIR / --data-dir to the \
                     server's data directory (looked in {})",
                    secrets::secret_path(data_dir).display()
                )
            })?,
        };
        Ok(AdminClient {
            base: url.trim_end_matches('/').to_string(),
            secret,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        })
    }

    /// POST a signed JSON request; the `result` on code 0, an error naming
    /// the code and message otherwise.
    pub fn call(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let nonce = secrets::random_hex(8)?;
        let ts = imgate_core::now_ms().to_string();
        let sign = admin_sign::sign(&nonce, &self.secret, &ts);
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
            Err(ureq::Error::Status(status, r)) => r.into_json().unwrap_or_else(
                |_| serde_json::json!({"code": -1, "msg": format!("HTTP {status}")}),
            ),
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
}
