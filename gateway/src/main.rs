//! imgate: an instant-messaging protocol gateway.
//!
//! Layout of this crate (the binary):
//! - `server`: `imgate serve`: listeners, startup lines, graceful shutdown.
//! - `config`: defaults, `imgate.toml`, `IMGATE_*` overrides.
//! - `sessions`: login, kick rule and accept loop shared by TCP protocols.
//! - `group_events`: admin group membership changes told to every node.
//! - `pb`: the private binary protocol sessions.
//! - `mqtt`: MQTT 3.1.1/5 sessions, the IM topic namespace and the broker.
//! - `xmpp`: XMPP-lite sessions (SASL, binding, receipts, SM, MAM).
//! - `tls`: rustls on the client listeners when a certificate is configured.
//! - `policy`: word list, user statuses and rate overrides (persisted), hit log.
//! - `http`: the client API (`/v1`, bearer tokens, SSE) and the signed
//!   admin API (`/admin`, `/metrics`).
//! - `state`: what listeners and sessions share (store, pipeline, ...).
//! - `token`, `admin_sign`, `secrets`: credentials.
//! - `metrics`: Prometheus text metrics.
//! - `cli`: `imgate admin ...`, `imgate import` and `imgate export` (the
//!   load generators are the separate `imgate-bench` crate, `bench/`).
#![forbid(unsafe_code)]

mod admin_nonces;
mod admin_sign;
mod cli;
mod config;
/// The listener table lives with the configuration (`config::listeners`).
use config::listeners;
mod conversations;
mod device_secrets;
mod group_events;
mod http;
mod layering;
mod metrics;
mod mqtt;
mod pb;
mod policy;
mod pruning;
mod scram_keys;
mod secrets;
mod server;
mod sessions;
mod state;
mod token;
mod transport;
mod webhooks;
mod xmpp;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "imgate",
    version,
    about = "An instant-messaging protocol gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the gateway (embedded store unless configured otherwise).
    Serve {
        /// Path to imgate.toml (every key also has an IMGATE_* override).
        #[arg(long, short, env = "IMGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a configuration (the file and the IMGATE_* environment) without
    /// starting: errors and unknown variables are printed; exit code 1 if
    /// it would not start.
    CheckConfig {
        /// Path to imgate.toml.
        #[arg(long, short, env = "IMGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Call the admin API of a running gateway.
    Admin(cli::admin::AdminArgs),
    /// Import messages, groups and users from another system (JSONL, one per line; docs/migration.md) into a running gateway.
    Import(cli::import::ImportArgs),
    /// Export the users, groups and every stored message of a running gateway as JSONL.
    Export(cli::export::ExportArgs),
}

/// With `--features mimalloc`: per-thread heaps without glibc's arena
/// locks on the hot path (less CPU per message, more RSS per idle
/// connection; see gateway/Cargo.toml).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = config::Config::load(config.as_deref())?;
            init_logging(&config.log, config.log_format == "json");
            let env: Vec<(String, String)> = std::env::vars().collect();
            for (var, closest) in config::Config::unknown_env_vars(&env) {
                match closest {
                    Some(c) => tracing::warn!(%var, "unknown setting, ignored; did you mean {c}?"),
                    None => tracing::warn!(%var, "unknown setting, ignored"),
                }
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(server::serve(config))
        }
        Command::CheckConfig { config } => check_config(config.as_deref()),
        Command::Admin(args) => cli::admin::run(args),
        Command::Import(args) => cli::import::run_import(args),
        Command::Export(args) => cli::export::run_export(args),
    }
}

/// `imgate check-config`: what `serve` would refuse, and what it would
/// ignore.
fn check_config(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let unknown = config::Config::unknown_env_vars(&env);
    for (var, closest) in &unknown {
        match closest {
            Some(c) => eprintln!("warning: {var} is not a setting (ignored); did you mean {c}?"),
            None => eprintln!("warning: {var} is not a setting (ignored)"),
        }
    }
    match config::Config::load_from(path, &env) {
        Ok(_) => {
            println!(
                "configuration ok{}",
                path.map(|p| format!(": {}", p.display()))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn init_logging(default: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        fmt.json().init();
    } else {
        // Colours only for a person at a terminal, not in files/journald.
        fmt.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
