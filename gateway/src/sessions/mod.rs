//! What every protocol's sessions share: token login, the multi-endpoint
//! kick rule, and the accept loop with a connection limit.

pub mod listener;
pub mod login;
pub mod registry;

pub use listener::run_listener;
pub use login::login;
pub use registry::{Kick, SessionRegistry};
