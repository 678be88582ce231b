//! The WebSocket transport (DESIGN §5.6): one listener (`ws`, and `wss`
//! with a certificate) serves `/mqtt`, `/xmpp-websocket` (RFC 7395) and
//! `/pb`. After the opening handshake ([`super::ws_upgrade`]) the connection is a
//! [`ClientStream::Ws`] ([`super::ws_stream::WsStream`]) and the protocol's usual
//! session runs on it: transports are apart from codecs.
//!
//! Bounds: the request head ([`super::ws_upgrade::MAX_HEAD`], the login timeout),
//! one message and one frame at most the protocol's own limit (MQTT
//! `mqtt_max_packet`, PB `pb_max_frame`, XMPP the stanza limit), a read
//! buffer of [`READ_BUFFER`] bytes and a write buffer of at most
//! [`MAX_WRITE_BUFFER`] beyond one message.

use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::ws_stream::{WsFraming, WsStream};
use super::{ws_upgrade as upgrade, ClientStream};
use crate::config::Config;
use crate::listeners::Service;

/// Bytes tungstenite reads from the socket at a time.
pub const READ_BUFFER: usize = 8 * 1024;
/// Bytes written out before a flush is forced.
const WRITE_BUFFER: usize = 16 * 1024;
/// Unsent bytes a connection may hold beyond one message.
pub const MAX_WRITE_BUFFER: usize = 1 << 20;

/// The largest message a client may send on `service`.
fn max_message(service: Service, config: &Config) -> usize {
    match service {
        Service::Mqtt => config.mqtt_max_packet,
        Service::Pb => config.pb_max_frame,
        _ => imgate_codecs::xmpp::DEFAULT_MAX_STANZA,
    }
    .max(1024)
}

/// Run the opening handshake on `stream` within `limit`: the protocol the
/// path asks for and the connection as a WebSocket stream, or `None`
/// (refused with an HTTP error, or gone).
pub async fn accept(
    mut stream: ClientStream,
    config: &Config,
    limit: Duration,
) -> Option<(Service, ClientStream)> {
    let (accepted, rest) = upgrade::handshake(&mut stream, limit).await?;
    let max = max_message(accepted.service, config);
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max + MAX_WRITE_BUFFER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let ws =
        WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(ws_config)).await;
    let framing = match accepted.service {
        Service::Mqtt => WsFraming::Mqtt,
        Service::Pb => WsFraming::Pb,
        _ => WsFraming::Xmpp,
    };
    Some((
        accepted.service,
        ClientStream::Ws(Box::new(WsStream::new(ws, framing))),
    ))
}
