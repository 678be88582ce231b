//! Credential and policy changes applied to the sessions of this node:
//! what `device_secrets` and `policy` report while following the store
//! (changes made on any node), turned into kicks. They report; this
//! module, above both, kicks: neither needs the session registry.

use imgate_core::ErrorCode;

use super::SessionRegistry;
use crate::device_secrets::Revoked;

/// Kick the sessions that logged in with credentials `revoked` took
/// away. A user's token revocation ends all of the user's sessions here
/// (the registry does not know which credential each used): devices with
/// a secret log in again at once.
pub fn kick_revoked(sessions: &SessionRegistry, revoked: &Revoked) {
    for (user, device) in &revoked.devices {
        let n = sessions.kick_device(user, device, ErrorCode::TokenError, "device secret revoked");
        if n > 0 {
            tracing::info!(%user, %device, "kicked a device whose secret was revoked");
        }
    }
    for user in &revoked.token_users {
        let n = sessions.kick_user(user, ErrorCode::TokenError, "tokens revoked");
        if n > 0 {
            tracing::info!(%user, sessions = n, "kicked sessions after a token revocation");
        }
    }
}

/// Kick the sessions of a user the administrator just forbade.
pub fn kick_forbidden(sessions: &SessionRegistry, user: &str) {
    let n = sessions.kick_user(
        user,
        ErrorCode::UserBlocked,
        "user forbidden by the administrator",
    );
    if n > 0 {
        tracing::info!(%user, sessions = n, "kicked a forbidden user's sessions");
    }
}
