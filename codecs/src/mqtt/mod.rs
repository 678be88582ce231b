//! MQTT 3.1.1 and 5 (DESIGN §5.3): a compact codec of our own plus the IM
//! namespace normalizer. No sockets.
//!
//! Why our own codec rather than rumqttd's `protocol` module or rumqttc's
//! `mqttbytes`: both come inside crates that pull a broker or client stack
//! (tokio full, rustls, flume, ...) into a build on two slow cores, and
//! rumqttd's parsers use `unreachable!` on input paths. The packet set is
//! small; this codec keeps rumqttd's shape (one packet model, the
//! version a parameter, max size checked from the fixed header) and is
//! fuzzed (`codecs/fuzz/fuzz_targets/mqtt_decode.rs`).
//!
//! Layout, bytes at the top:
//! - [`wire`]: integers, variable byte integers, strings, binary.
//! - [`framer`]: [`MqttFramer`], tokio-util `Decoder`/`Encoder`.
//! - [`packet`]: the [`Packet`] model; [`properties`]: MQTT 5 properties.
//! - [`decode`] / [`encode`]: packet bodies per version.
//! - [`topic`]: topic name/filter validity and wildcard matching.
//! - [`reason`]: reason codes and the DESIGN §4 mapping.
//! - [`normalizer`]: `im/send` / `im/inbox` / `im/ack` bodies ↔ core model.
//! - [`error`]: [`MqttCodecError`] with its DISCONNECT reason code.
//!
//! ```
//! use bytes::BytesMut;
//! use imgate_codecs::mqtt::{MqttFramer, Packet, Version};
//! use tokio_util::codec::Decoder;
//!
//! let mut framer = MqttFramer::new(1024);
//! // CONNECT, MQTT 3.1.1, clean session, keepalive 60, client id "d1"
//! let mut wire = BytesMut::from(&b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02d1"[..]);
//! let Some(Packet::Connect(c)) = framer.decode(&mut wire)? else { panic!() };
//! assert_eq!((c.version, c.client_id.as_str()), (Version::V4, "d1"));
//! # Ok::<(), imgate_codecs::mqtt::MqttCodecError>(())
//! ```

pub mod decode;
pub mod encode;
pub mod error;
pub mod framer;
pub mod normalizer;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;
pub mod wire;

pub use error::MqttCodecError;
pub use framer::{encoded_len, MqttFramer, DEFAULT_MAX_PACKET};
pub use normalizer::{MqttBodyError, MqttNormalizer};
pub use packet::*;
pub use properties::{Properties, Property};
