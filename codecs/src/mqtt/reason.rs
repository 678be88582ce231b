//! MQTT reason and return codes as named constants (MQTT 5 §2.4, MQTT
//! 3.1.1 §3.2.2.3 / §3.9.3), and the DESIGN §4 mapping from imgate error
//! codes to MQTT 5 reason codes.

use imgate_core::ErrorCode;

pub const SUCCESS: u8 = 0x00;
/// SUBACK granted QoS 1/2 use the QoS as the code.
pub const GRANTED_QOS_1: u8 = 0x01;
pub const DISCONNECT_WITH_WILL: u8 = 0x04;
pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
pub const UNSPECIFIED_ERROR: u8 = 0x80;
pub const MALFORMED_PACKET: u8 = 0x81;
pub const PROTOCOL_ERROR: u8 = 0x82;
pub const IMPLEMENTATION_SPECIFIC: u8 = 0x83;
pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
pub const NOT_AUTHORIZED: u8 = 0x87;
pub const SERVER_UNAVAILABLE: u8 = 0x88;
pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
pub const SESSION_TAKEN_OVER: u8 = 0x8E;
pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
pub const TOPIC_NAME_INVALID: u8 = 0x90;
pub const PACKET_ID_IN_USE: u8 = 0x91;
pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
pub const PACKET_TOO_LARGE: u8 = 0x95;
pub const QUOTA_EXCEEDED: u8 = 0x97;
pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;

/// MQTT 3.1.1 CONNACK return codes (§3.2.2.3).
pub const V4_UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
pub const V4_IDENTIFIER_REJECTED: u8 = 0x02;
pub const V4_BAD_USER_NAME_OR_PASSWORD: u8 = 0x04;
pub const V4_NOT_AUTHORIZED: u8 = 0x05;
/// MQTT 3.1.1 SUBACK failure.
pub const V4_SUBACK_FAILURE: u8 = 0x80;

/// The MQTT 5 reason code for a rejected send (DESIGN §4): 0x87 for auth
/// and rights, 0x97 for rate limits, 0x99 for invalid payloads, 0x90 for
/// topics, 0x80/0x83 for the rest.
pub fn for_error_code(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::Success => SUCCESS,
        ErrorCode::TokenError
        | ErrorCode::KickedOff
        | ErrorCode::UserForbidden
        | ErrorCode::NotInGroup
        | ErrorCode::ApiNotSigned
        | ErrorCode::SignExpired
        | ErrorCode::AuthFailure
        | ErrorCode::UserBlocked
        | ErrorCode::NoRight => NOT_AUTHORIZED,
        ErrorCode::OverFrequency => QUOTA_EXCEEDED,
        ErrorCode::InvalidData
        | ErrorCode::InvalidMessage
        | ErrorCode::InvalidParameter
        | ErrorCode::SensitiveWord => PAYLOAD_FORMAT_INVALID,
        ErrorCode::NotExist => TOPIC_NAME_INVALID,
        ErrorCode::ServerError | ErrorCode::Timeout => UNSPECIFIED_ERROR,
        ErrorCode::NotImplemented => IMPLEMENTATION_SPECIFIC,
    }
}
