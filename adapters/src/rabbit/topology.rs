//! Names and idempotent declarations of the broker objects (DESIGN §7).
//!
//! - `<prefix>.log`: a durable **stream**, every record of the store (messages,
//!   recalls, group changes, node markers): the source of truth that every
//!   node indexes.
//! - `<prefix>.inbox`: a durable **direct exchange**. The log is bound to it
//!   with the key [`LOG_KEY`]; each device queue with its user's key
//!   `u.<user>`. A message is published once with routing key `log` and a `CC`
//!   header listing its recipients' keys, so the log and every registered
//!   device of every recipient receive it in one publish with one confirm.
//! - `<prefix>.dev.<user>.<device>`: one durable **quorum queue** per device,
//!   with `x-expires` (idle devices disappear) and `x-max-length` +
//!   `x-overflow` (bounded, explicit overflow policy).
//! - MQTT cluster bus (see `mqtt_bus`): the inbox keys `mqtt` (one
//!   exclusive queue per running node, `<prefix>.mqtt.node.<node>.<boot>`)
//!   and `mqtt-retained` (the durable stream `<prefix>.mqtt-retained`).
//!
//! Names and keys are AMQP short strings (at most 255 bytes): long or
//! unusual ids are escaped and, when too long, shortened with a hash.
//! Deliveries are checked against their recipients, so a hash collision
//! can never hand a message to the wrong user.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Consumer, ExchangeKind};

use super::config::RabbitConfig;

/// Routing key binding the log stream to the inbox exchange. User keys all
/// start with `u.`, so no user can collide with it.
pub const LOG_KEY: &str = "log";
const MAX_SHORT: usize = 255;

/// Close a consuming channel, and only then drop its consumer.
///
/// The order matters. A consumer dropped while its channel is open makes
/// lapin send `basic.cancel` from a background task; if that frame leaves
/// after our `channel.close`, RabbitMQ closes the whole connection
/// (`CHANNEL_ERROR - expected 'channel.open'`) and every other channel on
/// it fails. Once the close is done, lapin knows the channel is gone and
/// sends nothing more on it.
pub async fn close_consuming(ch: &Channel, consumer: Consumer, reason: &str) {
    let _ = ch.close(200, ShortString::from(reason.to_string())).await;
    drop(consumer);
}

/// The names of one store's broker objects.
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: String,
    pub log: String,
    pub inbox: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_string(),
            log: format!("{prefix}.log"),
            inbox: format!("{prefix}.inbox"),
        }
    }

    /// The queue of one device.
    pub fn device_queue(&self, user: &str, device: &str) -> String {
        let full = format!("{}.dev.{}.{}", self.prefix, escape(user), escape(device));
        shorten(full, &format!("{user}\u{0}{device}"))
    }
}

/// The routing key of a user's devices.
pub fn user_key(user: &str) -> String {
    shorten(format!("u.{user}"), user)
}

/// `.` and `%` escaped so that `user.device` boundaries stay unambiguous.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '.' => out.push_str("%2E"),
            '%' => out.push_str("%25"),
            c if c.is_control() => out.push_str(&format!("%{:02X}", c as u32 & 0xff)),
            c => out.push(c),
        }
    }
    out
}

/// Fit a name into a short string: keep a prefix of it and append a hash
/// of `key` (FNV-1a, stable across builds) when it is too long.
fn shorten(full: String, key: &str) -> String {
    if full.len() <= MAX_SHORT {
        return full;
    }
    let mut cut = 200;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}#{:016x}", &full[..cut], fnv1a(key.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A short string from a name built by this module (always ≤ 255 bytes);
/// anything else is an error, never a panic.
pub fn short(s: &str) -> Result<ShortString, lapin::Error> {
    ShortString::try_new(s).map_err(|e| lapin::Error::from(std::io::Error::other(e.to_string())))
}

/// Declare the exchange and the log stream and bind them. Safe to repeat
/// (on every connect): same names, same arguments.
pub async fn declare_core(ch: &Channel, names: &Names) -> Result<(), lapin::Error> {
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
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    ch.queue_declare(
        short(&names.log)?,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    ch.queue_bind(
        short(&names.log)?,
        short(&names.inbox)?,
        short(LOG_KEY)?,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// The arguments of a device queue.
pub fn device_queue_args(config: &RabbitConfig) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let expires = i64::try_from(config.device_expires.as_millis()).unwrap_or(i64::MAX);
    args.insert("x-expires".into(), AMQPValue::LongLongInt(expires));
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(i64::from(config.device_max_length)),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString(config.overflow.as_arg().into()),
    );
    args
}

/// Declare (idempotently) and bind the queue of one device.
pub async fn declare_device(
    ch: &Channel,
    names: &Names,
    config: &RabbitConfig,
    queue: &str,
    user: &str,
) -> Result<(), lapin::Error> {
    ch.queue_declare(
        short(queue)?,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        device_queue_args(config),
    )
    .await?;
    ch.queue_bind(
        short(queue)?,
        short(&names.inbox)?,
        short(&user_key(user))?,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unambiguous_and_short() {
        let n = Names::new("imgate");
        assert_eq!(n.device_queue("bob", "phone"), "imgate.dev.bob.phone");
        assert_ne!(n.device_queue("a.b", "c"), n.device_queue("a", "b.c"));
        let long = "x".repeat(400);
        let q = n.device_queue(&long, "d");
        assert!(q.len() <= MAX_SHORT);
        assert_ne!(q, n.device_queue(&long, "e"));
        assert!(user_key(&long).len() <= MAX_SHORT);
        assert!(user_key(&"é".repeat(300)).len() <= MAX_SHORT);
        assert_ne!(user_key("log"), LOG_KEY);
    }
}
