//! Token login, the same for every protocol: the token must be valid, be
//! the user's, and be bound to the device (client id) that logs in.

use imgate_core::model::Platform;
use imgate_core::pipeline::{Principal, Protocol};
use imgate_core::{ErrorCode, ImError};

use crate::state::AppState;
use crate::token;

/// Check `token` for `user_id` on `client_id` (empty = the token's own
/// device). Codes: 6 token invalid/expired, 244 token of another user or
/// device, 245 user forbidden.
pub fn login(
    state: &AppState,
    protocol: Protocol,
    user_id: &str,
    token_str: &str,
    client_id: &str,
) -> Result<Principal, ImError> {
    let claims = state.tokens.verify(token_str, token::now_secs())?;
    if claims.user_id != user_id {
        return Err(ImError::new(
            ErrorCode::AuthFailure,
            "token belongs to another user",
        ));
    }
    if !client_id.is_empty() && claims.client_id != client_id {
        return Err(ImError::new(
            ErrorCode::AuthFailure,
            "token belongs to another device",
        ));
    }
    state.policy.book.check_login(&claims.user_id)?;
    Ok(Principal {
        user_id: claims.user_id,
        device_id: claims.client_id,
        platform: Platform::from_i32(claims.platform),
        protocol,
        admin: false,
    })
}
