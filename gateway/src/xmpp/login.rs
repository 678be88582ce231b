//! The XMPP login phase on the session driver (RFC 6120 §4–§7): stream
//! header and features, STARTTLS, SASL (PLAIN with the imgate token or a
//! device secret; SCRAM with device secrets), then resource binding — or,
//! instead of binding, XEP-0198 resumption of an earlier session (of any
//! node: see `sm_cluster`). Each frame is one step of [`Login`]; the
//! driver holds the whole phase to the login deadline.
//!
//! With a certificate configured (`tls_cert`/`tls_key`), on the plain TCP
//! listener the first features offer only STARTTLS, marked `<required/>`
//! (RFC 6120 §5.3.1): `<starttls/>` is answered with `<proceed/>`, the TLS
//! handshake runs on the same TCP connection (the driver's
//! [`LoginStep::StartTls`]) and the client opens a new stream
//! (§5.4.3.3), whose features are the SASL ones. `<auth>` before TLS gets
//! `<failure><encryption-required/>` (RFC 6120 §6.4.1 / §6.5) and a
//! `policy-violation` stream error; any other element too. The
//! direct-TLS listener (`xmpps`, XEP-0368) starts encrypted and goes
//! straight to SASL; so does XMPP over WebSocket (RFC 7395: `wss` is its
//! TLS, and a plain `ws` listener is plain like every plain listener).
//!
//! Before SASL succeeds only `<auth>` (and `<abort>`) is accepted: any other
//! element is a `<not-authorized/>` stream error and the connection closes.
//! Without a certificate TLS is not offered, so `<starttls>` is refused with
//! `<failure/>` and the stream closes, as RFC 6120 §5.4.2.2 prescribes.
//!
//! The login ends with the bind (or resume) request: the driver then
//! registers the session (kicking what it replaces, so an old connection
//! lets go of the SM state a resumption takes over) and attaches the
//! device to the store before the client learns it is bound — whatever
//! is sent to it from then on reaches this session.

use base64::Engine;
use imgate_codecs::xmpp::{ns, Element, XmppEvent};
use imgate_core::pipeline::{Principal, Protocol};
use imgate_core::{ErrorCode, ImError};

use super::errors::condition_element;
use super::protocol::Xmpp;
use super::reader::XmppIn;
use super::scram;
use crate::sessions::driver::{Credentials, LoginStep};

/// SASL attempts before the connection is closed.
const MAX_AUTH_ATTEMPTS: u32 = 3;

/// Where the login is.
pub enum Login {
    /// Expecting the client's stream header; these features answer it.
    Header(Features),
    /// Expecting `<starttls/>`.
    StartTls,
    /// Expecting `<auth>` (attempts so far).
    Auth { attempts: u32 },
    /// Expecting the SCRAM `<response>` to our challenge.
    Scram {
        exchange: Box<scram::ServerExchange>,
        hash: scram::Hash,
        attempts: u32,
    },
    /// Authenticated: expecting the bind or resume request.
    Bind,
}

/// The features of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Features {
    StartTls,
    Sasl,
    Bound,
}

/// The request that ends the login (or an unbound session's).
pub enum BindRequest {
    /// Bind the resource (the token's device, whatever was asked for);
    /// the iq's id.
    Bind(Option<String>),
    /// XEP-0198 resumption.
    Resume { previd: String, h: u32 },
}

/// What an element is to a session that is not bound yet.
pub enum Unbound {
    Request(BindRequest),
    /// Answered here (a `<failed/>`, an iq error): go on.
    Answered(Element),
    /// Not allowed before binding: a stream error.
    Refused,
}

/// An element before the resource is bound.
pub fn unbound_element(el: &Element) -> Unbound {
    if el.is("iq", ns::CLIENT) && el.get_child("bind", ns::BIND).is_some() {
        return Unbound::Request(BindRequest::Bind(el.get_attr("id").map(str::to_string)));
    }
    if el.is("resume", ns::SM) {
        let previd = el.get_attr("previd").unwrap_or_default().to_string();
        return match el.get_attr("h").and_then(|h| h.parse::<u32>().ok()) {
            Some(h) => Unbound::Request(BindRequest::Resume { previd, h }),
            None => Unbound::Answered(
                Element::new("failed", ns::SM)
                    .child(Element::new("item-not-found", ns::STANZA_ERRORS)),
            ),
        };
    }
    if el.is("enable", ns::SM) {
        return Unbound::Answered(
            Element::new("failed", ns::SM)
                .child(Element::new("unexpected-request", ns::STANZA_ERRORS)),
        );
    }
    if el.is("iq", ns::CLIENT) {
        return Unbound::Answered(
            Element::new("iq", ns::CLIENT)
                .attr("type", "error")
                .attr_opt("id", el.get_attr("id"))
                .child(condition_element(
                    "not-authorized",
                    "auth",
                    "244 bind a resource first",
                )),
        );
    }
    Unbound::Refused
}

fn features(kind: Features, scram: bool) -> Element {
    let features = Element::new("features", ns::STREAM);
    match kind {
        Features::StartTls => features
            .child(Element::new("starttls", ns::TLS).child(Element::new("required", ns::TLS))),
        Features::Sasl => {
            // Strongest first: SCRAM (device secrets) only with
            // `xmpp_scram` (see `scram`), PLAIN always.
            let mut mechanisms = Element::new("mechanisms", ns::SASL);
            if scram {
                for hash in [scram::Hash::Sha256, scram::Hash::Sha1] {
                    mechanisms = mechanisms
                        .child(Element::new("mechanism", ns::SASL).text(hash.mechanism()));
                }
            }
            mechanisms = mechanisms.child(Element::new("mechanism", ns::SASL).text("PLAIN"));
            features.child(mechanisms)
        }
        Features::Bound => features
            .child(Element::new("bind", ns::BIND))
            .child(
                Element::new("session", ns::SESSION).child(Element::new("optional", ns::SESSION)),
            )
            .child(Element::new("sm", ns::SM)),
    }
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

impl Xmpp {
    /// One frame of the login phase.
    pub(super) fn login_frame(&mut self, frame: XmppIn) -> LoginStep {
        let ev = match frame {
            XmppIn::Keepalive => return LoginStep::Next,
            XmppIn::Event(ev) => ev,
        };
        let domain = self.domain();
        let el = match ev {
            XmppEvent::StreamClose => {
                self.out.close();
                return LoginStep::Refused;
            }
            XmppEvent::StreamOpen(header) => {
                let Login::Header(kind) = self.login else {
                    self.out
                        .stream_error(&domain, "bad-format", "stream already open");
                    return LoginStep::Refused;
                };
                if let Some(to) = header.get_attr("to") {
                    if !to.eq_ignore_ascii_case(&domain) {
                        let text = format!("this server is {domain}");
                        self.out.stream_error(&domain, "host-unknown", &text);
                        return LoginStep::Refused;
                    }
                }
                self.out.header(&domain, &super::random_id());
                self.out.push(&features(kind, self.state.config.xmpp_scram));
                self.login = match kind {
                    Features::StartTls => Login::StartTls,
                    Features::Sasl => Login::Auth { attempts: 0 },
                    Features::Bound => Login::Bind,
                };
                return LoginStep::Next;
            }
            XmppEvent::Stanza(el) => el,
        };
        match std::mem::replace(&mut self.login, Login::Bind) {
            Login::Header(_) => {
                self.out
                    .stream_error(&domain, "bad-format", "expected a stream header");
                LoginStep::Refused
            }
            Login::StartTls => self.starttls(&el),
            Login::Auth { attempts } => self.auth(&el, attempts),
            Login::Scram {
                exchange,
                hash,
                attempts,
            } => self.scram_response(&el, *exchange, hash, attempts),
            Login::Bind => self.bind_request(&el),
        }
    }

    /// The outcome of a PLAIN credential check.
    pub(super) fn plain_checked(&mut self, checked: Result<Principal, ImError>) -> LoginStep {
        let Login::Auth { attempts } = self.login else {
            return LoginStep::Refused;
        };
        match checked {
            Ok(p) => self.sasl_success(p, Element::new("success", ns::SASL)),
            Err(e) => self.sasl_failed(
                sasl_failure(
                    "not-authorized",
                    &format!("{} {}", e.code.as_i32(), e.message),
                ),
                attempts,
            ),
        }
    }

    /// The first element must be `<starttls/>`: proceed, handshake, and
    /// the stream restarts over TLS.
    fn starttls(&mut self, el: &Element) -> LoginStep {
        let domain = self.domain();
        if el.is("starttls", ns::TLS) {
            self.out.push(&Element::new("proceed", ns::TLS));
            self.restart();
            self.login = Login::Header(Features::Sasl);
            return LoginStep::StartTls;
        }
        if el.is("auth", ns::SASL) {
            self.out.push(&sasl_failure(
                "encryption-required",
                "TLS is required: send <starttls/> first",
            ));
        }
        self.out.stream_error(
            &domain,
            "policy-violation",
            "TLS is required: send <starttls/> first",
        );
        LoginStep::Refused
    }

    fn auth(&mut self, el: &Element, attempts: u32) -> LoginStep {
        let domain = self.domain();
        self.login = Login::Auth { attempts };
        if el.is("starttls", ns::TLS) {
            self.out.push(&Element::new("failure", ns::TLS));
            self.out.close();
            return LoginStep::Refused;
        }
        if el.is("abort", ns::SASL) {
            self.out
                .push(&sasl_failure("aborted", "authentication aborted"));
            return LoginStep::Next;
        }
        if !el.is("auth", ns::SASL) {
            let text = format!(
                "{} authenticate (SASL PLAIN) first",
                ErrorCode::AuthFailure.as_i32()
            );
            self.out.stream_error(&domain, "not-authorized", &text);
            return LoginStep::Refused;
        }
        let attempts = attempts + 1;
        self.login = Login::Auth { attempts };
        let scram_hash = el
            .get_attr("mechanism")
            .and_then(scram::Hash::from_mechanism)
            .filter(|_| self.state.config.xmpp_scram);
        if let Some(hash) = scram_hash {
            let first = scram::sasl_text(el).and_then(|t| scram::parse_client_first(&t));
            return match first {
                Ok(first) => {
                    let exchange = scram::ServerExchange::new(hash, first, &super::random_id());
                    self.out.push(&scram::challenge(exchange.server_first()));
                    self.login = Login::Scram {
                        exchange: Box::new(exchange),
                        hash,
                        attempts,
                    };
                    LoginStep::Next
                }
                Err(e) => self.sasl_failed(sasl_failure(e.0, &e.1), attempts),
            };
        }
        if el.get_attr("mechanism") != Some("PLAIN") {
            return self.sasl_failed(
                sasl_failure(
                    "invalid-mechanism",
                    "only the offered mechanisms: PLAIN (user id + token or device secret), SCRAM with xmpp_scram",
                ),
                attempts,
            );
        }
        let Some((authzid, authcid, password)) = parse_plain(&el.text_content()) else {
            return self.sasl_failed(
                sasl_failure("malformed-request", "2 bad PLAIN message"),
                attempts,
            );
        };
        let own = format!("{authcid}@{domain}");
        if !authzid.is_empty() && authzid != authcid && authzid != own {
            return self.sasl_failed(
                sasl_failure("invalid-authzid", "244 cannot act as another user"),
                attempts,
            );
        }
        LoginStep::Check(Credentials {
            user: authcid,
            credential: password,
            client_id: String::new(),
        })
    }

    /// The client's answer to our SCRAM challenge.
    fn scram_response(
        &mut self,
        el: &Element,
        exchange: scram::ServerExchange,
        hash: scram::Hash,
        attempts: u32,
    ) -> LoginStep {
        self.login = Login::Auth { attempts };
        if !el.is("response", ns::SASL) {
            // The client gave up on the exchange.
            self.out.close();
            return LoginStep::Refused;
        }
        let client_final = match scram::sasl_text(el) {
            Ok(t) => t,
            Err(e) => return self.sasl_failed(sasl_failure(e.0, &e.1), attempts),
        };
        let user = exchange.user().to_string();
        let candidates = self.state.credentials.scram_candidates(&user, hash);
        let keys: Vec<scram::Keys> = candidates.iter().map(|(_, k)| k.clone()).collect();
        let (index, server_final) = match exchange.finish(&client_final, &keys) {
            Ok(found) => found,
            Err(e) => {
                self.state
                    .metrics
                    .auth_failure(Protocol::Xmpp, ErrorCode::AuthFailure);
                return self.sasl_failed(sasl_failure(e.0, &e.1), attempts);
            }
        };
        let device = candidates[index].0.clone();
        match crate::sessions::login::login_verified_device(
            &self.state,
            Protocol::Xmpp,
            &user,
            &device,
        ) {
            Ok(p) => self.sasl_success(p, scram::success(&server_final)),
            Err(e) => self.sasl_failed(
                sasl_failure(
                    "not-authorized",
                    &format!("{} {}", e.code.as_i32(), e.message),
                ),
                attempts,
            ),
        }
    }

    /// SASL succeeded: the stream restarts, with the full stanza limit.
    fn sasl_success(&mut self, principal: Principal, success: Element) -> LoginStep {
        self.out.push(&success);
        self.principal = Some(principal);
        self.authenticated = true;
        self.restart();
        self.login = Login::Header(Features::Bound);
        LoginStep::Next
    }

    /// A failed attempt: another, or the stream ends after too many.
    fn sasl_failed(&mut self, failure: Element, attempts: u32) -> LoginStep {
        self.out.push(&failure);
        self.login = Login::Auth { attempts };
        if attempts >= MAX_AUTH_ATTEMPTS {
            let domain = self.domain();
            self.out.stream_error(
                &domain,
                "policy-violation",
                "244 too many authentication attempts",
            );
            return LoginStep::Refused;
        }
        LoginStep::Next
    }

    /// Authenticated: the bind or resume request ends the login.
    fn bind_request(&mut self, el: &Element) -> LoginStep {
        self.login = Login::Bind;
        match unbound_element(el) {
            Unbound::Request(request) => match self.principal.clone() {
                Some(p) => {
                    self.request = Some(request);
                    LoginStep::LoggedIn(p)
                }
                None => LoginStep::Refused,
            },
            Unbound::Answered(answer) => {
                self.out.push(&answer);
                LoginStep::Next
            }
            Unbound::Refused => {
                let domain = self.domain();
                self.out
                    .stream_error(&domain, "not-authorized", "244 bind a resource first");
                LoginStep::Refused
            }
        }
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
