//! What every protocol's sessions share: token login, the multi-endpoint
//! kick rule (also across nodes: `cluster`), connection admission (per-IP
//! rate, global cap), the accept loop, and the window of a session's
//! sends in flight with the append order that keeps them in send order,
//! connection buffers that an idle connection does not hold, and the
//! PROXY protocol header of listeners behind a load balancer.

pub mod append_order;
pub mod cluster;
pub mod conn_limit;
pub mod ctx;
pub mod driver;
pub mod enforce;
pub mod idle_buffers;
pub mod listener;
pub mod login;
pub mod proxy_header;
pub mod registry;
pub mod send_window;

/// Writes bounded by the write deadline are the transport's
/// (`transport::write_deadline`); sessions use them from here too.
pub use crate::transport::write_deadline;
pub use append_order::OrderedAppends;
pub use conn_limit::ConnLimiter;
pub use ctx::SessionCtx;
pub use listener::run_listener;
pub use login::login;
pub use registry::{Kick, SessionHandle, SessionRegistry};
pub use send_window::SendWindow;
