//! The CONNECT phase: the first packet must be CONNECT (else close);
//! username = user id, password = token, client id = device id; refused
//! credentials get CONNACK 0x04 (3.1.1) / 0x86 (5), a client id that
//! cannot be a device id (with an any-device token) 0x02 / 0x85, an unsupported
//! protocol level 0x01 / 0x84, enhanced authentication 0x8C. A CONNECT
//! that declares MQTT 5 but is malformed or breaks the protocol gets its
//! reason (0x81, 0x82, 0x90) before the close (MQTT 5 §4.13); a bad 3.1.1
//! one is closed without a reply (3.1.1 §4.8).
//!
//! An empty client id with an any-device token gets a unique device id
//! from the login (`sessions::login`), which an MQTT 5 client receives as
//! the Assigned Client Identifier (§3.2.2.3.7, in the CONNACK the session
//! sends). MQTT 3.1.1 allows that only with clean session = 1
//! (§3.1.3.1): with clean session = 0 an empty id is refused with 0x02.

use crate::transport::ClientStream;
use futures_util::SinkExt;
use imgate_codecs::mqtt::{
    reason, ConnAck, Connect, MqttCodecError, MqttFramer, Packet, Properties, Version,
};
use imgate_core::pipeline::{Principal, Protocol};
use imgate_core::ErrorCode;
use tokio_util::codec::Framed;

use crate::sessions::SessionCtx;
use crate::sessions::{self, idle_buffers};

pub type Framed_ = Framed<ClientStream, MqttFramer>;

/// MQTT 5 "bad authentication method".
const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;

/// Read and check CONNECT; on success the client and its principal
/// (CONNACK not sent yet). On failure the refusal is sent and None.
pub async fn read_connect(conn: &mut Framed_, state: &SessionCtx) -> Option<(Connect, Principal)> {
    let timeout = state.login_timeout();
    let first = match tokio::time::timeout(timeout, idle_buffers::next_frame(conn)).await {
        Ok(Some(Ok(Packet::Connect(c)))) => c,
        Ok(Some(Err(
            MqttCodecError::UnsupportedProtocolLevel(_) | MqttCodecError::InvalidProtocolName,
        ))) => {
            // 3.1.1 §3.1.2.2: answer 0x01 and close; the level is unknown
            // so the CONNACK has the 3.1.1 form.
            let _ = conn
                .send(connack(false, reason::V4_UNACCEPTABLE_PROTOCOL_VERSION))
                .await;
            return None;
        }
        Ok(Some(Err(MqttCodecError::BadConnect {
            version: Version::V5,
            error,
        }))) => {
            // The framer now encodes in MQTT 5.
            let code = error.reason_code();
            tracing::debug!(%error, code, "mqtt: bad MQTT 5 CONNECT refused");
            let _ = conn.send(connack(false, code)).await;
            return None;
        }
        Ok(Some(Err(error))) => {
            tracing::debug!(%error, "mqtt: bad CONNECT; closing");
            return None;
        }
        _ => return None,
    };
    let v5 = first.version == Version::V5;
    let refuse = |v4: u8, v5code: u8| connack(false, if v5 { v5code } else { v4 });
    if first.properties.authentication_method().is_some() {
        let _ = conn
            .send(refuse(reason::V4_NOT_AUTHORIZED, BAD_AUTHENTICATION_METHOD))
            .await;
        return None;
    }
    if first.client_id.is_empty() && !first.clean_start && !v5 {
        let _ = conn
            .send(connack(false, reason::V4_IDENTIFIER_REJECTED))
            .await;
        return None;
    }
    let user = first.username.clone().unwrap_or_default();
    let token = first
        .password
        .as_ref()
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or_default()
        .to_owned();
    match sessions::login(state, Protocol::Mqtt, &user, &token, &first.client_id) {
        Ok(p) if !user.is_empty() => Some((first, p)),
        Err(e) if e.code == ErrorCode::InvalidParameter => {
            tracing::debug!(%user, client_id = %first.client_id, error = %e, "mqtt: client id refused");
            let _ = conn
                .send(refuse(
                    reason::V4_IDENTIFIER_REJECTED,
                    reason::CLIENT_ID_NOT_VALID,
                ))
                .await;
            None
        }
        Ok(_) | Err(_) => {
            tracing::debug!(%user, client_id = %first.client_id, "mqtt: login refused");
            let _ = conn
                .send(refuse(
                    reason::V4_BAD_USER_NAME_OR_PASSWORD,
                    reason::BAD_USER_NAME_OR_PASSWORD,
                ))
                .await;
            None
        }
    }
}

pub fn connack(session_present: bool, code: u8) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        code,
        properties: Properties::default(),
    })
}
