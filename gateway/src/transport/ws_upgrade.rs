//! The WebSocket opening handshake (RFC 6455 §4.2) of the `ws`/`wss`
//! listener, done here rather than by tungstenite so that it is bounded
//! (request head at most [`MAX_HEAD`] bytes, within the login timeout) and
//! routed: the path picks the protocol, the subprotocol is negotiated per
//! path, and a refusal is an HTTP error with the gateway's JSON error body.
//!
//! | path | protocol | subprotocol |
//! |---|---|---|
//! | `/mqtt` | MQTT 3.1.1 / 5 | `mqtt` (also `mqttv3.1`) |
//! | `/xmpp-websocket` | XMPP, RFC 7395 framing | `xmpp` |
//! | `/pb` | PB, one frame per binary message | none, or `imgate-pb` |
//!
//! A client that offers subprotocols none of which fits is refused (400);
//! one that offers none is accepted (MQTT clients of old, tools).
//! Authentication happens inside the protocol (CONNECT, SASL, Login) as on
//! TCP, so no cookie or Origin is trusted and any Origin may connect.

use std::time::Duration;

use base64::Engine;
use bytes::BytesMut;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ClientStream;
use crate::listeners::Service;

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;

/// A request the handshake accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    pub service: Service,
    /// The subprotocol the response names, if any.
    pub subprotocol: Option<&'static str>,
    /// `Sec-WebSocket-Accept` of the response.
    pub accept: String,
}

/// A refused request: the HTTP status and the gateway error code.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: i32,
    pub message: String,
}

fn refuse(status: u16, code: imgate_core::ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code: code.as_i32(),
        message: message.into(),
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Decide on a parsed request head.
pub fn decide(req: &httparse::Request<'_, '_>) -> Result<Accepted, Refusal> {
    use imgate_core::ErrorCode;
    if req.method != Some("GET") {
        return Err(refuse(
            405,
            ErrorCode::InvalidParameter,
            "WebSocket upgrades use GET",
        ));
    }
    let path = req.path.unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let (service, offered_ok): (Service, &[&'static str]) = match path {
        "/mqtt" => (Service::Mqtt, &["mqtt", "mqttv3.1"]),
        "/xmpp-websocket" => (Service::Xmpp, &["xmpp"]),
        "/pb" => (Service::Pb, &["imgate-pb"]),
        other => {
            return Err(refuse(
                404,
                ErrorCode::NotExist,
                format!("no WebSocket endpoint {other}: use /mqtt, /xmpp-websocket or /pb"),
            ))
        }
    };
    let header = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if !header("upgrade").any(|v| has_token(v, "websocket"))
        || !header("connection").any(|v| has_token(v, "upgrade"))
    {
        return Err(refuse(
            400,
            ErrorCode::InvalidParameter,
            "not a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)",
        ));
    }
    if !header("sec-websocket-version").any(|v| v.trim_ascii() == b"13") {
        return Err(refuse(
            400,
            ErrorCode::InvalidParameter,
            "Sec-WebSocket-Version must be 13",
        ));
    }
    let Some(key) = header("sec-websocket-key").next().map(<[u8]>::trim_ascii) else {
        return Err(refuse(
            400,
            ErrorCode::InvalidParameter,
            "no Sec-WebSocket-Key",
        ));
    };
    let key_ok = base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|k| k.len() == 16);
    if !key_ok {
        return Err(refuse(
            400,
            ErrorCode::InvalidParameter,
            "bad Sec-WebSocket-Key",
        ));
    }
    let offered: Vec<&[u8]> = header("sec-websocket-protocol")
        .flat_map(|v| v.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect();
    let subprotocol = offered_ok.iter().copied().find(|ours| {
        offered
            .iter()
            .any(|o| o.eq_ignore_ascii_case(ours.as_bytes()))
    });
    if !offered.is_empty() && subprotocol.is_none() {
        return Err(refuse(
            400,
            ErrorCode::InvalidParameter,
            format!("{path} speaks the subprotocol {}", offered_ok[0]),
        ));
    }
    Ok(Accepted {
        service,
        subprotocol,
        accept: accept_key(key),
    })
}

/// Read the request head (within `limit`, at most [`MAX_HEAD`] bytes) and
/// answer it: 101 and the accepted request with the bytes read past the
/// head, or an HTTP error (written, then `None`).
pub async fn handshake(stream: &mut ClientStream, limit: Duration) -> Option<(Accepted, Vec<u8>)> {
    let read = tokio::time::timeout(limit, read_head(stream)).await;
    let (buf, head_len) = match read {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => {
            let r = refuse(
                431,
                imgate_core::ErrorCode::InvalidParameter,
                "request head too large",
            );
            write_refusal(stream, &r).await;
            return None;
        }
        Ok(Err(_)) | Err(_) => return None,
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let decided = match req.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => decide(&req),
        _ => Err(refuse(
            400,
            imgate_core::ErrorCode::InvalidParameter,
            "bad HTTP request",
        )),
    };
    let accepted = match decided {
        Ok(a) => a,
        Err(r) => {
            write_refusal(stream, &r).await;
            return None;
        }
    };
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accepted.accept
    );
    if let Some(p) = accepted.subprotocol {
        response.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    response.push_str("\r\n");
    let written = super::write_deadline::bounded(async {
        stream.write_all(response.as_bytes()).await?;
        stream.flush().await
    })
    .await;
    if written.is_err() {
        return None;
    }
    Some((accepted, buf[head_len..].to_vec()))
}

/// Bytes up to the end of the head; `Ok(None)` when the head is too large.
async fn read_head(stream: &mut ClientStream) -> std::io::Result<Option<(BytesMut, usize)>> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some((buf, end + 4)));
        }
        if buf.len() >= MAX_HEAD {
            return Ok(None);
        }
        buf.reserve(1024);
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn write_refusal(stream: &mut ClientStream, r: &Refusal) {
    let body = serde_json::json!({ "code": r.code, "message": r.message }).to_string();
    let reason = match r.status {
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let response = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        r.status,
        body.len()
    );
    let _ = super::write_deadline::bounded(async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<Accepted, Refusal> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(head.as_bytes()).unwrap().is_complete());
        decide(&req)
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn rfc6455_sample_key() {
        assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn paths_pick_the_protocol_and_its_subprotocol() {
        let a = parse(&upgrade("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n")).unwrap();
        assert_eq!((a.service, a.subprotocol), (Service::Mqtt, Some("mqtt")));
        let a = parse(&upgrade(
            "/mqtt?x=1",
            "Sec-WebSocket-Protocol: foo, MQTTv3.1\r\n",
        ))
        .unwrap();
        assert_eq!(
            (a.service, a.subprotocol),
            (Service::Mqtt, Some("mqttv3.1"))
        );
        let a = parse(&upgrade(
            "/xmpp-websocket",
            "Sec-WebSocket-Protocol: xmpp\r\n",
        ))
        .unwrap();
        assert_eq!((a.service, a.subprotocol), (Service::Xmpp, Some("xmpp")));
        let a = parse(&upgrade("/pb", "")).unwrap();
        assert_eq!((a.service, a.subprotocol), (Service::Pb, None));
        assert_eq!(a.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(parse(&upgrade("/smtp", "")).unwrap_err().status, 404);
        let r = parse(&upgrade(
            "/xmpp-websocket",
            "Sec-WebSocket-Protocol: mqtt\r\n",
        ))
        .unwrap_err();
        assert_eq!(r.status, 400);
        assert!(r.message.contains("xmpp"), "{}", r.message);
        let plain = "GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(parse(plain).unwrap_err().status, 400);
        let post = upgrade("/mqtt", "").replacen("GET", "POST", 1);
        assert_eq!(parse(&post).unwrap_err().status, 405);
        let v8 = upgrade("/mqtt", "").replace("Version: 13", "Version: 8");
        assert_eq!(parse(&v8).unwrap_err().status, 400);
        let badkey = upgrade("/mqtt", "").replace(KEY, "short");
        assert_eq!(parse(&badkey).unwrap_err().status, 400);
    }
}
