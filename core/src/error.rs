//! Error codes shared by every protocol (DESIGN §4, contract).
//!
//! The numeric value is what PB `code`, JSON `code` and the MQTT/XMPP error
//! texts carry; each protocol maps it to its own form (HTTP status, MQTT 5
//! reason code, XMPP condition) in the gateway.

use std::fmt;
use std::time::Duration;

/// The contract's numeric error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorCode {
    Success = 0,
    InvalidData = 2,
    ServerError = 4,
    TokenError = 6,
    KickedOff = 7,
    UserForbidden = 8,
    NotInGroup = 9,
    InvalidMessage = 10,
    ApiNotSigned = 239,
    SensitiveWord = 242,
    SignExpired = 243,
    AuthFailure = 244,
    UserBlocked = 245,
    NoRight = 248,
    Timeout = 249,
    OverFrequency = 250,
    InvalidParameter = 251,
    NotExist = 253,
    NotImplemented = 254,
}

impl ErrorCode {
    /// Every code, for table-driven tests and metrics labels.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::Success,
        ErrorCode::InvalidData,
        ErrorCode::ServerError,
        ErrorCode::TokenError,
        ErrorCode::KickedOff,
        ErrorCode::UserForbidden,
        ErrorCode::NotInGroup,
        ErrorCode::InvalidMessage,
        ErrorCode::ApiNotSigned,
        ErrorCode::SensitiveWord,
        ErrorCode::SignExpired,
        ErrorCode::AuthFailure,
        ErrorCode::UserBlocked,
        ErrorCode::NoRight,
        ErrorCode::Timeout,
        ErrorCode::OverFrequency,
        ErrorCode::InvalidParameter,
        ErrorCode::NotExist,
        ErrorCode::NotImplemented,
    ];

    /// The numeric value carried on the wire.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code for a wire value, if it is one of the contract's.
    pub fn from_i32(v: i32) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.as_i32() == v)
    }

    /// A short, stable, human-readable name (also the metrics label).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Success => "success",
            ErrorCode::InvalidData => "invalid_data",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TokenError => "token_error",
            ErrorCode::KickedOff => "kicked_off",
            ErrorCode::UserForbidden => "user_forbidden",
            ErrorCode::NotInGroup => "not_in_group",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::ApiNotSigned => "api_not_signed",
            ErrorCode::SensitiveWord => "sensitive_word",
            ErrorCode::SignExpired => "sign_expired",
            ErrorCode::AuthFailure => "auth_failure",
            ErrorCode::UserBlocked => "user_blocked",
            ErrorCode::NoRight => "no_right",
            ErrorCode::Timeout => "timeout",
            ErrorCode::OverFrequency => "over_frequency",
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::NotExist => "not_exist",
            ErrorCode::NotImplemented => "not_implemented",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_i32(), self.name())
    }
}

/// A rejection with its contract code, a message for humans, and (for rate
/// limits) when to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ImError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ImError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ImError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn server(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServerError, message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameter, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_i32(c.as_i32()), Some(c));
            assert!(seen.insert(c.as_i32()), "duplicate code {c}");
        }
        assert_eq!(ErrorCode::from_i32(1), None);
        assert_eq!(ErrorCode::SensitiveWord.as_i32(), 242);
        assert_eq!(ErrorCode::OverFrequency.as_i32(), 250);
    }
}
