//! Names and idempotent declarations of the broker objects (DESIGN §7).
//! Their number is fixed: it does not depend on users or devices.
//!
//! - `<prefix>.log`: a durable **stream**, the history: messages, recalls,
//!   withdrawals, imports, node markers. Kept whole by default; optional
//!   retention (`log_max_age`, `log_max_bytes`).
//! - `<prefix>.state`: a durable **stream** of cluster state that must
//!   outlive any history retention: groups and settings. Small, kept whole.
//! - `<prefix>.control`: a durable **stream** of control traffic that may
//!   expire (`control_max_age`, `control_max_bytes`, small segments so
//!   retention bites): delivery cursors in batches (with periodic full
//!   snapshots, so a node started later still learns every cursor),
//!   login announcements, receipts.
//! - `<prefix>.inbox`: a durable **direct exchange**; each stream is bound
//!   with its own key ([`LOG_KEY`], [`STATE_KEY`], [`CONTROL_KEY`]).
//! - MQTT cluster bus (see `mqtt_bus`): the inbox keys `mqtt` (one
//!   exclusive queue per running node, `<prefix>.mqtt.node.<node>.<boot>`)
//!   and `mqtt-retained` (the durable stream `<prefix>.mqtt-retained`).
//!
//! A node holds a fixed number of connections and channels whatever the
//! number of devices attached to it (see `mod.rs`).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use super::config::RabbitConfig;

/// Routing key of the history stream.
pub const LOG_KEY: &str = "log";
/// Routing key of the state stream.
pub const STATE_KEY: &str = "state";
/// Routing key of the control stream.
pub const CONTROL_KEY: &str = "control";

/// Close a consuming channel, and only then drop its consumer.
///
/// The order matters. A consumer dropped while its channel is open makes
/// lapin send `basic.cancel` from a background task; if that frame leaves
/// after our `channel.close`, RabbitMQ closes the whole connection
/// (`CHANNEL_ERROR - expected 'channel.open'`) and every other channel on
/// it fails. Once the close is done, lapin knows the channel is gone and
/// sends nothing more on it.
pub async fn close_consuming<C>(ch: &Channel, consumers: C, reason: &str) {
    let _ = ch.close(200, ShortString::from(reason.to_string())).await;
    drop(consumers);
}

/// The names of one store's broker objects.
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: String,
    pub log: String,
    pub state: String,
    pub control: String,
    pub inbox: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_string(),
            log: format!("{prefix}.log"),
            state: format!("{prefix}.state"),
            control: format!("{prefix}.control"),
            inbox: format!("{prefix}.inbox"),
        }
    }

    /// The streams this store indexes, with their routing keys.
    pub fn streams(&self) -> [(&str, &'static str); 3] {
        [
            (self.log.as_str(), LOG_KEY),
            (self.state.as_str(), STATE_KEY),
            (self.control.as_str(), CONTROL_KEY),
        ]
    }
}

/// A short string from a name built by this module (always ≤ 255 bytes
/// for a valid prefix); anything else is an error, never a panic.
pub fn short(s: &str) -> Result<ShortString, lapin::Error> {
    ShortString::try_new(s).map_err(|e| lapin::Error::from(std::io::Error::other(e.to_string())))
}

/// Retention of one stream: `x-max-age` (RabbitMQ's units, e.g. `7D`,
/// `12h`) and `x-max-length-bytes`; `None` keeps everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<String>,
    pub max_bytes: Option<u64>,
    pub segment_bytes: Option<u64>,
}

fn stream_args(r: &Retention) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    if let Some(age) = &r.max_age {
        args.insert(
            "x-max-age".into(),
            AMQPValue::LongString(age.as_str().into()),
        );
    }
    if let Some(b) = r.max_bytes {
        args.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(i64::try_from(b).unwrap_or(i64::MAX)),
        );
    }
    if let Some(b) = r.segment_bytes {
        args.insert(
            "x-stream-max-segment-size-bytes".into(),
            AMQPValue::LongLongInt(i64::try_from(b).unwrap_or(i64::MAX)),
        );
    }
    args
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(err)
        if matches!(err.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

/// Declare the exchange and the three streams and bind them. Safe to
/// repeat (on every connect). A stream that exists with other arguments
/// (retention changed since it was made) is used as it is, with a
/// warning: stream arguments cannot change, a RabbitMQ policy can.
pub async fn declare_core(
    conn: &Connection,
    names: &Names,
    config: &RabbitConfig,
) -> Result<(), lapin::Error> {
    let mut ch = conn.create_channel().await?;
    ch.exchange_declare(
        short(&names.inbox)?,
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let streams = [
        (&names.log, LOG_KEY, config.log_retention()),
        (&names.state, STATE_KEY, Retention::default()),
        (&names.control, CONTROL_KEY, config.control_retention()),
    ];
    for (queue, key, retention) in streams {
        let declared = ch
            .queue_declare(
                short(queue)?,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                stream_args(&retention),
            )
            .await;
        if let Err(e) = declared {
            if !is_precondition_failed(&e) {
                return Err(e);
            }
            tracing::warn!(%queue, error = %e, "stream exists with other arguments (retention changed?): using it as it is; change retention with a RabbitMQ policy");
            ch = conn.create_channel().await?;
            ch.queue_declare(
                short(queue)?,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        }
        ch.queue_bind(
            short(queue)?,
            short(&names.inbox)?,
            short(key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fixed_per_prefix() {
        let n = Names::new("imgate");
        let all: Vec<&str> = n.streams().iter().map(|s| s.0).collect();
        assert_eq!(all, ["imgate.log", "imgate.state", "imgate.control"]);
        let keys: Vec<&str> = n.streams().iter().map(|s| s.1).collect();
        assert_eq!(keys, [LOG_KEY, STATE_KEY, CONTROL_KEY]);
        let args = stream_args(&Retention {
            max_age: Some("7D".into()),
            max_bytes: Some(10),
            segment_bytes: None,
        });
        assert!(args.inner().contains_key("x-max-age"));
        assert!(args.inner().contains_key("x-max-length-bytes"));
        assert!(!stream_args(&Retention::default())
            .inner()
            .contains_key("x-max-age"));
    }
}
