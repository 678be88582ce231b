//! `imgate admin ...`: the admin API for humans.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::admin_client::AdminClient;

#[derive(Args, Debug)]
pub struct AdminArgs {
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
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Issue a login token for a user's device; prints the token.
    GetToken {
        user: String,
        #[arg(long, default_value = "cli")]
        client_id: String,
        /// Platform number (1 iOS, 2 Android, 3 Windows, 4 macOS, 5 Web, 7 Linux, 8 iPad).
        #[arg(long, default_value_t = 0)]
        platform: i32,
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
}

pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.admin_url, args.secret, &args.data_dir)?;
    let out = match args.command {
        AdminCommand::GetToken {
            user,
            client_id,
            platform,
        } => {
            let r = client.call(
                "/admin/user/get_token",
                &json!({"userId": user, "clientId": client_id, "platform": platform}),
            )?;
            // Just the token, so `TOKEN=$(imgate admin get-token bob)` works.
            println!("{}", r.get("token").and_then(Value::as_str).unwrap_or_default());
            return Ok(());
        }
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
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
