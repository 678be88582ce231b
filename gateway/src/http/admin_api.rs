//! The signed admin API (DESIGN §5.5): tokens, server-side sends, recall,
//! groups; plus unsigned `/metrics` (Prometheus), `/healthz` and
//! `/readyz` (see [`super::health`]).

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use imgate_core::model::{Conversation, MessagePayload};
use imgate_core::pipeline::{self, Draft, SendCommand};
use imgate_core::store::Group;
use imgate_core::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{admin_principal, AdminAuth};
use super::body::JsonBody;
use super::{ok, ApiError};
use crate::state::AppState;
use crate::token;

pub fn admin_router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let deadline = std::time::Duration::from_secs(state.config.http_body_timeout_secs.max(1));
    Router::new()
        .route("/admin/user/get_token", post(get_token))
        .route("/admin/message/send", post(send))
        .route("/admin/message/recall", post(recall))
        .route("/admin/group/create", post(group_create))
        .route("/admin/group/member/add", post(group_member_add))
        .route("/admin/group/member/del", post(group_member_del))
        .route("/admin/group/dismiss", post(group_dismiss))
        .route("/admin/group/info", post(group_info))
        .merge(super::admin_policy::routes())
        .merge(super::admin_acl::routes())
        .merge(super::admin_devices::routes())
        .merge(super::admin_sessions::routes())
        .merge(super::admin_migration::routes())
        .merge(super::admin_migration_people::routes())
        .route("/metrics", get(metrics))
        .merge(super::health::routes())
        .fallback(super::query::not_found)
        .method_not_allowed_fallback(super::query::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |req, next| {
            super::body::read_body_first(req, next, limit, deadline)
        }))
        .with_state(state)
}

fn require(value: &str, what: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("{what} is required"),
        ));
    }
    Ok(())
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut text = state.metrics.render();
        if let Some(hook) = &state.review {
            crate::metrics::Metrics::render_review(&mut text, hook);
        }
        if let Some(hooks) = &state.webhooks {
            hooks.render_metrics(&mut text);
        }
        text
    })
}

#[derive(Deserialize)]
struct GetTokenReq {
    #[serde(rename = "userId", default)]
    user_id: String,
    #[serde(rename = "clientId", default)]
    client_id: String,
    #[serde(default)]
    platform: i32,
}

async fn get_token(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<GetTokenReq>,
) -> Result<Json<Value>, ApiError> {
    require(&req.user_id, "userId")?;
    // No client id (or `*`): a token for any device of the user. No
    // platform (0): in no kick class (see `Platform::class`).
    let client_id = match req.client_id.trim() {
        "" => token::ANY_DEVICE,
        _ => req.client_id.as_str(),
    };
    let tok = state
        .tokens
        .issue(&req.user_id, client_id, req.platform, imgate_core::now_ms());
    Ok(ok(json!({ "userId": req.user_id, "token": tok })))
}

#[derive(Deserialize)]
struct AdminSendReq {
    #[serde(default)]
    sender: String,
    conv: Conversation,
    #[serde(default)]
    payload: MessagePayload,
    #[serde(rename = "toUsers", default)]
    to_users: Vec<String>,
    #[serde(rename = "clientMsgId", default)]
    client_msg_id: String,
}

async fn send(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<AdminSendReq>,
) -> Result<Json<Value>, ApiError> {
    require(&req.sender, "sender")?;
    let cmd = SendCommand {
        principal: admin_principal(),
        draft: Draft {
            sender: req.sender,
            conversation: req.conv,
            payload: req.payload,
            client_msg_id: req.client_msg_id,
            to_users: req.to_users,
        },
    };
    let ack = state.send(cmd).await?;
    Ok(ok(json!({
        "messageUid": ack.message_id,
        "messageUidStr": ack.message_id.to_string(),
        "timestamp": ack.server_ts,
    })))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Uid {
    Num(u64),
    Str(String),
}

#[derive(Deserialize)]
struct RecallReq {
    #[serde(default)]
    operator: String,
    #[serde(rename = "messageUid")]
    message_uid: Uid,
}

async fn recall(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<RecallReq>,
) -> Result<Json<Value>, ApiError> {
    let id = match req.message_uid {
        Uid::Num(n) => n,
        Uid::Str(s) => s.trim().parse().map_err(|_| {
            ApiError::new(ErrorCode::InvalidParameter, "messageUid must be a number")
        })?,
    };
    let operator = if req.operator.is_empty() {
        "admin"
    } else {
        req.operator.as_str()
    };
    let window = Duration::from_secs(state.config.recall_window_secs);
    let outcome = pipeline::recall(state.store.as_ref(), id, operator, true, window).await?;
    Ok(ok(json!({
        "messageUid": outcome.recalled.message_id,
        "noticeUid": outcome.notice.message_id,
    })))
}

#[derive(Deserialize)]
pub(super) struct GroupInfoReq {
    #[serde(rename = "targetId", default)]
    pub(super) target_id: String,
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) owner: String,
}

#[derive(Deserialize)]
struct GroupCreateReq {
    #[serde(default)]
    operator: String,
    group: GroupInfoReq,
    #[serde(default)]
    members: Vec<MemberRef>,
}

/// A member as a plain id or as `{"memberId": ...}` (the seeds' server).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum MemberRef {
    Id(String),
    Obj {
        #[serde(rename = "memberId")]
        member_id: String,
    },
}

impl MemberRef {
    fn id(self) -> String {
        match self {
            MemberRef::Id(s) => s,
            MemberRef::Obj { member_id } => member_id,
        }
    }
}

/// A group id as the admin API accepts it.
pub(super) fn check_group_id(id: &str) -> Result<(), ApiError> {
    if id.trim().is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "group id must be 1..128 bytes",
        ));
    }
    Ok(())
}

pub(super) fn member_set(members: Vec<MemberRef>) -> Result<BTreeSet<String>, ApiError> {
    let set: BTreeSet<String> = members.into_iter().map(MemberRef::id).collect();
    if set.iter().any(|m| m.trim().is_empty() || m.len() > 128) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "member ids must be 1..128 bytes",
        ));
    }
    Ok(set)
}

async fn group_create(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<GroupCreateReq>,
) -> Result<Json<Value>, ApiError> {
    let id = if req.group.target_id.trim().is_empty() {
        format!(
            "g{}",
            crate::secrets::random_hex(8)
                .map_err(|e| ApiError::new(ErrorCode::ServerError, e.to_string()))?
        )
    } else {
        req.group.target_id.clone()
    };
    check_group_id(&id)?;
    if state.store.group(&id).await?.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("group {id} already exists"),
        ));
    }
    let owner = if !req.group.owner.is_empty() {
        req.group.owner
    } else {
        req.operator
    };
    let mut members = member_set(req.members)?;
    if !owner.is_empty() {
        members.insert(owner.clone());
    }
    let group = Group {
        id: id.clone(),
        name: req.group.name,
        owner,
        members,
    };
    state.store.put_group(group).await?;
    Ok(ok(json!({ "groupId": id })))
}

#[derive(Deserialize)]
struct GroupMembersReq {
    #[serde(rename = "groupId")]
    group_id: String,
    #[serde(default)]
    members: Vec<MemberRef>,
}

async fn load_group(state: &AppState, id: &str) -> Result<Group, ApiError> {
    state
        .store
        .group(id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotExist, format!("group {id} does not exist")))
}

async fn group_member_add(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<GroupMembersReq>,
) -> Result<Json<Value>, ApiError> {
    let mut group = load_group(&state, &req.group_id).await?;
    let added: Vec<String> = member_set(req.members)?
        .into_iter()
        .filter(|m| group.members.insert(m.clone()))
        .collect();
    let count = group.members.len();
    let change = members_changed(&group, added, Vec::new());
    state.store.put_group(group).await?;
    crate::group_events::announce(state.store.as_ref(), change).await;
    Ok(ok(json!({ "groupId": req.group_id, "memberCount": count })))
}

async fn group_member_del(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<GroupMembersReq>,
) -> Result<Json<Value>, ApiError> {
    let mut group = load_group(&state, &req.group_id).await?;
    let removed: Vec<String> = member_set(req.members)?
        .into_iter()
        .filter(|m| group.members.remove(m))
        .collect();
    let count = group.members.len();
    let change = members_changed(&group, Vec::new(), removed);
    state.store.put_group(group).await?;
    crate::group_events::announce(state.store.as_ref(), change).await;
    Ok(ok(json!({ "groupId": req.group_id, "memberCount": count })))
}

fn members_changed(
    group: &Group,
    added: Vec<String>,
    removed: Vec<String>,
) -> crate::group_events::GroupChange {
    crate::group_events::GroupChange {
        group: group.id.clone(),
        owner: group.owner.clone(),
        members: group.members.iter().cloned().collect(),
        added,
        removed,
    }
}

#[derive(Deserialize)]
struct GroupIdReq {
    #[serde(rename = "groupId")]
    group_id: String,
}

async fn group_dismiss(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<GroupIdReq>,
) -> Result<Json<Value>, ApiError> {
    if !state.store.delete_group(&req.group_id).await? {
        return Err(ApiError::new(
            ErrorCode::NotExist,
            format!("group {} does not exist", req.group_id),
        ));
    }
    Ok(ok(json!({ "groupId": req.group_id })))
}

async fn group_info(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(req): JsonBody<GroupIdReq>,
) -> Result<Json<Value>, ApiError> {
    let g = load_group(&state, &req.group_id).await?;
    Ok(ok(json!({
        "groupId": g.id, "name": g.name, "owner": g.owner,
        "members": g.members.into_iter().collect::<Vec<_>>(),
    })))
}
