//! A small WebSocket client for the transport tests (RFC 6455): the
//! opening handshake written out here (so a test sees the raw status,
//! headers and refusal bodies), tungstenite for the framing after it.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use base64::Engine;
use sha1::{Digest, Sha1};
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use crate::tls::Conn;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An upgrade the server refused: its status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

pub struct WsClient {
    ws: WebSocket<Conn>,
    /// The subprotocol the server picked.
    pub subprotocol: Option<String>,
}

fn expected_accept() -> String {
    let mut sha = Sha1::new();
    sha.update(KEY.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

impl WsClient {
    /// Open `ws://addr{path}` offering `subprotocols`.
    pub fn connect(addr: &str, path: &str, subprotocols: &[&str]) -> Result<WsClient, Refused> {
        let tcp = std::net::TcpStream::connect(addr).expect("connect to the ws listener");
        Self::over(Conn::Plain(tcp), addr, path, subprotocols)
    }

    /// Open `wss://addr{path}` (trusting the suite's test certificate).
    pub fn connect_tls(addr: &str, path: &str, subprotocols: &[&str]) -> Result<WsClient, Refused> {
        let conn = Conn::connect_tls(addr).expect("TLS to the wss listener");
        Self::over(conn, addr, path, subprotocols)
    }

    fn over(
        mut tcp: Conn,
        addr: &str,
        path: &str,
        subprotocols: &[&str],
    ) -> Result<WsClient, Refused> {
        tcp.tcp().set_read_timeout(Some(crate::WAIT)).ok();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://localhost\r\n"
        );
        if !subprotocols.is_empty() {
            req.push_str(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                subprotocols.join(", ")
            ));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).expect("write upgrade");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tcp.read(&mut chunk).expect("read upgrade response");
            assert!(n > 0, "closed during the handshake: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        if status != 101 {
            let mut body = buf[head_end..].to_vec();
            let _ = tcp.read_to_end(&mut body);
            return Err(Refused {
                status,
                body: String::from_utf8_lossy(&body).to_string(),
            });
        }
        assert_eq!(
            header("sec-websocket-accept").as_deref(),
            Some(expected_accept().as_str()),
            "{head}"
        );
        let ws = WebSocket::from_partially_read(tcp, buf[head_end..].to_vec(), Role::Client, None);
        Ok(WsClient {
            ws,
            subprotocol: header("sec-websocket-protocol"),
        })
    }

    pub fn send(&mut self, m: Message) {
        self.ws.send(m).expect("websocket send");
    }

    pub fn send_binary(&mut self, bytes: Vec<u8>) {
        self.send(Message::Binary(bytes.into()));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(Message::text(text));
    }

    /// The next data message within `wait` (pings are answered by
    /// tungstenite); `None` on timeout or close.
    pub fn recv(&mut self, wait: Duration) -> Option<Message> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.ws.get_mut().tcp().set_read_timeout(Some(left)).ok();
            match self.ws.read() {
                Ok(m @ (Message::Binary(_) | Message::Text(_))) => return Some(m),
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return None
                }
                Err(_) => return None,
            }
        }
    }

    /// The next text message (XMPP), within `wait`.
    pub fn recv_text(&mut self, wait: Duration) -> Option<String> {
        match self.recv(wait)? {
            Message::Text(t) => Some(t.to_string()),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next binary message (PB, MQTT), within `wait`.
    pub fn recv_binary(&mut self, wait: Duration) -> Option<Vec<u8>> {
        match self.recv(wait)? {
            Message::Binary(b) => Some(b.to_vec()),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }

    /// Whether the server closes the connection within `wait` (a Close
    /// frame or the end of the stream, no more data).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.ws.get_mut().tcp().set_read_timeout(Some(left)).ok();
            match self.ws.read() {
                Ok(Message::Close(_)) => return true,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}
