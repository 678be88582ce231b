//! `imgate admin ...`: the admin API for humans.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::admin_client::AdminConn;

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub conn: AdminConn,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Issue a login token for a user's device; prints the token.
    GetToken {
        user: String,
        /// The device the token is for; none (or `*`): any device of the
        /// user, whose own client id is then its device id.
        #[arg(long, visible_alias = "device")]
        client_id: Option<String>,
        /// Platform number (1 iOS, 2 Android, 3 Windows, 4 macOS, 5 Web, 7 Linux, 8 iPad);
        /// none (0): in no class of the login kick rule.
        #[arg(long, default_value_t = 0)]
        platform: i32,
    },
    /// Long-lived device secrets for devices that cannot refresh tokens.
    DeviceSecret {
        #[command(subcommand)]
        command: super::admin_devices::DeviceSecretCommand,
    },
    /// Revoke every token of a user issued until now.
    RevokeTokens {
        #[arg(long)]
        user: String,
    },
    /// A user's online sessions on the node the CLI talks to.
    Sessions {
        #[arg(long)]
        user: String,
    },
    /// End the sessions of one device of a user (every device without
    /// `--device`) on every node; credentials stay valid.
    Kick {
        #[arg(long)]
        user: String,
        #[arg(long)]
        device: Option<String>,
    },
    /// Send a text message as a user.
    Send {
        #[arg(long)]
        from: String,
        /// Private message to this user.
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        to: Option<String>,
        /// Group message to this group.
        #[arg(long)]
        group: Option<String>,
        #[arg(long, default_value = "")]
        client_msg_id: String,
        text: String,
    },
    /// Recall a message by its messageUid.
    Recall { message_uid: u64 },
    /// Create a group with members.
    GroupCreate {
        group_id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        owner: String,
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Add members to a group.
    GroupAdd {
        group_id: String,
        members: Vec<String>,
    },
    /// Remove members from a group.
    GroupDel {
        group_id: String,
        members: Vec<String>,
    },
    /// Dismiss a group.
    GroupDismiss { group_id: String },
    /// Show a group.
    GroupInfo { group_id: String },
    /// Add sensitive words (take effect at once, persisted).
    WordsAdd { words: Vec<String> },
    /// Remove sensitive words.
    WordsDel { words: Vec<String> },
    /// List the sensitive words.
    Words,
    /// Recent sensitive-word hits (optionally of one user).
    Hits {
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Set a user's status: normal, muted (cannot send) or forbidden (cannot log in).
    Status {
        user: String,
        #[arg(value_parser = ["normal", "muted", "forbidden"])]
        status: String,
    },
    /// Give a user their own rate limit (0 messages = back to the default).
    RateLimit {
        user: String,
        messages: u32,
        #[arg(long, default_value_t = 5)]
        per_secs: u64,
    },
}

pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let out = match args.command {
        AdminCommand::GetToken {
            user,
            client_id,
            platform,
        } => {
            let client_id = client_id.unwrap_or_else(|| crate::token::ANY_DEVICE.to_string());
            let r = client.call(
                "/admin/user/get_token",
                &json!({"userId": user, "clientId": client_id, "platform": platform}),
            )?;
            // Just the token, so `TOKEN=$(imgate admin get-token bob)` works.
            println!("{}", r.get("token").and_then(Value::as_str).unwrap_or_default());
            return Ok(());
        }
        AdminCommand::DeviceSecret { command } => {
            println!("{}", super::admin_devices::device_secret(&client, command)?);
            return Ok(());
        }
        AdminCommand::RevokeTokens { user } => {
            println!("{}", super::admin_devices::revoke_tokens(&client, &user)?);
            return Ok(());
        }
        AdminCommand::Sessions { user } => {
            client.call("/admin/user/sessions", &json!({ "userId": user }))?
        }
        AdminCommand::Kick { user, device } => client.call(
            "/admin/user/kick",
            &json!({ "userId": user, "deviceId": device }),
        )?,
        AdminCommand::Send {
            from,
            to,
            group,
            client_msg_id,
            text,
        } => {
            let conv = match (to, group) {
                (Some(to), _) => json!({"type": 0, "target": to, "line": 0}),
                (None, Some(g)) => json!({"type": 1, "target": g, "line": 0}),
                (None, None) => anyhow::bail!("give --to USER or --group GROUP"),
            };
            client.call(
                "/admin/message/send",
                &json!({
                    "sender": from,
                    "conv": conv,
                    "payload": {"type": 1, "searchableContent": text, "persistFlag": 3},
                    "clientMsgId": client_msg_id,
                }),
            )?
        }
        AdminCommand::Recall { message_uid } => {
            client.call("/admin/message/recall", &json!({"operator": "admin", "messageUid": message_uid}))?
        }
        AdminCommand::GroupCreate {
            group_id,
            name,
            owner,
            members,
        } => client.call(
            "/admin/group/create",
            &json!({"operator": owner, "group": {"targetId": group_id, "name": name, "owner": owner}, "members": members}),
        )?,
        AdminCommand::GroupAdd { group_id, members } => client.call(
            "/admin/group/member/add",
            &json!({"operator": "admin", "groupId": group_id, "members": members}),
        )?,
        AdminCommand::GroupDel { group_id, members } => client.call(
            "/admin/group/member/del",
            &json!({"operator": "admin", "groupId": group_id, "members": members}),
        )?,
        AdminCommand::GroupDismiss { group_id } => {
            client.call("/admin/group/dismiss", &json!({"operator": "admin", "groupId": group_id}))?
        }
        AdminCommand::GroupInfo { group_id } => client.call("/admin/group/info", &json!({"groupId": group_id}))?,
        AdminCommand::WordsAdd { words } => client.call("/admin/sensitive/add", &json!({ "words": words }))?,
        AdminCommand::WordsDel { words } => client.call("/admin/sensitive/del", &json!({ "words": words }))?,
        AdminCommand::Words => client.call("/admin/sensitive/query", &json!({}))?,
        AdminCommand::Hits { user, limit } => {
            client.call("/admin/sensitive/hits", &json!({ "userId": user, "limit": limit }))?
        }
        AdminCommand::Status { user, status } => {
            let code = match status.as_str() {
                "muted" => 1,
                "forbidden" => 2,
                _ => 0,
            };
            client.call("/admin/user/status", &json!({ "userId": user, "status": code }))?
        }
        AdminCommand::RateLimit {
            user,
            messages,
            per_secs,
        } => client.call(
            "/admin/user/rate_limit",
            &json!({ "userId": user, "messages": messages, "perSecs": per_secs }),
        )?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
