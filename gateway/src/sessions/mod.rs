//! What every protocol's sessions share: token login, the multi-endpoint
//! kick rule (also across nodes: `cluster`), connection admission (per-IP
//! rate, global cap) and the accept loop.

pub mod cluster;
pub mod conn_limit;
pub mod listener;
pub mod login;
pub mod registry;

pub use conn_limit::{AdmittingListener, ConnLimiter};
pub use listener::run_listener;
pub use login::login;
pub use registry::{Kick, SessionHandle, SessionRegistry};
