//! Settings of the RabbitMQ store, read from the `amqp://` (or `amqps://`)
//! URL.
//!
//! The gateway has one `store` setting, so the store's own knobs travel as
//! query parameters of that URL (lapin ignores the ones it does not know):
//!
//! `amqp://user:pass@host:5672/%2f?prefix=imgate&log_max_age=365D&control_max_age=2D&device_expires_secs=2592000`
//!
//! Every parameter has a default, so a bare URL works.
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `prefix` | `imgate` | name prefix of the broker objects |
//! | `log_max_age`, `log_max_bytes` | none (keep all) | history retention of `<prefix>.log` |
//! | `control_max_age`, `control_max_bytes` | `2D`, 2 GiB | retention of `<prefix>.control` (cursors, announcements) |
//! | `control_segment_bytes` | 16 MiB | segment size of the control stream (retention drops whole segments) |
//! | `cursor_snapshot_secs` | 21600 | how often the cluster writes a full cursor snapshot to the control stream |
//! | `cursor_flush_ms` | 100 | how long moved cursors wait to be batched into one record |
//! | `device_expires_secs` | 2592000 | a device unseen this long is forgotten (its cursor too) |
//! | `device_buffer`, `device_window` | 1024, 4096 | live deliveries buffered / tracked unacked per attached device |
//! | `max_in_flight`, `send_timeout_ms`, `reconnect_wait_ms` | 1024, 10000, 5000 | publisher window and bounds |
//! | `log_prefetch` | 2000 | log records in flight to the indexer |
//! | `tls_ca_file` | none | PEM file of the CA that signed the broker's certificate (`amqps://`) |
//!
//! Parameters of the earlier per-device-queue design (`device_max_length`,
//! `overflow`, `device_prefetch`, `device_connections`) are accepted and
//! ignored with a warning, so an old URL keeps working.

use std::path::PathBuf;
use std::time::Duration;

use imgate_core::StoreError;

use super::topology::Retention;

/// Settings of [`super::RabbitStore`].
#[derive(Debug, Clone)]
pub struct RabbitConfig {
    /// The broker URL as given (our own query parameters are ignored by
    /// lapin).
    pub url: String,
    /// Prefix of every exchange and queue name (`<prefix>.log`, ...).
    pub prefix: String,
    pub node_id: u16,
    /// Where the node-local index (`rabbit-<prefix>.redb`) lives.
    pub data_dir: PathBuf,
    /// How long a `(sender, client_msg_id)` is remembered for resends.
    pub dedupe_window: Duration,
    /// Publishes awaiting their broker confirm at once; more senders wait
    /// (backpressure) up to `send_timeout`.
    pub max_in_flight: usize,
    /// Bound on one append: waiting for a window slot, for the broker to
    /// be reachable, for the confirm and for the local index.
    pub send_timeout: Duration,
    /// How long an operation waits for a lost broker connection to come
    /// back before failing with `Unavailable` (code 4).
    pub reconnect_wait: Duration,
    /// A device not seen (attached, acking) this long is forgotten: its
    /// next attach starts with what is sent from then on.
    pub device_expires: Duration,
    /// Live deliveries buffered per attached device; a slower device reads
    /// its timeline instead (never a loss).
    pub device_buffer: usize,
    /// Unacked deliveries tracked exactly per attached device.
    pub device_window: usize,
    /// History retention (`x-max-age` of the log, RabbitMQ units such as
    /// `365D`); none keeps everything.
    pub log_max_age: Option<String>,
    pub log_max_bytes: Option<u64>,
    /// Retention of the control stream.
    pub control_max_age: String,
    pub control_max_bytes: u64,
    pub control_segment_bytes: u64,
    /// How often a full cursor snapshot is written (by whichever node's
    /// turn it is, see `cursor_log`).
    pub cursor_snapshot: Duration,
    /// Moved cursors are batched this long into one control record.
    pub cursor_flush: Duration,
    /// Log records in flight to this node's indexer.
    pub log_prefetch: u16,
    /// How long `open` may take to catch up with the log.
    pub catch_up_timeout: Duration,
    /// AMQP heartbeat in seconds when the URL sets none (dead peers are
    /// noticed within about twice this).
    pub heartbeat_secs: u16,
    /// CA certificate (PEM) for `amqps://` brokers with a private CA; the
    /// system's roots otherwise.
    pub tls_ca_file: Option<PathBuf>,
}

const LEGACY: [&str; 4] = [
    "device_max_length",
    "overflow",
    "device_prefetch",
    "device_connections",
];

impl RabbitConfig {
    /// Defaults, then the URL's query parameters.
    pub fn from_url(
        url: &str,
        data_dir: impl Into<PathBuf>,
        node_id: u16,
    ) -> Result<Self, StoreError> {
        let mut c = RabbitConfig {
            url: url.to_string(),
            prefix: "imgate".into(),
            node_id,
            data_dir: data_dir.into(),
            dedupe_window: Duration::from_secs(600),
            max_in_flight: 1024,
            send_timeout: Duration::from_secs(10),
            reconnect_wait: Duration::from_secs(5),
            device_expires: Duration::from_secs(30 * 24 * 3600),
            device_buffer: 1024,
            device_window: 4096,
            log_max_age: None,
            log_max_bytes: None,
            control_max_age: "2D".into(),
            control_max_bytes: 2 << 30,
            control_segment_bytes: 16 << 20,
            cursor_snapshot: Duration::from_secs(6 * 3600),
            cursor_flush: Duration::from_millis(100),
            log_prefetch: 2000,
            catch_up_timeout: Duration::from_secs(600),
            heartbeat_secs: 10,
            tls_ca_file: None,
        };
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(bad(format!("not an amqp:// URL: {url:?}")));
        }
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "prefix" => c.prefix = v.to_string(),
                "device_expires_secs" => c.device_expires = Duration::from_secs(num(k, v)?),
                "device_buffer" => c.device_buffer = num(k, v)?,
                "device_window" => c.device_window = num(k, v)?,
                "log_max_age" => c.log_max_age = Some(age(k, v)?),
                "log_max_bytes" => c.log_max_bytes = Some(num(k, v)?),
                "control_max_age" => c.control_max_age = age(k, v)?,
                "control_max_bytes" => c.control_max_bytes = num(k, v)?,
                "control_segment_bytes" => c.control_segment_bytes = num(k, v)?,
                "cursor_snapshot_secs" => {
                    c.cursor_snapshot = Duration::from_secs(num(k, v)?);
                }
                "cursor_flush_ms" => c.cursor_flush = Duration::from_millis(num(k, v)?),
                "max_in_flight" => c.max_in_flight = num(k, v)?,
                "send_timeout_ms" => c.send_timeout = Duration::from_millis(num(k, v)?),
                "reconnect_wait_ms" => c.reconnect_wait = Duration::from_millis(num(k, v)?),
                "log_prefetch" => c.log_prefetch = num(k, v)?,
                "tls_ca_file" => c.tls_ca_file = Some(PathBuf::from(unescape(v))),
                k if LEGACY.contains(&k) => {
                    tracing::warn!(parameter = k, "RabbitMQ store: parameter of the per-device-queue design, ignored (devices have cursors now)");
                }
                _ => {} // lapin's own (heartbeat, frame_max, ...) or unknown
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// The URL lapin gets: without our own parameters (lapin rejects
    /// some values it does not know, and secrets like file paths have no
    /// business in its logs).
    pub fn broker_url(&self) -> String {
        let Some((base, query)) = self.url.split_once('?') else {
            return self.url.clone();
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| {
                let k = p.split_once('=').map_or(*p, |(k, _)| k);
                matches!(
                    k,
                    "heartbeat"
                        | "frame_max"
                        | "channel_max"
                        | "connection_timeout"
                        | "auth_mechanism"
                )
            })
            .collect();
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    }

    pub fn log_retention(&self) -> Retention {
        Retention {
            max_age: self.log_max_age.clone(),
            max_bytes: self.log_max_bytes,
            segment_bytes: None,
        }
    }

    pub fn control_retention(&self) -> Retention {
        Retention {
            max_age: Some(self.control_max_age.clone()),
            max_bytes: Some(self.control_max_bytes),
            segment_bytes: Some(self.control_segment_bytes),
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        let ok = !self.prefix.is_empty()
            && self.prefix.len() <= 64
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok {
            return Err(bad(format!(
                "prefix must be 1-64 characters of [A-Za-z0-9._-], not {:?}",
                self.prefix
            )));
        }
        if self.max_in_flight == 0 || self.log_prefetch == 0 {
            return Err(bad("max_in_flight and log_prefetch must be > 0"));
        }
        if self.device_buffer == 0 || self.device_window == 0 {
            return Err(bad("device_buffer and device_window must be > 0"));
        }
        if self.device_expires.as_secs() == 0 || self.cursor_snapshot.as_secs() == 0 {
            return Err(bad(
                "device_expires_secs and cursor_snapshot_secs must be > 0",
            ));
        }
        if self.control_segment_bytes == 0 || self.control_max_bytes < self.control_segment_bytes {
            return Err(bad(
                "control_max_bytes must be at least control_segment_bytes (> 0)",
            ));
        }
        let control_secs = age_secs(&self.control_max_age);
        if control_secs <= 2 * self.cursor_snapshot.as_secs() {
            return Err(bad(format!(
                "control_max_age ({}) must be more than twice cursor_snapshot_secs ({}): the control stream must always hold a complete cursor snapshot",
                self.control_max_age,
                self.cursor_snapshot.as_secs()
            )));
        }
        Ok(())
    }
}

/// Seconds of a validated stream age (a month is 30 days, a year 365).
fn age_secs(v: &str) -> u64 {
    let (digits, unit) = v.split_at(v.len().saturating_sub(1));
    let n: u64 = digits.parse().unwrap_or(0);
    let unit = match unit {
        "Y" => 365 * 86_400,
        "M" => 30 * 86_400,
        "D" => 86_400,
        "h" => 3600,
        "m" => 60,
        _ => 1,
    };
    n.saturating_mul(unit)
}

/// A RabbitMQ stream age: digits and one unit of `Y M D h m s`.
fn age(key: &str, v: &str) -> Result<String, StoreError> {
    let (digits, unit) = v.split_at(v.len().saturating_sub(1));
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "Y" | "M" | "D" | "h" | "m" | "s");
    if ok {
        Ok(v.to_string())
    } else {
        Err(bad(format!(
            "{key} must be a number and one of Y M D h m s (e.g. 7D), not {v:?}"
        )))
    }
}

/// `%2F` and friends in a query value.
fn unescape(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, StoreError> {
    v.parse()
        .map_err(|_| bad(format!("{key} must be a non-negative integer, not {v:?}")))
}

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::Unavailable(format!("bad RabbitMQ store URL: {}", msg.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_override_defaults() {
        let c = RabbitConfig::from_url(
            "amqp://g:g@h:5672/%2f?prefix=t-1&log_max_age=30D&heartbeat=3&device_connections=2&tls_ca_file=%2Ftmp%2Fca.pem",
            "/tmp/x",
            3,
        )
        .unwrap();
        assert_eq!(c.prefix, "t-1");
        assert_eq!(c.log_max_age.as_deref(), Some("30D"));
        assert_eq!(c.node_id, 3);
        assert_eq!(c.tls_ca_file, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(c.broker_url(), "amqp://g:g@h:5672/%2f?heartbeat=3");
        let d = RabbitConfig::from_url("amqp://h", "/tmp/x", 1).unwrap();
        assert_eq!(d.prefix, "imgate");
        assert_eq!(
            d.log_retention(),
            Retention::default(),
            "history kept whole"
        );
        assert_eq!(d.control_retention().max_age.as_deref(), Some("2D"));
        assert_eq!(d.broker_url(), "amqp://h");
        assert!(RabbitConfig::from_url("amqp://h?prefix=a%20b", "/tmp", 1).is_err());
        assert!(RabbitConfig::from_url("http://h", "/tmp", 1).is_err());
        assert!(RabbitConfig::from_url("amqp://h?max_in_flight=x", "/tmp", 1).is_err());
        assert!(RabbitConfig::from_url("amqp://h?log_max_age=7days", "/tmp", 1).is_err());
        assert!(RabbitConfig::from_url("amqp://h?device_window=0", "/tmp", 1).is_err());
        assert!(
            RabbitConfig::from_url("amqp://h?control_max_age=12h", "/tmp", 1).is_err(),
            "must outlive two snapshots (6 h)"
        );
        assert!(RabbitConfig::from_url(
            "amqp://h?control_max_age=90s&cursor_snapshot_secs=30",
            "/tmp",
            1
        )
        .is_ok());
    }
}
