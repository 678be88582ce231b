//! `imgate admin device-secret issue|revoke|list` and `imgate admin
//! revoke-tokens`: device credentials (see `device_secrets`) through the
//! signed admin API.

use clap::Subcommand;
use serde_json::{json, Value};

use super::admin_client::AdminClient;

#[derive(Subcommand, Debug)]
pub enum DeviceSecretCommand {
    /// Issue (or replace) a device's long-lived secret; prints it (shown once).
    Issue {
        #[arg(long)]
        user: String,
        #[arg(long)]
        device: String,
    },
    /// Revoke a device's secret: new logins are refused, live sessions kicked.
    Revoke {
        #[arg(long)]
        user: String,
        #[arg(long)]
        device: String,
    },
    /// List the devices that have a secret (never the secrets).
    List {
        #[arg(long)]
        user: Option<String>,
    },
}

/// Run a `device-secret` command; what to print.
pub fn device_secret(client: &AdminClient, cmd: DeviceSecretCommand) -> anyhow::Result<String> {
    Ok(match cmd {
        DeviceSecretCommand::Issue { user, device } => {
            let r = client.call(
                "/admin/device/secret/issue",
                &json!({"userId": user, "deviceId": device}),
            )?;
            // Just the secret, so `SECRET=$(imgate admin device-secret issue ...)` works.
            r.get("secret")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        }
        DeviceSecretCommand::Revoke { user, device } => pretty(&client.call(
            "/admin/device/secret/revoke",
            &json!({"userId": user, "deviceId": device}),
        )?)?,
        DeviceSecretCommand::List { user } => {
            pretty(&client.call("/admin/device/secret/list", &json!({ "userId": user }))?)?
        }
    })
}

/// `revoke-tokens --user U`: every token of U issued until now is refused.
pub fn revoke_tokens(client: &AdminClient, user: &str) -> anyhow::Result<String> {
    pretty(&client.call("/admin/user/revoke_tokens", &json!({ "userId": user }))?)
}

fn pretty(v: &Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)?)
}
