//! The private binary protocol (PB, DESIGN §5.2): a 16-byte big-endian
//! header followed by a protobuf body of `codecs/proto/imgate.proto`.
//!
//! Layers, each in its own file, bytes at the top and the core model at the
//! bottom:
//! - [`header`]: the 16-byte header and the protocol constants.
//! - [`framer`]: [`PbFramer`], a tokio-util `Decoder`/`Encoder` between
//!   bytes and [`PbFrame`]s (in [`frame`]); size limit checked at the header.
//! - [`commands`]: the command numbers of the contract table.
//! - [`proto`]: the body messages as prost structs.
//! - [`request`] / [`server_message`]: a frame's body as a typed
//!   [`PbRequest`] (client → server) or [`PbServerMessage`]
//!   (server → client), by command.
//! - [`normalizer`]: [`PbNormalizer`], proto bodies ↔ core model.
//! - [`error`]: [`PbCodecError`], with `can_continue` and the §4 code.
//!
//! A session reads: `Framed<_, PbFramer>` → `PbFrame` →
//! `PbRequest::decode` → `PbNormalizer` → pipeline; and writes the other
//! way with `PbFrame::response` / `PbFrame::push`:
//!
//! ```
//! use bytes::BytesMut;
//! use imgate_codecs::pb::{commands, proto, PbFrame, PbFramer, PbNormalizer, PbRequest};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut framer = PbFramer::new(1 << 20);
//! let mut wire = BytesMut::new();
//! let send = proto::SendRequest {
//!     client_msg_id: "c1".into(),
//!     conversation: Some(proto::Conversation { r#type: 0, target: "bob".into(), line: 0 }),
//!     payload: Some(proto::MessagePayload { r#type: 1, searchable_content: "hi".into(), ..Default::default() }),
//!     to_users: vec![],
//! };
//! framer.encode(PbRequest::Send(send).to_frame(7), &mut wire)?; // what a client sends
//!
//! let frame = framer.decode(&mut wire)?.expect("one whole frame");
//! let PbRequest::Send(req) = PbRequest::decode(&frame)? else { unreachable!() };
//! let draft = PbNormalizer::send_request_to_draft(req, "alice");
//! assert_eq!(draft.payload.searchable_content, "hi");
//!
//! let ack = proto::SendResponse { code: 0, message_id: 1, server_ts: 2, client_msg_id: draft.client_msg_id };
//! framer.encode(PbFrame::response(commands::SEND_RESPONSE, frame.seq, &ack), &mut wire)?;
//! # Ok::<(), imgate_codecs::pb::PbCodecError>(())
//! ```

pub mod commands;
pub mod error;
pub mod frame;
pub mod framer;
pub mod header;
pub mod normalizer;
pub mod proto;
pub mod request;
pub mod server_message;

pub use error::PbCodecError;
pub use frame::PbFrame;
pub use framer::PbFramer;
pub use header::{PbHeader, DEFAULT_MAX_FRAME, HEADER_LEN, PB_VERSION};
pub use normalizer::PbNormalizer;
pub use request::PbRequest;
pub use server_message::PbServerMessage;
