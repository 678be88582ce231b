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

use imgate_codecs::mqtt::{reason, ConnAck, Connect, MqttCodecError, Packet, Properties, Version};
use imgate_core::ErrorCode;
use imgate_core::ImError;

/// MQTT 5 "bad authentication method".
const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;

/// The answer to a first packet that could not be decoded as CONNECT, if
/// it gets one (the version to encode it in, the CONNACK); None: close
/// without a reply.
pub fn bad_connect(error: &MqttCodecError) -> Option<(Version, Packet)> {
    match error {
        MqttCodecError::UnsupportedProtocolLevel(_) | MqttCodecError::InvalidProtocolName => {
            // 3.1.1 §3.1.2.2: answer 0x01 and close; the level is unknown
            // so the CONNACK has the 3.1.1 form.
            Some((
                Version::V4,
                connack(false, reason::V4_UNACCEPTABLE_PROTOCOL_VERSION),
            ))
        }
        MqttCodecError::BadConnect {
            version: Version::V5,
            error,
        } => {
            let code = error.reason_code();
            tracing::debug!(%error, code, "mqtt: bad MQTT 5 CONNECT refused");
            Some((Version::V5, connack(false, code)))
        }
        error => {
            tracing::debug!(%error, "mqtt: bad CONNECT; closing");
            None
        }
    }
}

/// Check a CONNECT before its credentials are: the refusal, if any.
pub fn refusal(first: &Connect) -> Option<Packet> {
    let v5 = first.version == Version::V5;
    if first.properties.authentication_method().is_some() {
        return Some(refuse(
            v5,
            reason::V4_NOT_AUTHORIZED,
            BAD_AUTHENTICATION_METHOD,
        ));
    }
    if first.client_id.is_empty() && !first.clean_start && !v5 {
        return Some(connack(false, reason::V4_IDENTIFIER_REJECTED));
    }
    None
}

/// The user (username) and token (password) of a CONNECT.
pub fn credentials(first: &Connect) -> (String, String) {
    let user = first.username.clone().unwrap_or_default();
    let token = first
        .password
        .as_ref()
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or_default()
        .to_owned();
    (user, token)
}

/// The CONNACK refusing a login `sessions::login` refused.
pub fn login_refused(first: &Connect, e: &ImError) -> Packet {
    let v5 = first.version == Version::V5;
    if e.code == ErrorCode::InvalidParameter {
        tracing::debug!(client_id = %first.client_id, error = %e, "mqtt: client id refused");
        return refuse(
            v5,
            reason::V4_IDENTIFIER_REJECTED,
            reason::CLIENT_ID_NOT_VALID,
        );
    }
    tracing::debug!(client_id = %first.client_id, "mqtt: login refused");
    refuse(
        v5,
        reason::V4_BAD_USER_NAME_OR_PASSWORD,
        reason::BAD_USER_NAME_OR_PASSWORD,
    )
}

fn refuse(v5: bool, v4code: u8, v5code: u8) -> Packet {
    connack(false, if v5 { v5code } else { v4code })
}

pub fn connack(session_present: bool, code: u8) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        code,
        properties: Properties::default(),
    })
}
