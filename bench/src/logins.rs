//! Where the MQTT load generators get their logins: anonymous (a peer
//! broker), one shared username/password, a credentials file, or imgate's
//! admin API issuing one user per connection (username = user id,
//! password = token, client id = the token's device; one user per
//! connection keeps the kick rule and per-user limits out of the way).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::admin::AdminClient;
use crate::mqtt_client::Login;

#[derive(Args, Debug, Clone)]
pub struct LoginSource {
    /// One username for every connection (omit for anonymous access).
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long, env = "IMGATE_BENCH_MQTT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// File of `user client_id password` lines, one per connection.
    #[arg(long, conflicts_with_all = ["username", "password", "admin_url"])]
    pub credentials: Option<PathBuf>,
    /// imgate's admin API: issue a token for a fresh user per connection.
    #[arg(long, conflicts_with_all = ["username", "password"])]
    pub admin_url: Option<String>,
    /// The admin secret (default: the data directory's `admin-secret`).
    #[arg(long, env = "IMGATE_ADMIN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The imgate server's data directory, where `admin-secret` is kept.
    #[arg(long, default_value = "imgate-data")]
    pub data_dir: PathBuf,
}

impl LoginSource {
    /// `count` logins; `run_id` keeps client ids and users of runs apart.
    pub fn logins(&self, count: usize, run_id: &str) -> anyhow::Result<Vec<Login>> {
        if let Some(path) = &self.credentials {
            return read_credentials(path, count);
        }
        if let Some(url) = &self.admin_url {
            let admin = AdminClient::new(url, self.secret.clone(), &self.data_dir)?;
            let users = (0..count).map(|i| format!("bench-{run_id}-{i}")).collect();
            return Ok(admin
                .credentials(users)?
                .into_iter()
                .map(|c| Login {
                    username: Some(c.user),
                    password: Some(c.token),
                    client_id: c.device,
                })
                .collect());
        }
        Ok((0..count)
            .map(|i| Login {
                username: self.username.clone(),
                password: self.password.clone(),
                client_id: format!("bench-{run_id}-{i}"),
            })
            .collect())
    }
}

fn read_credentials(path: &PathBuf, count: usize) -> anyhow::Result<Vec<Login>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<Login> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(Login {
                username: Some(f.next()?.to_owned()),
                client_id: f.next()?.to_owned(),
                password: Some(f.next()?.to_owned()),
            })
        })
        .collect();
    anyhow::ensure!(
        lines.len() >= count,
        "{} has {} credential lines, {count} connections need one each",
        path.display(),
        lines.len()
    );
    Ok(lines.into_iter().take(count).collect())
}
