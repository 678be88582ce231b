//! Settings of the RabbitMQ store, read from the `amqp://` URL.
//!
//! The gateway has one `store` setting, so the store's own knobs travel as
//! query parameters of that URL (lapin ignores the ones it does not know):
//!
//! `amqp://user:pass@host:5672/%2f?prefix=imgate&device_expires_secs=2592000&device_max_length=10000&overflow=reject-publish&max_in_flight=1024`
//!
//! Every parameter has a default, so a bare URL works.

use std::path::PathBuf;
use std::time::Duration;

use imgate_core::StoreError;

/// What a device queue does when it holds `device_max_length` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The broker refuses the publish (a publisher nack): the append fails
    /// with code 4 and the sender retries. Nothing is dropped silently.
    RejectPublish,
    /// The oldest pending delivery of that device is dropped; the device
    /// still finds it through sync (the log keeps everything).
    DropHead,
}

impl Overflow {
    pub fn as_arg(self) -> &'static str {
        match self {
            Overflow::RejectPublish => "reject-publish",
            Overflow::DropHead => "drop-head",
        }
    }
}

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
    /// A device queue unused (no consumer) this long is deleted by the
    /// broker (`x-expires`).
    pub device_expires: Duration,
    /// Most messages pending for one device (`x-max-length`).
    pub device_max_length: u32,
    pub overflow: Overflow,
    /// Unacked deliveries outstanding per attached device (`basic.qos`).
    pub device_prefetch: u16,
    /// Connections that consume device queues (each attached device has
    /// a channel on one of them, chosen by hashing the device; a
    /// connection carries up to the broker's `channel_max`, 2047 by
    /// default).
    pub device_connections: u16,
    /// Log records in flight to this node's indexer.
    pub log_prefetch: u16,
    /// How long `open` may take to catch up with the log.
    pub catch_up_timeout: Duration,
    /// AMQP heartbeat in seconds when the URL sets none (dead peers are
    /// noticed within about twice this).
    pub heartbeat_secs: u16,
}

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
            device_max_length: 10_000,
            overflow: Overflow::RejectPublish,
            device_prefetch: 256,
            device_connections: 4,
            log_prefetch: 2000,
            catch_up_timeout: Duration::from_secs(600),
            heartbeat_secs: 10,
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
                "device_max_length" => c.device_max_length = num(k, v)?,
                "overflow" => {
                    c.overflow = match v {
                        "reject-publish" => Overflow::RejectPublish,
                        "drop-head" => Overflow::DropHead,
                        _ => {
                            return Err(bad(format!(
                                "overflow must be reject-publish or drop-head, not {v:?}"
                            )))
                        }
                    }
                }
                "max_in_flight" => c.max_in_flight = num(k, v)?,
                "send_timeout_ms" => c.send_timeout = Duration::from_millis(num(k, v)?),
                "reconnect_wait_ms" => c.reconnect_wait = Duration::from_millis(num(k, v)?),
                "device_prefetch" => c.device_prefetch = num(k, v)?,
                "device_connections" => c.device_connections = num(k, v)?,
                "log_prefetch" => c.log_prefetch = num(k, v)?,
                _ => {} // lapin's own (heartbeat, frame_max, ...) or unknown
            }
        }
        c.validate()?;
        Ok(c)
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
        if self.max_in_flight == 0 || self.device_prefetch == 0 || self.log_prefetch == 0 {
            return Err(bad(
                "max_in_flight, device_prefetch and log_prefetch must be > 0",
            ));
        }
        if !(1..=64).contains(&self.device_connections) {
            return Err(bad("device_connections must be 1 to 64"));
        }
        if self.device_expires.as_millis() == 0 || self.device_max_length == 0 {
            return Err(bad("device_expires_secs and device_max_length must be > 0"));
        }
        Ok(())
    }
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
            "amqp://g:g@h:5672/%2f?prefix=t-1&device_max_length=5&overflow=drop-head&heartbeat=3&device_connections=2",
            "/tmp/x",
            3,
        )
        .unwrap();
        assert_eq!(c.prefix, "t-1");
        assert_eq!(c.device_max_length, 5);
        assert_eq!(c.overflow, Overflow::DropHead);
        assert_eq!(c.node_id, 3);
        assert_eq!(c.device_connections, 2);
        assert!(RabbitConfig::from_url("amqp://h?device_connections=0", "/tmp", 1).is_err());
        let d = RabbitConfig::from_url("amqp://h", "/tmp/x", 1).unwrap();
        assert_eq!(d.prefix, "imgate");
        assert_eq!(d.overflow, Overflow::RejectPublish);
        assert!(RabbitConfig::from_url("amqp://h?prefix=a%20b", "/tmp", 1).is_err());
        assert!(RabbitConfig::from_url("http://h", "/tmp", 1).is_err());
        assert!(RabbitConfig::from_url("amqp://h?max_in_flight=x", "/tmp", 1).is_err());
    }
}
