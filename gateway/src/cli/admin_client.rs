//! A blocking admin API client that signs every request (DESIGN §5.1), so
//! nobody has to compute SHA-1 signatures by hand. It speaks HTTPS to an
//! `https://` admin URL (`admin_tls`), verifying as `admin_tls` says.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use super::admin_tls::AdminTls;
use crate::{admin_sign, secrets};

/// The largest reply `call_raw` reads (an import batch's answer is
/// about 150 bytes per line).
const MAX_REPLY_BYTES: u64 = 16 * 1024 * 1024;

/// The admin listener's address by default (`admin_addr`).
const DEFAULT_ADMIN_HOST: &str = "127.0.0.1:18080";

/// Where the admin API is and the secret to sign with: the options of
/// every command that calls it (DESIGN §8).
#[derive(clap::Args, Debug, Clone)]
pub struct AdminConn {
    /// Admin API base URL (default: https://127.0.0.1:18080 when
    /// IMGATE_TLS_CERT is set and IMGATE_ADMIN_TLS is not false, as the
    /// server would serve it; else http://127.0.0.1:18080).
    #[arg(long, env = "IMGATE_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// PEM certificates to trust for an https:// admin URL (default: the
    /// server's IMGATE_TLS_CERT, else the system's roots).
    #[arg(long, env = "IMGATE_ADMIN_CA")]
    pub admin_ca: Option<PathBuf>,
    /// The name to verify in the admin listener's certificate instead of
    /// the URL's host.
    #[arg(long, env = "IMGATE_ADMIN_TLS_NAME")]
    pub admin_tls_name: Option<String>,
    /// The admin secret (default: read from the data directory).
    #[arg(long, env = "IMGATE_ADMIN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The server's data directory, where `admin-secret` is kept.
    #[arg(long, env = "IMGATE_DATA_DIR", default_value = "imgate-data")]
    pub data_dir: PathBuf,
}

impl AdminConn {
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let server_cert = env("IMGATE_TLS_CERT").map(PathBuf::from);
        let url = match &self.admin_url {
            Some(url) => url.clone(),
            None => {
                let admin_tls_off = env("IMGATE_ADMIN_TLS")
                    .is_some_and(|v| matches!(v.trim(), "0" | "false" | "no" | "off"));
                let scheme = if server_cert.is_some() && !admin_tls_off {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{DEFAULT_ADMIN_HOST}")
            }
        };
        let mut client = AdminClient::new(&url, self.secret.clone(), &self.data_dir)?;
        if url.starts_with("https://") {
            let ca = self.admin_ca.clone().or(server_cert);
            client.use_tls(AdminTls::new(ca.as_deref(), self.admin_tls_name.clone())?);
        }
        Ok(client)
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

    /// Verify `https://` admin URLs with `tls`.
    pub fn use_tls(&mut self, tls: AdminTls) {
        self.agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .tls_connector(std::sync::Arc::new(tls))
            .build();
    }

    /// A signed POST to `path` (DESIGN §5.1: a fresh nonce and timestamp).
    fn signed(&self, path: &str) -> anyhow::Result<(String, ureq::Request)> {
        let nonce = secrets::random_hex(8)?;
        let ts = imgate_core::now_ms().to_string();
        let sign = admin_sign::sign(&nonce, &self.secret, &ts);
        let url = format!("{}{}", self.base, path);
        let req = self
            .agent
            .post(&url)
            .set("nonce", &nonce)
            .set("timestamp", &ts)
            .set("sign", &sign);
        Ok((url, req))
    }

    /// POST a signed JSON request; the `result` on code 0, an error naming
    /// the code and message otherwise.
    pub fn call(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (url, req) = self.signed(path)?;
        let resp = req.send_json(body.clone());
        let reply: Value = match resp {
            Ok(r) => r.into_json().context("reading the reply")?,
            Err(ureq::Error::Status(status, r)) => r.into_json().unwrap_or_else(
                |_| serde_json::json!({"code": -1, "msg": format!("HTTP {status}")}),
            ),
            Err(e) => return Err(e).with_context(|| format!("calling {url}")),
        };
        result_of(path, reply)
    }

    /// POST a signed request whose JSON body is already serialized (the
    /// importer joins raw lines); the reply decoded as `T`, which sees
    /// the whole `{"code","msg","result"}` object.
    pub fn call_raw<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<T> {
        let (url, req) = self.signed(path)?;
        let resp = req.set("content-type", "application/json").send_bytes(body);
        let r = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e).with_context(|| format!("calling {url}")),
        };
        let status = r.status();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(r.into_reader(), MAX_REPLY_BYTES),
            &mut bytes,
        )
        .context("reading the reply")?;
        serde_json::from_slice(&bytes).map_err(|e| {
            anyhow!(
                "{path}: HTTP {status}, unexpected reply ({e}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )
        })
    }
}

/// The `result` of a reply with code 0, else an error with its code.
fn result_of(path: &str, reply: Value) -> anyhow::Result<Value> {
    match reply.get("code").and_then(Value::as_i64) {
        Some(0) => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
        Some(code) => bail!(
            "{path} failed: code {code}: {}",
            reply.get("msg").and_then(Value::as_str).unwrap_or("")
        ),
        None => bail!("{path}: unexpected reply {reply}"),
    }
}
