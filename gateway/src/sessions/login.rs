//! Login, the same for every protocol (DESIGN §5.1). The credential is a
//! token or a device secret:
//! - a token must be valid, be the user's, not be revoked (the user's
//!   token watermark, `device_secrets`), and be bound to the device that
//!   logs in — or be an any-device token (client id `*`), whose device is
//!   the client's own id;
//! - anything that is not a valid token is checked as a device secret of
//!   (user, client id); with no client id (XMPP SASL), as a secret of any
//!   of the user's devices, which then is the device.
//!
//! An empty client id takes the token's device; with an any-device token
//! the gateway assigns a unique one (`auto-<hex>`): MQTT sends it back
//! (MQTT 5 Assigned Client Identifier), XMPP binds it as the resource. PB
//! has no way to tell the client, so it must name its device there.

use imgate_core::model::Platform;
use imgate_core::pipeline::{Principal, Protocol};
use imgate_core::{ErrorCode, ImError};

use super::SessionCtx;
use crate::device_secrets::{self, SECRET_PREFIX};
use crate::token::{self, Claims};

/// Prefix of the device ids the gateway assigns.
pub const ASSIGNED_DEVICE_PREFIX: &str = "auto-";

/// Check `credential` for `user_id` on `client_id` (empty = the
/// credential's own device). Codes: 6 token invalid, expired or revoked,
/// 244 credential of another user or device, 245 user forbidden, 251 a
/// client id the gateway does not take as a device id.
pub fn login(
    state: &SessionCtx,
    protocol: Protocol,
    user_id: &str,
    credential: &str,
    client_id: &str,
) -> Result<Principal, ImError> {
    let result = check_login(state, protocol, user_id, credential, client_id);
    match &result {
        Ok(p) => tracing::info!(
            protocol = protocol.name(),
            user = %p.user_id,
            device = %p.device_id,
            "login"
        ),
        Err(e) => refused(state, protocol, user_id, client_id, e),
    }
    result
}

/// An HTTP request's bearer token: the same checks as every protocol's
/// login (signature, expiry, revocation, the device binding, the user's
/// status), counted and logged when refused; a request is not a session,
/// so success is not logged. An any-device token's HTTP clients share the
/// device `http`.
pub fn bearer(state: &SessionCtx, token: &str) -> Result<Principal, ImError> {
    let claims = verify_token(state, token);
    let user = claims
        .as_ref()
        .map(|c| c.user_id.clone())
        .unwrap_or_default();
    let result = claims.and_then(|c| {
        let device = if c.any_device() { "http" } else { "" };
        check_login(state, Protocol::Http, &c.user_id, token, device)
    });
    if let Err(e) = &result {
        refused(state, Protocol::Http, &user, "", e);
    }
    result
}

fn refused(state: &SessionCtx, protocol: Protocol, user_id: &str, client_id: &str, e: &ImError) {
    state.metrics.auth_failure(protocol, e.code);
    if login_log_budget() {
        tracing::info!(
            protocol = protocol.name(),
            user = %user_id,
            client_id = %client_id,
            code = e.code.as_i32(),
            reason = %e.message,
            "login refused"
        );
    }
}

/// At most this many refused logins are logged per second (the rest are
/// counted in `imgate_auth_failures_total`): a credential-stuffing flood
/// cannot flood the log.
const LOGIN_LOGS_PER_SEC: u64 = 20;

fn login_log_budget() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static WINDOW: AtomicU64 = AtomicU64::new(0);
    static USED: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(token::now_secs()).unwrap_or(0);
    if WINDOW.swap(now, Ordering::Relaxed) != now {
        USED.store(0, Ordering::Relaxed);
    }
    USED.fetch_add(1, Ordering::Relaxed) < LOGIN_LOGS_PER_SEC
}

/// Log in `device` of `user` whose device secret the caller already
/// verified without seeing it (an XMPP SCRAM proof): the same policy
/// check and log lines as [`login`].
pub fn login_verified_device(
    state: &SessionCtx,
    protocol: Protocol,
    user_id: &str,
    device_id: &str,
) -> Result<Principal, ImError> {
    let result = state.policy.book.check_login(user_id).map(|()| Principal {
        user_id: user_id.to_string(),
        device_id: device_id.to_string(),
        platform: Platform::Unknown,
        protocol,
        admin: false,
    });
    match &result {
        Ok(p) => {
            tracing::info!(protocol = protocol.name(), user = %p.user_id, device = %p.device_id, "login")
        }
        Err(e) => state.metrics.auth_failure(protocol, e.code),
    }
    result
}

fn check_login(
    state: &SessionCtx,
    protocol: Protocol,
    user_id: &str,
    credential: &str,
    client_id: &str,
) -> Result<Principal, ImError> {
    let (device_id, platform) = match verify_token(state, credential) {
        Ok(claims) => token_device(protocol, user_id, client_id, claims)?,
        Err(token_error) => (
            secret_device(state, user_id, client_id, credential, token_error)?,
            Platform::Unknown,
        ),
    };
    state.policy.book.check_login(user_id)?;
    Ok(Principal {
        user_id: user_id.to_string(),
        device_id,
        platform,
        protocol,
        admin: false,
    })
}

/// A token's signature and expiry, and that its user did not revoke it
/// (every protocol, HTTP bearer tokens included).
pub fn verify_token(state: &SessionCtx, credential: &str) -> Result<Claims, ImError> {
    let claims = state.tokens.verify(credential, token::now_secs())?;
    if state
        .credentials
        .token_revoked(&claims.user_id, claims.issued_ms)
    {
        return Err(ImError::new(ErrorCode::TokenError, "token error: revoked"));
    }
    Ok(claims)
}

/// The device and platform a valid token logs `client_id` in as.
fn token_device(
    protocol: Protocol,
    user_id: &str,
    client_id: &str,
    claims: Claims,
) -> Result<(String, Platform), ImError> {
    if claims.user_id != user_id {
        return Err(ImError::new(
            ErrorCode::AuthFailure,
            "token belongs to another user",
        ));
    }
    let platform = Platform::from_i32(claims.platform);
    if !claims.any_device() {
        if !client_id.is_empty() && claims.client_id != client_id {
            return Err(ImError::new(
                ErrorCode::AuthFailure,
                "token belongs to another device",
            ));
        }
        return Ok((claims.client_id, platform));
    }
    if client_id.is_empty() {
        if protocol == Protocol::Pb {
            return Err(ImError::new(
                ErrorCode::InvalidParameter,
                "an any-device token needs a client id",
            ));
        }
        return Ok((assigned_device_id()?, platform));
    }
    check_client_id(client_id)?;
    Ok((client_id.to_string(), platform))
}

/// A client-chosen device id must be usable as one.
fn check_client_id(client_id: &str) -> Result<(), ImError> {
    if client_id.len() > device_secrets::MAX_ID_BYTES
        || client_id.chars().any(char::is_control)
        || client_id == token::ANY_DEVICE
    {
        return Err(ImError::new(
            ErrorCode::InvalidParameter,
            format!(
                "client id must be 1..{} bytes, not `*`, no control characters",
                device_secrets::MAX_ID_BYTES
            ),
        ));
    }
    Ok(())
}

/// A device id for a client that gave none with an any-device token.
fn assigned_device_id() -> Result<String, ImError> {
    crate::secrets::random_hex(12)
        .map(|hex| format!("{ASSIGNED_DEVICE_PREFIX}{hex}"))
        .map_err(|e| ImError::new(ErrorCode::ServerError, e.to_string()))
}

/// The device whose secret `credential` is, or the login's error: the
/// token's (`token_error`) unless the credential has the form of a
/// device secret.
fn secret_device(
    state: &SessionCtx,
    user_id: &str,
    client_id: &str,
    credential: &str,
    token_error: ImError,
) -> Result<String, ImError> {
    let device = (!client_id.is_empty()).then_some(client_id);
    if let Some(found) = state.credentials.check_secret(user_id, device, credential) {
        return Ok(found);
    }
    if credential.trim().starts_with(SECRET_PREFIX) {
        return Err(ImError::new(
            ErrorCode::AuthFailure,
            "device secret not valid for this user and device",
        ));
    }
    Err(token_error)
}
