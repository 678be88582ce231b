//! The private binary protocol listener (DESIGN §5.2): one session task per
//! TCP connection, framed by `imgate_codecs::pb::PbFramer`.

mod conversations;
mod delivered;
mod session;

pub use session::handle_connection;
