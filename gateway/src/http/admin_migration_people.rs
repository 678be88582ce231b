//! Migration of groups and users (DESIGN §7, docs/migration.md): what
//! imgate keeps of them, imported and exported through the signed admin
//! API, one answer per item like `/admin/import/messages`.
//!
//! - `/admin/import/groups` `{"groups":[<the /admin/group/create body>]}`:
//!   a group that does not exist is created (owner added to the members);
//!   one that exists gets the members it lacks (and the name, when one is
//!   given), so importing twice changes nothing (`duplicate`). Through
//!   the same `Store::group` / `Store::put_group` as the admin API.
//! - `/admin/import/users` `{"users":[{"userId","status","rateLimit"}]}`:
//!   imgate has no account table; a user is what the policy keeps of them
//!   (status 0 normal / 1 muted / 2 forbidden, an own rate limit
//!   `{"messages","perSecs"}`), stored once per request like
//!   `/admin/user/status`; a forbidden user's sessions are kicked.
//! - `/admin/export/groups` (`{"after","limit"}`, pages by group id) and
//!   `/admin/export/users` (every user with a status or a rate limit):
//!   lines `imgate import` reads back.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use imgate_core::pipeline::UserStatus;
use imgate_core::store::Group;
use imgate_core::{ErrorCode, ImError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin_api::{check_group_id, member_set, GroupInfoReq, MemberRef};
use super::admin_migration::MAX_BATCH;
use super::auth::AdminAuth;
use super::body::JsonBody;
use super::{ok, ApiError};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/import/groups", post(import_groups))
        .route("/admin/import/users", post(import_users))
        .route("/admin/export/groups", post(export_groups))
        .route("/admin/export/users", post(export_users))
}

#[derive(Deserialize)]
struct GroupLine {
    #[serde(default)]
    operator: String,
    group: GroupInfoReq,
    #[serde(default)]
    members: Vec<MemberRef>,
}

#[derive(Deserialize)]
struct GroupsReq {
    groups: Vec<Value>,
}

fn too_many(n: usize) -> Result<(), ApiError> {
    if n > MAX_BATCH {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("at most {MAX_BATCH} items per request"),
        ));
    }
    Ok(())
}

fn refused(key: &str, id: &str, e: ImError) -> Value {
    json!({ key: id, "code": e.code.as_i32(), "msg": e.message })
}

async fn import_groups(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<GroupsReq>,
) -> Result<Json<Value>, ApiError> {
    too_many(req.groups.len())?;
    let mut results = Vec::with_capacity(req.groups.len());
    for raw in req.groups {
        let line: GroupLine = match serde_json::from_value(raw) {
            Ok(l) => l,
            Err(e) => {
                let e = ImError::new(ErrorCode::InvalidData, format!("malformed group: {e}"));
                results.push(refused("groupId", "", e));
                continue;
            }
        };
        let id = line.group.target_id.clone();
        match import_group(&state, line).await {
            Ok((created, changed)) => results.push(json!({
                "groupId": id, "code": 0, "created": created, "duplicate": !changed,
            })),
            Err(e) => results.push(refused("groupId", &id, e.error)),
        }
    }
    Ok(ok(json!({ "results": results })))
}

/// `(created, changed)`.
async fn import_group(state: &AppState, line: GroupLine) -> Result<(bool, bool), ApiError> {
    let id = line.group.target_id;
    check_group_id(&id)?;
    let owner = if line.group.owner.is_empty() {
        line.operator
    } else {
        line.group.owner
    };
    let mut members = member_set(line.members)?;
    if !owner.is_empty() {
        members.insert(owner.clone());
    }
    let Some(mut group) = state.store.group(&id).await? else {
        let group = Group {
            id,
            name: line.group.name,
            owner,
            members,
        };
        state.store.put_group(group).await?;
        return Ok((true, true));
    };
    let before = group.clone();
    group.members.extend(members);
    if !line.group.name.is_empty() {
        group.name = line.group.name;
    }
    if group.owner.is_empty() {
        group.owner = owner;
    }
    if group == before {
        return Ok((false, false));
    }
    state.store.put_group(group).await?;
    Ok((false, true))
}

#[derive(Deserialize)]
struct RateLine {
    messages: u32,
    #[serde(rename = "perSecs")]
    per_secs: u64,
}

#[derive(Deserialize)]
struct UserLine {
    #[serde(rename = "userId")]
    user_id: String,
    #[serde(default)]
    status: Option<i32>,
    #[serde(rename = "rateLimit", default)]
    rate_limit: Option<RateLine>,
}

#[derive(Deserialize)]
struct UsersReq {
    users: Vec<Value>,
}

/// What a user line sets: a status, a rate limit (`(0, _)` clears it).
type UserChange = (Option<UserStatus>, Option<(u32, u64)>);

fn check_user(line: &UserLine) -> Result<UserChange, ImError> {
    if line.user_id.trim().is_empty() || line.user_id.len() > 128 {
        return Err(ImError::invalid_parameter("userId must be 1..128 bytes"));
    }
    let status = match line.status {
        None => None,
        Some(s) => Some(UserStatus::from_i32(s).ok_or_else(|| {
            ImError::invalid_parameter("status is 0 normal, 1 muted or 2 forbidden")
        })?),
    };
    let rate = match &line.rate_limit {
        None => None,
        Some(r) if r.messages > 0 && r.per_secs == 0 => {
            return Err(ImError::invalid_parameter("perSecs must be positive"))
        }
        Some(r) => Some((r.messages, r.per_secs)),
    };
    Ok((status, rate))
}

async fn import_users(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<UsersReq>,
) -> Result<Json<Value>, ApiError> {
    too_many(req.users.len())?;
    let book = &state.policy.book;
    let mut results = Vec::with_capacity(req.users.len());
    let mut forbidden = Vec::new();
    let mut changed = false;
    for raw in req.users {
        let line: UserLine = match serde_json::from_value(raw) {
            Ok(l) => l,
            Err(e) => {
                let e = ImError::new(ErrorCode::InvalidData, format!("malformed user: {e}"));
                results.push(refused("userId", "", e));
                continue;
            }
        };
        let (status, rate) = match check_user(&line) {
            Ok(v) => v,
            Err(e) => {
                results.push(refused("userId", &line.user_id, e));
                continue;
            }
        };
        let user = line.user_id.as_str();
        let mut same = true;
        if let Some(s) = status {
            same &= book.status(user) == s;
            book.set_status(user, s);
            if s == UserStatus::Forbidden {
                forbidden.push(line.user_id.clone());
            }
        }
        if let Some((messages, per)) = rate {
            let wanted = (messages > 0).then_some((messages, per));
            let now = book
                .rate_override(user)
                .map(|r| (r.messages, r.per.as_secs()));
            same &= now == wanted;
            book.set_rate_override(user, wanted);
        }
        changed |= !same;
        results.push(json!({ "userId": line.user_id, "code": 0, "duplicate": same }));
    }
    if changed {
        state.policy.save(state.store.as_ref()).await.map_err(|e| {
            ApiError::new(
                ErrorCode::ServerError,
                format!("changed, but not persisted: {e}"),
            )
        })?;
    }
    for user in forbidden {
        state.sessions.kick_user(
            &user,
            ErrorCode::UserBlocked,
            "user forbidden by the administrator",
        );
    }
    Ok(ok(json!({ "results": results })))
}

#[derive(Deserialize)]
struct ExportGroupsReq {
    #[serde(default)]
    after: String,
    #[serde(default)]
    limit: Option<usize>,
}

async fn export_groups(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<ExportGroupsReq>,
) -> Result<Json<Value>, ApiError> {
    let limit = req.limit.unwrap_or(500).clamp(1, MAX_BATCH);
    let (groups, has_more) = state.store.scan_groups(&req.after, limit).await?;
    let last = groups.last().map_or(req.after.clone(), |g| g.id.clone());
    let lines: Vec<Value> = groups
        .into_iter()
        .map(|g| {
            json!({
                "kind": "group",
                "group": {"targetId": g.id, "name": g.name, "owner": g.owner},
                "members": g.members,
            })
        })
        .collect();
    Ok(ok(
        json!({ "groups": lines, "hasMore": has_more, "last": last }),
    ))
}

async fn export_users(
    State(state): State<AppState>,
    _: AdminAuth,
    _: JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let snapshot = state.policy.book.snapshot();
    let mut users: std::collections::BTreeMap<&str, Value> = Default::default();
    for (user, status) in &snapshot.statuses {
        users.insert(
            user,
            json!({"kind": "user", "userId": user, "status": status.as_i32()}),
        );
    }
    for (user, (messages, per)) in &snapshot.rate_overrides {
        let line = users
            .entry(user)
            .or_insert_with(|| json!({"kind": "user", "userId": user}));
        line["rateLimit"] = json!({"messages": messages, "perSecs": per});
    }
    let lines: Vec<Value> = users.into_values().collect();
    Ok(ok(json!({ "users": lines })))
}
