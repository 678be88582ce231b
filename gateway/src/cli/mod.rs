//! Command-line clients of a running gateway: `imgate admin ...` (signed
//! admin API calls for humans) and `imgate load` (a send-throughput load
//! generator).

pub mod admin;
pub mod admin_client;
pub mod load;
