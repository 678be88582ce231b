//! The IM model of DESIGN §2 (contract) and its JSON shapes (DESIGN §5.5).

mod conversation;
pub mod json;
mod message;
mod payload;
mod platform;

pub use conversation::{Conversation, ConversationType};
pub use message::Message;
pub use payload::{content_type, persist_flag, MessagePayload};
pub use platform::{Platform, PlatformClass};
