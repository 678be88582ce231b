//! Command-line clients of a running gateway: `imgate admin ...` (signed
//! admin API calls for humans), `imgate import` / `imgate export`
//! (migration). The load generators live in the `imgate-bench` crate
//! (`bench/`), not in the server binary.

pub mod admin;
pub mod admin_client;
pub mod admin_devices;
pub mod admin_tls;
pub mod export;
pub mod import;
