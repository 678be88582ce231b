//! imgate-codecs: the wire protocols of imgate, as pure code — bytes ↔
//! frames ↔ the core model — with no sockets (DESIGN §1).
//!
//! Each protocol is one module with a *framer* (a tokio-util
//! `Decoder`/`Encoder`: `Ok(None)` means "need more bytes", the size limit is
//! checked from the header) and a *normalizer* (frame body ↔
//! `imgate_core::model`, pure and synchronous). Being I/O-free, every codec
//! is testable with golden fixtures and fuzzable.
//!
//! Layout:
//! - [`pb`]: the private binary protobuf protocol (DESIGN §5.2).
//! - [`xmpp`]: XMPP-lite stanzas (DESIGN §5.4).
//! - [`mqtt`]: MQTT 3.1.1 and 5 packets and the IM topic namespace (§5.3).
//! - [`proxy`]: the PROXY protocol v1/v2 header a TCP load balancer sends.
#![forbid(unsafe_code)]

pub mod mqtt;
pub mod pb;
pub mod proxy;
pub mod xmpp;
