//! Stream negotiation (RFC 6120 §4–§7): stream header and features, SASL
//! PLAIN with the imgate token, then resource binding — or, instead of
//! binding, XEP-0198 resumption of an earlier session (of any node: see
//! `sm_cluster`).
//!
//! With a certificate configured (`tls_cert`/`tls_key`), on the plain TCP
//! listener the first features offer only STARTTLS, marked `<required/>` (RFC 6120 §5.3.1): `<starttls/>`
//! is answered with `<proceed/>`, the TLS handshake runs on the same TCP
//! connection and the client opens a new stream (§5.4.3.3), whose features
//! are the SASL ones. `<auth>` before TLS gets `<failure><encryption-required/>`
//! (RFC 6120 §6.4.1 / §6.5) and a `policy-violation` stream error; any
//! other element too. The direct-TLS listener (`xmpps`, XEP-0368) starts
//! encrypted and goes straight to SASL; so does XMPP over WebSocket
//! (RFC 7395: `wss` is its TLS, and a plain `ws` listener is plain like
//! every plain listener).
//!
//! Before SASL succeeds only `<auth>` (and `<abort>`) is accepted: any other
//! element is a `<not-authorized/>` stream error and the connection closes.
//! Without a certificate TLS is not offered, so `<starttls>` is refused with
//! `<failure/>` and the stream closes, as RFC 6120 §5.4.2.2 prescribes.

use base64::Engine;
use imgate_codecs::xmpp::{ns, Element, XmppEvent};
use imgate_core::pipeline::{Principal, Protocol};
use imgate_core::store::DeviceFeed;
use imgate_core::ErrorCode;

use super::connection::{ReadEnd, XmppConnection};
use super::errors::condition_element;
use super::scram;
use super::stream_management::SmGuard;
use super::XmppContext;
use crate::sessions::SessionCtx;
use crate::sessions::{self, SessionHandle};

/// SASL attempts before the connection is closed.
const MAX_AUTH_ATTEMPTS: u32 = 3;

/// A bound (or resumed) session, ready for stanzas.
pub struct Negotiated {
    pub principal: Principal,
    pub handle: SessionHandle,
    /// The device, attached to the store before the client learns it is
    /// bound: whatever is sent to it from then on reaches this session
    /// (on RabbitMQ, attaching declares the device's queue).
    pub feed: DeviceFeed,
    /// XEP-0198 resumption: the old session's state and the client's `h`.
    pub resumed: Option<(SmGuard, u32)>,
}

/// Why negotiation ended without a session (already told to the client).
pub struct Refused;

pub async fn negotiate(
    conn: &mut XmppConnection,
    state: &SessionCtx,
    ctx: &XmppContext,
) -> Result<Negotiated, Refused> {
    let domain = ctx.normalizer.domain().to_string();
    // Plain TCP only: a direct-TLS connection (`xmpps`, XEP-0368) is
    // encrypted already, and a WebSocket has no STARTTLS (`wss` is its TLS).
    if let Some(acceptor) = state.tls.as_ref().filter(|_| conn.can_starttls()) {
        open_stream(conn, &domain, starttls_features()).await?;
        starttls(conn, state, acceptor, &domain).await?;
    }
    open_stream(conn, &domain, sasl_features(state.config.xmpp_scram)).await?;
    let principal = authenticate(conn, state, &domain).await?;
    conn.authenticated();
    conn.restart_stream();
    open_stream(conn, &domain, bound_features()).await?;
    bind_or_resume(conn, state, ctx, principal).await
}

fn starttls_features() -> Element {
    Element::new("features", ns::STREAM)
        .child(Element::new("starttls", ns::TLS).child(Element::new("required", ns::TLS)))
}

/// The first element must be `<starttls/>`: proceed, handshake, and the
/// stream restarts over TLS.
async fn starttls(
    conn: &mut XmppConnection,
    state: &SessionCtx,
    acceptor: &crate::transport::TlsAcceptor,
    domain: &str,
) -> Result<(), Refused> {
    let el = match conn.read_event().await {
        Ok(XmppEvent::Stanza(el)) => el,
        Ok(XmppEvent::StreamClose) => {
            conn.close().await;
            return Err(Refused);
        }
        Ok(XmppEvent::StreamOpen(_)) => {
            conn.stream_error(domain, "bad-format", "stream already open")
                .await;
            return Err(Refused);
        }
        Err(end) => return Err(read_failed(conn, domain, end).await),
    };
    if el.is("starttls", ns::TLS) {
        if !conn.write_element(&Element::new("proceed", ns::TLS)).await {
            return Err(Refused);
        }
        let limit = state.login_timeout();
        if !conn.start_tls(acceptor, limit).await {
            tracing::debug!("xmpp STARTTLS handshake failed");
            return Err(Refused);
        }
        return Ok(());
    }
    if el.is("auth", ns::SASL) {
        let _ = conn
            .write_element(&sasl_failure(
                "encryption-required",
                "TLS is required: send <starttls/> first",
            ))
            .await;
    }
    conn.stream_error(
        domain,
        "policy-violation",
        "TLS is required: send <starttls/> first",
    )
    .await;
    Err(Refused)
}

/// The SASL mechanisms, strongest first: SCRAM (device secrets) only
/// with `xmpp_scram` (see `scram`), PLAIN always.
fn sasl_features(scram: bool) -> Element {
    let mut mechanisms = Element::new("mechanisms", ns::SASL);
    if scram {
        for hash in [scram::Hash::Sha256, scram::Hash::Sha1] {
            mechanisms =
                mechanisms.child(Element::new("mechanism", ns::SASL).text(hash.mechanism()));
        }
    }
    mechanisms = mechanisms.child(Element::new("mechanism", ns::SASL).text("PLAIN"));
    Element::new("features", ns::STREAM).child(mechanisms)
}

/// One SCRAM exchange after `<auth>`: the principal, or the failure to
/// send (Err(None): the connection ended or the client gave up).
async fn scram_exchange(
    conn: &mut XmppConnection,
    state: &SessionCtx,
    hash: scram::Hash,
    auth: &Element,
) -> Result<Principal, Option<Element>> {
    let fail = |e: scram::ScramError| Some(sasl_failure(e.0, &e.1));
    let first = scram::sasl_text(auth)
        .and_then(|t| scram::parse_client_first(&t))
        .map_err(fail)?;
    let exchange = scram::ServerExchange::new(hash, first, &super::random_id());
    let response = scram::challenge(conn, exchange.server_first())
        .await
        .ok_or(None)?;
    let client_final = scram::sasl_text(&response).map_err(fail)?;
    let user = exchange.user().to_string();
    let candidates = state.credentials.scram_candidates(&user, hash);
    let keys: Vec<scram::Keys> = candidates.iter().map(|(_, k)| k.clone()).collect();
    let (index, server_final) = match exchange.finish(&client_final, &keys) {
        Ok(found) => found,
        Err(e) => {
            state
                .metrics
                .auth_failure(Protocol::Xmpp, ErrorCode::AuthFailure);
            return Err(fail(e));
        }
    };
    let device = candidates[index].0.clone();
    let principal = sessions::login::login_verified_device(state, Protocol::Xmpp, &user, &device)
        .map_err(|e| {
        Some(sasl_failure(
            "not-authorized",
            &format!("{} {}", e.code.as_i32(), e.message),
        ))
    })?;
    if !conn.write_element(&scram::success(&server_final)).await {
        return Err(None);
    }
    Ok(principal)
}

fn bound_features() -> Element {
    Element::new("features", ns::STREAM)
        .child(Element::new("bind", ns::BIND))
        .child(Element::new("session", ns::SESSION).child(Element::new("optional", ns::SESSION)))
        .child(Element::new("sm", ns::SM))
}

/// Read the client's stream header, answer with ours and the features.
async fn open_stream(
    conn: &mut XmppConnection,
    domain: &str,
    features: Element,
) -> Result<(), Refused> {
    let header = match conn.read_event().await {
        Ok(XmppEvent::StreamOpen(h)) => h,
        Ok(_) => {
            conn.stream_error(domain, "bad-format", "expected a stream header")
                .await;
            return Err(Refused);
        }
        Err(end) => return Err(read_failed(conn, domain, end).await),
    };
    if let Some(to) = header.get_attr("to") {
        if !to.eq_ignore_ascii_case(domain) {
            conn.stream_error(domain, "host-unknown", &format!("this server is {domain}"))
                .await;
            return Err(Refused);
        }
    }
    let id = super::random_id();
    if !conn.write_header(domain, &id).await || !conn.write_element(&features).await {
        return Err(Refused);
    }
    Ok(())
}

/// Tell the client why reading failed (if it can still hear it).
pub async fn read_failed(conn: &mut XmppConnection, domain: &str, end: ReadEnd) -> Refused {
    if let ReadEnd::Codec(e) = end {
        conn.stream_error(domain, e.stream_condition(), &format!("2 {e}"))
            .await;
    }
    Refused
}

fn sasl_failure(condition: &str, text: &str) -> Element {
    Element::new("failure", ns::SASL)
        .child(Element::new(condition, ns::SASL))
        .child(Element::new("text", ns::SASL).text(text))
}

/// `authzid NUL authcid NUL password` (RFC 4616).
fn parse_plain(text: &str) -> Option<(String, String, String)> {
    let text = text.trim();
    let raw = if text == "=" {
        Vec::new()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?
    };
    let raw = String::from_utf8(raw).ok()?;
    let mut parts = raw.split('\0');
    let authzid = parts.next()?.to_string();
    let authcid = parts.next()?.to_string();
    let password = parts.next()?.to_string();
    if parts.next().is_some() {
        return None;
    }
    Some((authzid, authcid, password))
}

async fn authenticate(
    conn: &mut XmppConnection,
    state: &SessionCtx,
    domain: &str,
) -> Result<Principal, Refused> {
    let mut attempts = 0;
    loop {
        let el = match conn.read_event().await {
            Ok(XmppEvent::Stanza(el)) => el,
            Ok(XmppEvent::StreamClose) => {
                conn.close().await;
                return Err(Refused);
            }
            Ok(XmppEvent::StreamOpen(_)) => {
                conn.stream_error(domain, "bad-format", "stream already open")
                    .await;
                return Err(Refused);
            }
            Err(end) => return Err(read_failed(conn, domain, end).await),
        };
        if el.is("starttls", ns::TLS) {
            let _ = conn.write_element(&Element::new("failure", ns::TLS)).await;
            conn.close().await;
            return Err(Refused);
        }
        if el.is("abort", ns::SASL) {
            let _ = conn
                .write_element(&sasl_failure("aborted", "authentication aborted"))
                .await;
            continue;
        }
        if !el.is("auth", ns::SASL) {
            conn.stream_error(
                domain,
                "not-authorized",
                &format!(
                    "{} authenticate (SASL PLAIN) first",
                    ErrorCode::AuthFailure.as_i32()
                ),
            )
            .await;
            return Err(Refused);
        }
        attempts += 1;
        let scram_hash = el
            .get_attr("mechanism")
            .and_then(scram::Hash::from_mechanism)
            .filter(|_| state.config.xmpp_scram);
        let failure = if let Some(hash) = scram_hash {
            match scram_exchange(conn, state, hash, &el).await {
                Ok(p) => return Ok(p),
                Err(Some(failure)) => failure,
                Err(None) => return Err(Refused),
            }
        } else if el.get_attr("mechanism") != Some("PLAIN") {
            sasl_failure(
                "invalid-mechanism",
                "only the offered mechanisms: PLAIN (user id + token or device secret), SCRAM with xmpp_scram",
            )
        } else {
            match parse_plain(&el.text_content()) {
                None => sasl_failure("malformed-request", "2 bad PLAIN message"),
                Some((authzid, authcid, password)) => {
                    let own = format!("{authcid}@{domain}");
                    if !authzid.is_empty() && authzid != authcid && authzid != own {
                        sasl_failure("invalid-authzid", "244 cannot act as another user")
                    } else {
                        match sessions::login(state, Protocol::Xmpp, &authcid, &password, "") {
                            Ok(p) => {
                                if !conn.write_element(&Element::new("success", ns::SASL)).await {
                                    return Err(Refused);
                                }
                                return Ok(p);
                            }
                            Err(e) => sasl_failure(
                                "not-authorized",
                                &format!("{} {}", e.code.as_i32(), e.message),
                            ),
                        }
                    }
                }
            }
        };
        if !conn.write_element(&failure).await {
            return Err(Refused);
        }
        if attempts >= MAX_AUTH_ATTEMPTS {
            conn.stream_error(
                domain,
                "policy-violation",
                "244 too many authentication attempts",
            )
            .await;
            return Err(Refused);
        }
    }
}

/// Attach the device to the store (pending deliveries, then live).
async fn attach(
    conn: &mut XmppConnection,
    state: &SessionCtx,
    domain: &str,
    principal: &Principal,
) -> Result<DeviceFeed, Refused> {
    match state
        .store
        .attach_device(&principal.user_id, &principal.device_id)
        .await
    {
        Ok(feed) => Ok(feed),
        Err(e) => {
            tracing::warn!(error = %e, "xmpp: cannot attach device");
            conn.stream_error(domain, "internal-server-error", "4 store unavailable")
                .await;
            Err(Refused)
        }
    }
}

async fn bind_or_resume(
    conn: &mut XmppConnection,
    state: &SessionCtx,
    ctx: &XmppContext,
    principal: Principal,
) -> Result<Negotiated, Refused> {
    let domain = ctx.normalizer.domain().to_string();
    loop {
        let el = match conn.read_event().await {
            Ok(XmppEvent::Stanza(el)) => el,
            Ok(XmppEvent::StreamClose) => {
                conn.close().await;
                return Err(Refused);
            }
            Ok(XmppEvent::StreamOpen(_)) => {
                conn.stream_error(&domain, "bad-format", "stream already open")
                    .await;
                return Err(Refused);
            }
            Err(end) => return Err(read_failed(conn, &domain, end).await),
        };
        if el.is("iq", ns::CLIENT) && el.get_child("bind", ns::BIND).is_some() {
            // The resource is the token's device, whatever was asked for.
            let jid = format!("{}@{}/{}", principal.user_id, domain, principal.device_id);
            let handle = state.sessions.register(&principal);
            let feed = attach(conn, state, &domain, &principal).await?;
            let result = Element::new("iq", ns::CLIENT)
                .attr("type", "result")
                .attr_opt("id", el.get_attr("id"))
                .child(
                    Element::new("bind", ns::BIND).child(Element::new("jid", ns::BIND).text(jid)),
                );
            if !conn.write_element(&result).await {
                return Err(Refused);
            }
            return Ok(Negotiated {
                principal,
                handle,
                feed,
                resumed: None,
            });
        }
        if el.is("resume", ns::SM) {
            let previd = el.get_attr("previd").unwrap_or_default().to_string();
            let h = el.get_attr("h").and_then(|h| h.parse::<u32>().ok());
            if let Some(h) = h {
                // Kick a still-open old connection first, on this node or
                // (the login announcement) another: it lets go of the
                // state when it ends.
                let handle = state.sessions.register(&principal);
                let feed = attach(conn, state, &domain, &principal).await?;
                if let Some(guard) = ctx
                    .sm
                    .resume(&previd, &principal.user_id, &principal.device_id, h)
                    .await
                {
                    return Ok(Negotiated {
                        principal,
                        handle,
                        feed,
                        resumed: Some((guard, h)),
                    });
                }
            }
            let failed = Element::new("failed", ns::SM)
                .child(Element::new("item-not-found", ns::STANZA_ERRORS));
            if !conn.write_element(&failed).await {
                return Err(Refused);
            }
            continue;
        }
        if el.is("enable", ns::SM) {
            let failed = Element::new("failed", ns::SM)
                .child(Element::new("unexpected-request", ns::STANZA_ERRORS));
            if !conn.write_element(&failed).await {
                return Err(Refused);
            }
            continue;
        }
        if el.is("iq", ns::CLIENT) {
            let reply = Element::new("iq", ns::CLIENT)
                .attr("type", "error")
                .attr_opt("id", el.get_attr("id"))
                .child(condition_element(
                    "not-authorized",
                    "auth",
                    "244 bind a resource first",
                ));
            if !conn.write_element(&reply).await {
                return Err(Refused);
            }
            continue;
        }
        conn.stream_error(&domain, "not-authorized", "244 bind a resource first")
            .await;
        return Err(Refused);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message_parts() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("\0alice\0tok");
        assert_eq!(
            parse_plain(&b64),
            Some((String::new(), "alice".into(), "tok".into()))
        );
        assert_eq!(parse_plain("!!"), None);
        let two = base64::engine::general_purpose::STANDARD.encode("alice\0tok");
        assert_eq!(parse_plain(&two), None);
    }
}
