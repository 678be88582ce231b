//! Command-line clients of a running gateway: `imgate admin ...` (signed
//! admin API calls for humans), `imgate import` / `imgate export`
//! (migration), `imgate load` (a send-throughput load generator) and
//! `imgate load-mqtt` (an MQTT broker load generator).

pub mod admin;
pub mod admin_client;
pub mod load;
pub mod migrate;
pub mod mqtt_load;
