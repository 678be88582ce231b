//! The PB bodies of `codecs/proto/imgate.proto` (DESIGN §5.2) as prost
//! structs.
//!
//! Written by hand, in the shape `prost-build` would generate, because the
//! build machines have no `protoc` and a build script that needs one would
//! make every build depend on it. The `.proto` file stays the source of
//! truth for clients in other languages; `tests/pb_proto_drift.rs` parses it
//! and fails when a message, field name, number, type or `repeated` label
//! here disagrees with it.
//!
//! Proto3 has no presence for scalars, so an unset string or number is its
//! default; a message-typed field is an `Option` (absent vs. present).

/// Where a message goes (`type`: 0 private, 1 group, 2 chatroom, 3 channel,
/// 4 things).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Conversation {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub target: String,
    #[prost(int32, tag = "3")]
    pub line: i32,
}

/// One message's content. Field numbers follow the seeds' IM server.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MessagePayload {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub searchable_content: String,
    #[prost(string, tag = "3")]
    pub push_content: String,
    #[prost(string, tag = "4")]
    pub content: String,
    #[prost(bytes = "vec", tag = "5")]
    pub data: Vec<u8>,
    #[prost(int32, tag = "6")]
    pub media_type: i32,
    #[prost(string, tag = "7")]
    pub remote_media_url: String,
    #[prost(int32, tag = "8")]
    pub persist_flag: i32,
    #[prost(int32, tag = "9")]
    pub expire_duration: i32,
    #[prost(int32, tag = "10")]
    pub mentioned_type: i32,
    #[prost(string, repeated, tag = "11")]
    pub mentioned_target: Vec<String>,
    #[prost(string, tag = "12")]
    pub extra: String,
    #[prost(string, tag = "13")]
    pub push_data: String,
}

/// A stored, id-stamped message; `server_ts` in ms since the Unix epoch.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Message {
    #[prost(uint64, tag = "1")]
    pub message_id: u64,
    #[prost(string, tag = "2")]
    pub sender: String,
    #[prost(message, optional, tag = "3")]
    pub conversation: Option<Conversation>,
    #[prost(message, optional, tag = "4")]
    pub payload: Option<MessagePayload>,
    #[prost(int64, tag = "5")]
    pub server_ts: i64,
    #[prost(string, tag = "6")]
    pub client_msg_id: String,
    #[prost(string, repeated, tag = "7")]
    pub to_users: Vec<String>,
}

/// `0x0101`, client → server, the first frame of a connection.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LoginRequest {
    #[prost(string, tag = "1")]
    pub user_id: String,
    #[prost(string, tag = "2")]
    pub token: String,
    #[prost(string, tag = "3")]
    pub client_id: String,
    #[prost(int32, tag = "4")]
    pub platform: i32,
}

/// `0x0102`, server → client.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LoginResponse {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(int64, tag = "2")]
    pub server_time: i64,
    #[prost(uint64, tag = "3")]
    pub last_message_id: u64,
}

/// `0x0301`, client → server.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SendRequest {
    #[prost(string, tag = "1")]
    pub client_msg_id: String,
    #[prost(message, optional, tag = "2")]
    pub conversation: Option<Conversation>,
    #[prost(message, optional, tag = "3")]
    pub payload: Option<MessagePayload>,
    #[prost(string, repeated, tag = "4")]
    pub to_users: Vec<String>,
}

/// `0x0302`, server → client; echoes the request's seq.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SendResponse {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(uint64, tag = "2")]
    pub message_id: u64,
    #[prost(int64, tag = "3")]
    pub server_ts: i64,
    #[prost(string, tag = "4")]
    pub client_msg_id: String,
}

/// `0x0303`, server → client push (seq 0).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Deliver {
    #[prost(message, optional, tag = "1")]
    pub message: Option<Message>,
}

/// `0x0304`, client → server: the device has the message.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct DeliverAck {
    #[prost(uint64, tag = "1")]
    pub message_id: u64,
}

/// `0x0305`, client → server: everything after message id `since`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct SyncRequest {
    #[prost(uint64, tag = "1")]
    pub since: u64,
    #[prost(int32, tag = "2")]
    pub limit: i32,
}

/// `0x0306`, server → client: one page, ascending by message id.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SyncResponse {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(message, repeated, tag = "2")]
    pub messages: Vec<Message>,
    #[prost(bool, tag = "3")]
    pub has_more: bool,
}

/// `0x0307`, client → server.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct RecallRequest {
    #[prost(uint64, tag = "1")]
    pub message_id: u64,
}

/// `0x0308`, server → client.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct RecallResponse {
    #[prost(int32, tag = "1")]
    pub code: i32,
}

/// `0x0309`, client → server: the caller's conversations.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ConversationsRequest {
    #[prost(uint64, tag = "1")]
    pub before: u64,
    #[prost(int32, tag = "2")]
    pub limit: i32,
}

/// One conversation of a [`ConversationsResponse`].
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ConversationInfo {
    #[prost(message, optional, tag = "1")]
    pub conversation: Option<Conversation>,
    #[prost(message, optional, tag = "2")]
    pub last_message: Option<Message>,
    #[prost(uint64, tag = "3")]
    pub last_message_id: u64,
    #[prost(uint64, tag = "4")]
    pub read_upto: u64,
    #[prost(uint64, tag = "5")]
    pub unread: u64,
}

/// `0x030A`, server → client.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ConversationsResponse {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(message, repeated, tag = "2")]
    pub conversations: Vec<ConversationInfo>,
    #[prost(bool, tag = "3")]
    pub has_more: bool,
}

/// `0x030B`, client → server: mark a conversation read up to an id.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MarkReadRequest {
    #[prost(message, optional, tag = "1")]
    pub conversation: Option<Conversation>,
    #[prost(uint64, tag = "2")]
    pub message_id: u64,
}

/// `0x030C`, server → client.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct MarkReadResponse {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(uint64, tag = "2")]
    pub read_upto: u64,
    #[prost(uint64, tag = "3")]
    pub unread: u64,
}

/// `0x0701`, both directions: an empty body, echoed with the same seq.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Heartbeat {}

/// `0x0103`, server → client; the server closes the connection after it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Kick {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub reason: String,
}

/// `0x0702`, server → client: a DESIGN §4 code and a text for humans.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Error {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}
