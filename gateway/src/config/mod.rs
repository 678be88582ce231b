//! Settings: defaults, `imgate.toml`, then `IMGATE_<KEY>` environment
//! overrides for every key (DESIGN §5, §8).
//!
//! Keys are flat so that the environment name of each is mechanical:
//! `http_addr` ↔ `IMGATE_HTTP_ADDR`, `rate_limit_messages` ↔
//! `IMGATE_RATE_LIMIT_MESSAGES`. The override list is derived from the
//! defaults, so a new key gets its override without further code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use imgate_core::pipeline::{
    Limits, PipelineConfig, RateLimitConfig, ReviewConfig, ReviewMode, WordStrategies, WordStrategy,
};
use serde::{Deserialize, Serialize};

pub mod listeners;
pub mod webhook_events;

/// Bounds of the device-secret snapshot (`crate::device_secrets`).
#[derive(Debug, Clone, Copy)]
pub struct SecretLimits {
    pub per_user: usize,
    pub total: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Private binary protocol (PB) listener.
    pub pb_addr: String,
    /// MQTT 3.1.1 / 5 listener.
    pub mqtt_addr: String,
    /// XMPP client-to-server listener.
    pub xmpp_addr: String,
    /// Client HTTP API (`/v1/...`).
    pub http_addr: String,
    /// Signed admin API and `/metrics`.
    pub admin_addr: String,
    /// The WebSocket listener: `/mqtt`, `/xmpp-websocket` (RFC 7395) and
    /// `/pb` (DESIGN §5.6).
    pub ws_addr: String,
    /// With a certificate (`tls_cert`), TLS listeners next to the plain
    /// ones: PB, MQTT, XMPP direct TLS (XEP-0368), HTTPS and WebSocket
    /// over TLS. Without one they do not open.
    pub pbs_addr: String,
    pub mqtts_addr: String,
    pub xmpps_addr: String,
    pub https_addr: String,
    pub wss_addr: String,
    /// Embedded store, `mqtt.redb`, the generated admin secret.
    pub data_dir: PathBuf,
    /// Empty: read `data_dir/admin-secret`, or generate and print one.
    pub admin_secret: String,
    /// `embedded` or an `amqp://` URL.
    pub store: String,
    /// This node's number (1-1022), unique among nodes sharing a store.
    pub node_id: u16,
    /// The XMPP domain users log in to (`user@domain`).
    pub xmpp_domain: String,
    /// Lifetime of tokens issued by `/admin/user/get_token`.
    pub token_ttl_secs: u64,
    /// Device secrets one user may hold, and in total (they are one
    /// cluster-wide record of the store: see `device_secrets`).
    pub device_secrets_per_user: usize,
    pub device_secrets_max_total: usize,
    /// Largest HTTP request body (413 above it).
    pub max_body_bytes: usize,
    /// Largest message payload the pipeline accepts.
    pub max_payload_bytes: usize,
    /// A new login on the same platform class does not kick the old one.
    pub multi_endpoint: bool,
    /// Messages one user may send per `rate_limit_per_secs` (the
    /// pipeline's rate limit; admin overrides per user).
    pub rate_limit_messages: u32,
    pub rate_limit_per_secs: u64,
    /// How long a `clientMsgId` is remembered to answer a resend from
    /// dedupe.
    pub dedupe_window_secs: u64,
    /// How long after sending a user may recall their own message.
    pub recall_window_secs: u64,
    /// Days of history kept (sync, history, MAM, conversations); older
    /// messages are pruned from the store's index. 0 = keep forever. On
    /// RabbitMQ the log stream's own retention is `log_max_age`.
    pub retention_days: u64,
    /// Seconds between pruning passes (expired messages, retention).
    pub prune_interval_secs: u64,
    /// Operations per group commit of the embedded store (1 = an fsync per
    /// message, for comparison).
    pub embedded_max_batch: usize,
    /// Page cache of the embedded store's redb file, in MiB: its memory
    /// does not grow with stored history beyond it.
    pub store_cache_mb: usize,
    /// Resend keys the embedded store remembers (about 20 bytes each); the
    /// dedupe window is shortened for the oldest beyond it.
    pub dedupe_capacity: usize,
    /// Unacked deliveries tracked exactly per connected device; beyond it
    /// the device's cursor stays below the oldest (redelivered after a
    /// reconnect, never lost).
    pub device_window: usize,
    /// Largest PB frame (checked from the header).
    pub pb_max_frame: usize,
    /// Largest MQTT packet (checked from the fixed header).
    pub mqtt_max_packet: usize,
    /// Messages queued per MQTT session (online or offline) before the
    /// overflow policy applies (see `gateway/src/mqtt/broker`).
    pub mqtt_max_queued: usize,
    /// Retained messages one user may own (the user who set each one
    /// last), and their bytes (topic, payload and properties); over
    /// either, a retained PUBLISH is refused (MQTT 5 0x97; 3.1.1 QoS ≥ 1
    /// is closed; QoS 0 is delivered, not retained). 0 = no limit.
    pub mqtt_retained_max_per_user: u64,
    pub mqtt_retained_max_bytes_per_user: u64,
    /// The same for the whole retained table.
    pub mqtt_retained_max_total: u64,
    pub mqtt_retained_max_bytes_total: u64,
    /// Subscriptions one MQTT session may hold (the IM inbox and ack
    /// topics aside); a SUBSCRIBE beyond it is refused filter by filter
    /// (0x97 / 3.1.1 0x80). 0 = no limit.
    pub mqtt_max_subscriptions_per_session: usize,
    /// Topic ACL of generic MQTT topics, a mosquitto `acl_file` (empty:
    /// none, every generic topic open; a WARN says so at startup). A bad
    /// file stops the start. Rules set through `PUT /admin/mqtt/acl`
    /// replace it (see `gateway/src/mqtt/acl.rs`).
    pub mqtt_acl_file: String,
    /// Largest XMPP stanza (and stream header) before SASL success; over
    /// it the stream ends with `policy-violation`. After authentication
    /// the full limit (256 KiB) applies.
    pub xmpp_preauth_max_stanza: usize,
    /// Deliveries an XMPP client with stream management (XEP-0198) may
    /// leave unacked; at it, deliveries pause (the server has asked with
    /// `<r/>`) until an `<a h>`, and a client that does not ack within
    /// `write_timeout_secs` is closed with `policy-violation`. What it did
    /// not ack stays pending in the store and comes again at its next login.
    pub xmpp_sm_max_unacked: usize,
    /// Offer SASL SCRAM-SHA-256 and SCRAM-SHA-1 on XMPP (device secrets
    /// as the password; tokens need PLAIN): off by default, since clients
    /// that prefer SCRAM may not fall back to PLAIN for a token.
    pub xmpp_scram: bool,
    /// Let an XMPP user make a group by joining a room that does not
    /// exist (XEP-0045 §10.1): the user becomes its owner and only
    /// member. Off by default: groups are made through the admin API.
    pub xmpp_room_creation: bool,
    /// Expected client heartbeat interval; a connection silent for three
    /// intervals is closed.
    pub heartbeat_secs: u64,
    /// Sends one PB, MQTT or XMPP session may have waiting for the store
    /// at once; with the window full the session stops reading its socket.
    pub send_window: usize,
    /// Time a new connection has to log in.
    pub login_timeout_secs: u64,
    /// Time an HTTP client has to send a request's headers (also how long
    /// an idle keep-alive connection is kept); then the connection closes.
    pub http_header_timeout_secs: u64,
    /// Time an HTTP client has to send a request's body (408, code 249).
    pub http_body_timeout_secs: u64,
    /// Time one write to a PB, MQTT or XMPP client may wait for the peer
    /// to read; then the connection is closed.
    pub write_timeout_secs: u64,
    /// How far an admin request's `timestamp` may be from now (the seeds
    /// use 2 hours; lower it for a stricter window).
    pub admin_sign_window_secs: u64,
    /// Admin signatures remembered to refuse replays; when full, the
    /// oldest is forgotten and older timestamps are refused.
    pub admin_nonce_capacity: usize,
    /// Open client connections per listener (each listener has its own:
    /// a flood on one never refuses the others).
    pub max_connections: usize,
    /// Connections one IP may hold open at once, over all listeners
    /// (0 = no cap). Behind a load balancer every client has its IP: raise
    /// this there.
    pub max_connections_per_ip: u32,
    /// Stored messages per user per UTC day (0 = unlimited), counted by
    /// the store: a restart keeps the count, and nodes share it.
    pub daily_quota: u32,
    /// New connections per second from one IP, on every listener.
    pub conn_rate_per_ip: u32,
    /// Sensitive words: `reject` (242), `drop` or `mask`.
    pub sensitive_strategy: String,
    /// Per conversation type, e.g. `"1=mask,0=reject"`.
    pub sensitive_strategy_by_type: String,
    /// Review hook URL (http://); empty = no hook.
    pub review_url: String,
    /// `forward` (async, after store) or `review` (sync verdict before store).
    pub review_mode: String,
    /// Time the review hook has for a verdict.
    pub review_timeout_ms: u64,
    /// On review timeout/error: pass (true) or refuse (false).
    pub review_fail_open: bool,
    /// Content types reviewed/forwarded, e.g. `"1,3"` (empty = all).
    pub review_content_types: String,
    /// Forward queue length; when full, forwards are dropped and counted.
    pub review_queue: usize,
    /// Key of the HMAC-SHA256 signature on every review-hook request
    /// (`X-Imgate-Timestamp`, `X-Imgate-Signature`; docs/security.md).
    /// Empty = requests go unsigned (logged at startup).
    pub hook_secret: String,
    /// Event webhook URL (http://): connected, disconnected, delivered
    /// and read events are POSTed to it as JSON, signed with
    /// `hook_secret` (docs/operations.md). Empty = no webhook.
    pub webhook_url: String,
    /// The events sent, from `connected,disconnected,delivered,read`.
    pub webhook_events: String,
    /// Events waiting to be sent at most; when full, new events are
    /// dropped and counted (`imgate_webhook_events_total`).
    pub webhook_queue: usize,
    /// Attempts after a failed one (non-2xx, error, timeout) before an
    /// event is dropped.
    pub webhook_retries: u32,
    /// Wait before the first retry, doubled at each one (up to 30 s).
    pub webhook_backoff_ms: u64,
    /// Time one webhook request has for its reply.
    pub webhook_timeout_ms: u64,
    /// Seconds that draining sessions get at shutdown.
    pub shutdown_grace_secs: u64,
    /// At shutdown, seconds during which `/readyz` answers 503 while
    /// everything still serves, before the listeners close (time for a
    /// load balancer to take the node out). 0 = close at once.
    pub shutdown_ready_delay_secs: u64,
    /// `tracing` filter, e.g. `info` or `imgate=debug`.
    pub log: String,
    /// `text` (for people) or `json` (one JSON object per line, for log
    /// collectors).
    pub log_format: String,
    /// PEM certificate chain; with `tls_key`, the TLS listeners open
    /// (`pbs`, `mqtts`, `xmpps`, `https`, `wss`) next to the plain ones,
    /// the admin API is HTTPS (see `admin_tls`) and the plain XMPP listener
    /// requires STARTTLS. Empty = no TLS.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// Listeners behind a TCP load balancer that sends the PROXY protocol
    /// (v1 or v2), e.g. `"mqtt,http,pb,xmpp,ws,mqtts"` (listener names): on each, every connection
    /// must start with the header, and its client address replaces the
    /// socket's peer (per-IP limits, logs). Empty = none. Never `admin`.
    pub proxy_protocol: String,
    /// With a certificate configured, the admin listener speaks HTTPS
    /// too; `false` keeps it plain HTTP (for an admin API reachable only
    /// on localhost or behind a TLS proxy). No effect without a certificate.
    pub admin_tls: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pb_addr: "0.0.0.0:8100".into(),
            mqtt_addr: "0.0.0.0:1883".into(),
            xmpp_addr: "0.0.0.0:5222".into(),
            http_addr: "0.0.0.0:8080".into(),
            admin_addr: "127.0.0.1:18080".into(),
            ws_addr: "0.0.0.0:8083".into(),
            pbs_addr: "0.0.0.0:8101".into(),
            mqtts_addr: "0.0.0.0:8883".into(),
            xmpps_addr: "0.0.0.0:5223".into(),
            https_addr: "0.0.0.0:8443".into(),
            wss_addr: "0.0.0.0:8084".into(),
            data_dir: PathBuf::from("imgate-data"),
            admin_secret: String::new(),
            store: "embedded".into(),
            node_id: 1,
            xmpp_domain: "localhost".into(),
            token_ttl_secs: 30 * 24 * 3600,
            device_secrets_per_user: 100,
            device_secrets_max_total: 20_000,
            max_body_bytes: 1024 * 1024,
            max_payload_bytes: 64 * 1024,
            multi_endpoint: false,
            rate_limit_messages: 100,
            rate_limit_per_secs: 5,
            dedupe_window_secs: 600,
            recall_window_secs: 120,
            retention_days: 0,
            prune_interval_secs: 60,
            embedded_max_batch: 512,
            store_cache_mb: 64,
            dedupe_capacity: 1_000_000,
            device_window: 4096,
            pb_max_frame: 1024 * 1024,
            mqtt_max_packet: 1024 * 1024,
            mqtt_max_queued: 1000,
            mqtt_retained_max_per_user: 1000,
            mqtt_retained_max_bytes_per_user: 16 * 1024 * 1024,
            mqtt_retained_max_total: 100_000,
            mqtt_retained_max_bytes_total: 1024 * 1024 * 1024,
            mqtt_max_subscriptions_per_session: 100,
            mqtt_acl_file: String::new(),
            xmpp_preauth_max_stanza: 16 * 1024,
            xmpp_sm_max_unacked: 1000,
            xmpp_scram: false,
            xmpp_room_creation: false,
            heartbeat_secs: 60,
            send_window: 64,
            login_timeout_secs: 10,
            http_header_timeout_secs: 10,
            http_body_timeout_secs: 30,
            write_timeout_secs: 30,
            admin_sign_window_secs: (crate::admin_sign::MAX_SKEW_MS / 1000) as u64,
            admin_nonce_capacity: 100_000,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            daily_quota: 0,
            conn_rate_per_ip: 100,
            sensitive_strategy: "reject".into(),
            sensitive_strategy_by_type: String::new(),
            review_url: String::new(),
            review_mode: "forward".into(),
            review_timeout_ms: 2000,
            review_fail_open: true,
            review_content_types: String::new(),
            review_queue: 10_000,
            hook_secret: String::new(),
            webhook_url: String::new(),
            webhook_events: "connected,disconnected,delivered,read".into(),
            webhook_queue: 10_000,
            webhook_retries: 5,
            webhook_backoff_ms: 500,
            webhook_timeout_ms: 5000,
            shutdown_grace_secs: 10,
            shutdown_ready_delay_secs: 0,
            log: "info".into(),
            log_format: "text".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            proxy_protocol: String::new(),
            admin_tls: true,
        }
    }
}

impl Config {
    /// Defaults, then the file (if given), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<Config> {
        let defaults = toml::Table::try_from(Config::default()).context("serializing defaults")?;
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("parsing config {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (key, default) in &defaults {
            let var = format!("IMGATE_{}", key.to_ascii_uppercase());
            let Some((_, raw)) = env.iter().find(|(k, _)| *k == var) else {
                continue;
            };
            let value = match default {
                toml::Value::Integer(_) => toml::Value::Integer(
                    raw.trim()
                        .parse()
                        .with_context(|| format!("{var} must be an integer"))?,
                ),
                toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" => false,
                    other => bail!("{var} must be true or false, not {other:?}"),
                }),
                _ => toml::Value::String(raw.clone()),
            };
            table.insert(key.clone(), value);
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// `IMGATE_*` variables in `env` that set nothing: not a setting and
    /// not one of the tools' own variables (a typo would otherwise be
    /// silently ignored). Each with the closest setting's variable, if
    /// one is close.
    pub fn unknown_env_vars(env: &[(String, String)]) -> Vec<(String, Option<String>)> {
        /// Read elsewhere: the config path, the admin CLI, the test and
        /// bench harnesses.
        const OTHERS: [&str; 5] = [
            "IMGATE_CONFIG",
            "IMGATE_ADMIN_URL",
            "IMGATE_ADMIN_CA",
            "IMGATE_ADMIN_TLS_NAME",
            "IMGATE_BIN",
        ];
        const OTHER_PREFIXES: [&str; 3] = ["IMGATE_TEST_", "IMGATE_CONFORMANCE_", "IMGATE_BENCH_"];
        let Ok(defaults) = toml::Table::try_from(Config::default()) else {
            return vec![];
        };
        let known: Vec<String> = defaults
            .keys()
            .map(|k| format!("IMGATE_{}", k.to_ascii_uppercase()))
            .collect();
        let mut unknown: Vec<(String, Option<String>)> = env
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("IMGATE_"))
            .filter(|k| !known.contains(k) && !OTHERS.contains(&k.as_str()))
            .filter(|k| !OTHER_PREFIXES.iter().any(|p| k.starts_with(p)))
            .map(|k| {
                let closest = known
                    .iter()
                    .map(|c| (edit_distance(k, c), c))
                    .min()
                    .filter(|(d, _)| *d <= 3)
                    .map(|(_, c)| c.clone());
                (k.clone(), closest)
            })
            .collect();
        unknown.sort();
        unknown
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format must be text or json, not {:?}", self.log_format);
        }
        if self.node_id > imgate_core::id::MAX_NODE_ID {
            bail!("node_id must be at most {}", imgate_core::id::MAX_NODE_ID);
        }
        if self.rate_limit_messages == 0 || self.rate_limit_per_secs == 0 {
            bail!("rate_limit_messages and rate_limit_per_secs must be positive");
        }
        self.word_strategies()?;
        self.review_config()?;
        if self.send_window == 0 {
            bail!("send_window must be positive");
        }
        if self.embedded_max_batch == 0 {
            bail!("embedded_max_batch must be positive");
        }
        if self.tls_cert.trim().is_empty() != self.tls_key.trim().is_empty() {
            bail!("tls_cert and tls_key must be set together (or both left empty)");
        }
        self.proxy_protocol_listeners()?;
        webhook_events::validate(self)?;
        Ok(())
    }

    /// The listeners of `proxy_protocol` (names of the listener table);
    /// an unknown name (or `admin`) is an error.
    pub fn proxy_protocol_listeners(&self) -> anyhow::Result<Vec<&'static str>> {
        let mut listeners = Vec::new();
        for name in self
            .proxy_protocol
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let Some(spec) = listeners::by_name(name).filter(|l| l.name != "admin") else {
                bail!(
                    "proxy_protocol: {name:?} is not a client listener ({})",
                    listeners::names().replace("admin, ", "")
                )
            };
            if !listeners.contains(&spec.name) {
                listeners.push(spec.name);
            }
        }
        Ok(listeners)
    }

    pub fn word_strategies(&self) -> anyhow::Result<WordStrategies> {
        let default: WordStrategy = self
            .sensitive_strategy
            .parse()
            .map_err(anyhow::Error::msg)?;
        let mut by_type = std::collections::HashMap::new();
        for part in self
            .sensitive_strategy_by_type
            .split(',')
            .filter(|p| !p.trim().is_empty())
        {
            let (t, s) = part.split_once('=').with_context(|| {
                format!("sensitive_strategy_by_type: {part:?} is not TYPE=STRATEGY")
            })?;
            let t: i32 = t
                .trim()
                .parse()
                .with_context(|| format!("sensitive_strategy_by_type: bad type {t:?}"))?;
            by_type.insert(t, s.parse().map_err(anyhow::Error::msg)?);
        }
        Ok(WordStrategies { default, by_type })
    }

    /// The review hook settings, if a URL is configured.
    pub fn review_config(&self) -> anyhow::Result<Option<ReviewConfig>> {
        if self.review_url.trim().is_empty() {
            return Ok(None);
        }
        if !self.review_url.starts_with("http://") {
            bail!("review_url must be an http:// URL");
        }
        let mode = match self.review_mode.trim() {
            "forward" => ReviewMode::Forward,
            "review" => ReviewMode::Review,
            other => bail!("review_mode must be forward or review, not {other:?}"),
        };
        let content_types = self
            .review_content_types
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.trim()
                    .parse::<i32>()
                    .with_context(|| format!("review_content_types: {p:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(ReviewConfig {
            mode,
            timeout: Duration::from_millis(self.review_timeout_ms.max(1)),
            fail_open: self.review_fail_open,
            content_types,
        }))
    }

    pub fn device_secret_limits(&self) -> SecretLimits {
        SecretLimits {
            per_user: self.device_secrets_per_user,
            total: self.device_secrets_max_total,
        }
    }

    pub fn pipeline(&self) -> PipelineConfig {
        PipelineConfig {
            limits: Limits {
                max_payload_bytes: self.max_payload_bytes,
                ..Limits::default()
            },
            dedupe_window: Duration::from_secs(self.dedupe_window_secs),
            rate: RateLimitConfig {
                messages: self.rate_limit_messages,
                per: Duration::from_secs(self.rate_limit_per_secs),
            },
            daily_quota: self.daily_quota,
        }
    }
}

/// Levenshtein distance (names of a few dozen bytes).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// docs/configuration.md, rendered from `imgate.toml.example` (whose keys
/// and defaults a test checks against [`Config`]): one row per setting
/// with its default, its environment variable and its comment.
#[cfg(test)]
fn configuration_reference(example: &str) -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Every setting of `imgate serve`, with its default and its environment\n\
         variable. Settings come from the defaults, then the file given with\n\
         `--config` (or `IMGATE_CONFIG`), then the environment, which wins.\n\
         `imgate check-config` checks a file and the environment without\n\
         starting (unknown `IMGATE_*` variables are reported, with the setting\n\
         they probably meant). Durations are in the unit their name ends with.\n\n\
         This page is generated from `imgate.toml.example`, which a test checks\n\
         against `gateway/src/config/mod.rs`; another test fails when this page is\n\
         stale. Regenerate it with\n\
         `IMGATE_TEST_BLESS=1 cargo test -p imgate --bin imgate configuration_reference`.\n\n\
         | setting | default | environment | meaning |\n\
         |---|---|---|---|\n",
    );
    let cell = |s: &str| s.replace('|', "\\|");
    for block in example.split("\n\n") {
        let comment: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .map(str::trim)
            .collect();
        let keys: Vec<(&str, &str)> = block
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(" = "))
            .collect();
        let meaning = comment.join(" ");
        for (i, (key, value)) in keys.iter().enumerate() {
            let meaning = if i == 0 {
                meaning.clone()
            } else {
                "(see above)".into()
            };
            out.push_str(&format!(
                "| `{key}` | `{}` | `IMGATE_{}` | {} |\n",
                cell(value),
                key.to_ascii_uppercase(),
                cell(&meaning)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn configuration_reference_is_generated_from_the_example() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let example = std::fs::read_to_string(root.join("imgate.toml.example")).unwrap();
        let want = super::configuration_reference(&example);
        let path = root.join("docs/configuration.md");
        if std::env::var_os("IMGATE_TEST_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/configuration.md is stale: regenerate it with \
             IMGATE_TEST_BLESS=1 cargo test -p imgate --bin imgate configuration_reference"
        );
        let defaults = toml::Table::try_from(super::Config::default()).unwrap();
        for key in defaults.keys() {
            let row = format!("| `{key}` |");
            assert!(have.contains(&row), "{key} is not in docs/configuration.md");
        }
    }

    #[test]
    fn the_example_file_lists_every_setting_with_its_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../imgate.toml.example");
        // Unknown keys are refused (deny_unknown_fields): none is stale.
        let example = super::Config::load_from(Some(&path), &[]).unwrap();
        assert_eq!(
            serde_json::to_value(&example).unwrap(),
            serde_json::to_value(super::Config::default()).unwrap(),
            "imgate.toml.example and the defaults differ"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let defaults = toml::Table::try_from(super::Config::default()).unwrap();
        for key in defaults.keys() {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "{key} is missing from imgate.toml.example"
            );
        }
    }

    #[test]
    fn unknown_imgate_variables_are_reported_with_the_closest_setting() {
        let env: Vec<(String, String)> = [
            ("IMGATE_MQTT_ADRR", "x"),
            ("IMGATE_MQTT_ADDR", "x"),
            ("IMGATE_CONFIG", "x"),
            ("IMGATE_TEST_AMQP", "x"),
            ("IMGATE_SOMETHING_ELSE_ENTIRELY", "x"),
            ("PATH", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            super::Config::unknown_env_vars(&env),
            vec![
                (
                    "IMGATE_MQTT_ADRR".to_string(),
                    Some("IMGATE_MQTT_ADDR".to_string())
                ),
                ("IMGATE_SOMETHING_ELSE_ENTIRELY".to_string(), None),
            ]
        );
    }

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_contract_ports() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.pb_addr, "0.0.0.0:8100");
        assert_eq!(c.mqtt_addr, "0.0.0.0:1883");
        assert_eq!(c.xmpp_addr, "0.0.0.0:5222");
        assert_eq!(c.http_addr, "0.0.0.0:8080");
        assert_eq!(c.admin_addr, "127.0.0.1:18080");
        assert_eq!(c.store, "embedded");
        assert_eq!(c.xmpp_domain, "localhost");
    }

    #[test]
    fn file_then_environment_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imgate.toml");
        std::fs::write(
            &path,
            "http_addr = \"127.0.0.1:9000\"\nnode_id = 3\nmulti_endpoint = true\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&path), &[]).unwrap();
        assert_eq!(
            (c.http_addr.as_str(), c.node_id, c.multi_endpoint),
            ("127.0.0.1:9000", 3, true)
        );
        let c = Config::load_from(
            Some(&path),
            &env(&[
                ("IMGATE_HTTP_ADDR", "127.0.0.1:0"),
                ("IMGATE_NODE_ID", "9"),
                ("IMGATE_MULTI_ENDPOINT", "false"),
                ("IMGATE_DATA_DIR", "/tmp/x"),
                ("IMGATE_RATE_LIMIT_MESSAGES", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:0");
        assert_eq!(c.node_id, 9);
        assert!(!c.multi_endpoint);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.rate_limit_messages, 7);
    }

    #[test]
    fn bad_values_are_explained() {
        let e = Config::load_from(None, &env(&[("IMGATE_NODE_ID", "lots")])).unwrap_err();
        assert!(format!("{e:#}").contains("IMGATE_NODE_ID"));
        assert!(Config::load_from(None, &env(&[("IMGATE_NODE_ID", "5000")])).is_err());
        assert!(
            Config::load_from(None, &env(&[("IMGATE_SENSITIVE_STRATEGY", "explode")])).is_err()
        );
        assert!(Config::load_from(
            None,
            &env(&[("IMGATE_SENSITIVE_STRATEGY_BY_TYPE", "1:mask")])
        )
        .is_err());
        assert!(Config::load_from(None, &env(&[("IMGATE_REVIEW_URL", "ftp://x")])).is_err());
        let e = Config::load_from(None, &env(&[("IMGATE_TLS_CERT", "/x/cert.pem")])).unwrap_err();
        assert!(format!("{e:#}").contains("tls_key"));
        let e =
            Config::load_from(None, &env(&[("IMGATE_PROXY_PROTOCOL", "pb,admin")])).unwrap_err();
        assert!(format!("{e:#}").contains("proxy_protocol"));
        assert!(Config::load_from(None, &env(&[("IMGATE_PROXY_PROTOCOL", "smtp")])).is_err());
        let c = Config::load_from(
            None,
            &env(&[("IMGATE_PROXY_PROTOCOL", " mqtt, http,pb,xmpp,pb ")]),
        )
        .unwrap();
        assert_eq!(
            c.proxy_protocol_listeners().unwrap(),
            ["mqtt", "http", "pb", "xmpp"]
        );
        let c = Config::load_from(
            None,
            &env(&[
                ("IMGATE_SENSITIVE_STRATEGY_BY_TYPE", "1=mask, 0=drop"),
                ("IMGATE_REVIEW_URL", "http://127.0.0.1:9/r"),
            ]),
        )
        .unwrap();
        assert_eq!(c.word_strategies().unwrap().by_type.len(), 2);
        assert_eq!(
            c.review_config().unwrap().unwrap().mode,
            ReviewMode::Forward
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imgate.toml");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        assert!(Config::load_from(Some(&path), &[]).is_err());
    }
}
