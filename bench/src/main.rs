//! imgate-bench: load generators for imgate and the peers it is compared
//! with, kept out of the server binary. Every subcommand prints one JSON
//! report line on stdout; `bench/compare.sh` runs them against imgate,
//! Mosquitto, RabbitMQ's MQTT plugin and prosody and prints one table.
//!
//! Layout:
//! - `http`: `POST /v1/messages` send → durable-ack load (`http_load`).
//! - `mqtt`: generic-topic MQTT load against any broker (`mqtt_load`).
//! - `im`: the durable IM path over MQTT, `im/send` → `im/inbox` (`im_load`).
//! - `idle`: server RSS per idle MQTT or PB connection (`idle`).
//! - `xmpp`: XMPP chat senders → XMPP (imgate or prosody) or MQTT inbox
//!   receivers (`xmpp_load`, over `xmpp_client`).
//! - `pb`: PB senders with a window of SendRequests → MQTT inbox
//!   receivers (`pb_load`).
//! - shared: `admin` (signed admin API, tokens), `logins`, `mqtt_client`
//!   (connect, windowed publisher, PUBACKing receiver), `inbox` (IM
//!   receivers), `im_payload` (the text every IM sender stamps),
//!   `schedule` (flood / paced send times), `stats` (exactly-once
//!   accounting, percentiles, report fields, server CPU and RSS from
//!   /proc), `im_run` (what `im`, `pb` and `xmpp` share: arguments, run
//!   start and stop, sender totals, the report line), `window` (ids in
//!   flight and send counts of a pipelined sender).
#![forbid(unsafe_code)]

mod admin;
mod http_load;
mod idle;
mod im_load;
mod im_payload;
mod im_run;
mod inbox;
mod logins;
mod mqtt_client;
mod mqtt_load;
mod pb_load;
mod schedule;
mod stats;
mod window;
mod xmpp_client;
mod xmpp_load;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "imgate-bench",
    version,
    about = "Load generators for imgate and its peers (one JSON report line per run)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send → durable-ack throughput of a running gateway over HTTP.
    Http(http_load::HttpArgs),
    /// MQTT publish/delivery throughput of any broker (imgate or a peer).
    Mqtt(mqtt_load::MqttArgs),
    /// The durable IM path over MQTT: im/send → im/inbox/<user>, QoS 1.
    Im(im_load::ImArgs),
    /// Server RSS per idle connection (MQTT or PB).
    Idle(idle::IdleArgs),
    /// XMPP chat load (imgate or prosody); XMPP or MQTT receivers.
    Xmpp(xmpp_load::XmppArgs),
    /// The durable IM path from PB senders to MQTT inbox receivers.
    Pb(pb_load::PbArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Http(args) => http_load::run(args),
        Command::Mqtt(args) => mqtt_load::run(args),
        Command::Im(args) => im_load::run(args),
        Command::Idle(args) => idle::run(args),
        Command::Xmpp(args) => xmpp_load::run(args),
        Command::Pb(args) => pb_load::run(args),
    }
}
