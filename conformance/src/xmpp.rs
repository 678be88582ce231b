//! A blocking raw-socket XMPP client for the conformance tests: it writes
//! whatever XML (or garbage) a test wants and reads the server's stream
//! with the project's framer, so tests can check stream errors, SM
//! counters and exact stanzas that a full client library would hide.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use imgate_codecs::xmpp::{ns, Element, XmppEvent, XmppFramer};
use tokio_util::codec::Decoder;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde_json::Value;

use crate::{python, python_dir, Gateway, WAIT};

/// The opening a client sends (RFC 6120 §4.7).
pub fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
}

pub struct XmppRaw {
    stream: TcpStream,
    buf: BytesMut,
    framer: XmppFramer,
    closed: bool,
    /// Elements read while waiting for another one.
    pub seen: Vec<Element>,
}

impl XmppRaw {
    pub fn connect(addr: &str) -> XmppRaw {
        let stream = TcpStream::connect(addr).expect("connect to the XMPP listener");
        stream.set_nodelay(true).ok();
        XmppRaw {
            stream,
            buf: BytesMut::new(),
            framer: XmppFramer::new(16 * 1024 * 1024, 64),
            closed: false,
            seen: Vec::new(),
        }
    }

    /// Connect, authenticate with `token` and bind; returns the client and
    /// its bound JID.
    /// Connect, authenticate and send `<resume previd h>` instead of a
    /// bind: the client and the server's answer (`<resumed>` or
    /// `<failed>`).
    pub fn resume(
        addr: &str,
        domain: &str,
        user: &str,
        token: &str,
        previd: &str,
        h: u32,
    ) -> (XmppRaw, Element) {
        let mut r = XmppRaw::connect(addr);
        r.send(&stream_header(domain));
        r.expect_features();
        r.send(&auth_plain(user, token));
        assert!(r
            .next_element(WAIT)
            .is_some_and(|e| e.is("success", ns::SASL)));
        r.framer.restart();
        r.send(&stream_header(domain));
        r.expect_features();
        r.send(&format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{h}'/>"
        ));
        let answer = r
            .wait_for(|e| e.is("resumed", ns::SM) || e.is("failed", ns::SM), WAIT)
            .expect("an answer to <resume>");
        (r, answer)
    }

    pub fn login(addr: &str, domain: &str, user: &str, token: &str) -> (XmppRaw, String) {
        let mut c = XmppRaw::connect(addr);
        c.send(&stream_header(domain));
        c.expect_features();
        c.send(&auth_plain(user, token));
        let answer = c.next_element(WAIT).expect("SASL answer");
        assert!(
            answer.is("success", ns::SASL),
            "SASL failed: {}",
            answer.to_xml()
        );
        c.framer.restart();
        c.send(&stream_header(domain));
        c.expect_features();
        c.send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>ignored</resource></bind></iq>");
        let bound = c
            .wait_for(
                |e| e.name == "iq" && e.get_attr("id") == Some("bind1"),
                WAIT,
            )
            .expect("bind result");
        let jid = bound
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("jid", ns::BIND))
            .map(Element::text_content)
            .expect("bound jid");
        (c, jid)
    }

    /// Read the server's header and features; returns the features.
    pub fn expect_features(&mut self) -> Element {
        match self.next_event(WAIT) {
            Some(XmppEvent::StreamOpen(_)) => {}
            other => panic!("expected the server's stream header, got {other:?}"),
        }
        let f = self.next_element(WAIT).expect("stream features");
        assert!(
            f.is("features", ns::STREAM),
            "expected features, got {}",
            f.to_xml()
        );
        f
    }

    /// After SASL success: expect a new stream from the server.
    pub fn restart_stream(&mut self) {
        self.framer.restart();
    }

    pub fn send(&mut self, xml: &str) {
        let _ = self.stream.write_all(xml.as_bytes());
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// The next framing event from the server, or None (timeout/closed).
    pub fn next_event(&mut self, within: Duration) -> Option<XmppEvent> {
        let deadline = Instant::now() + within;
        loop {
            match self.framer.decode(&mut self.buf) {
                Ok(Some(ev)) => return Some(ev),
                Ok(None) => {}
                Err(e) => panic!("the server sent bad XML: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.closed {
                return None;
            }
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(500))))
                .ok();
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// The next element (stanza or negotiation element), skipping nothing.
    pub fn next_element(&mut self, within: Duration) -> Option<Element> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                XmppEvent::Stanza(e) => return Some(e),
                XmppEvent::StreamClose => {
                    self.closed = true;
                    return None;
                }
                XmppEvent::StreamOpen(_) => continue,
            }
        }
    }

    /// The first element matching `pred` within `within`; others are kept
    /// in [`XmppRaw::seen`].
    pub fn wait_for(
        &mut self,
        pred: impl Fn(&Element) -> bool,
        within: Duration,
    ) -> Option<Element> {
        if let Some(at) = self.seen.iter().position(&pred) {
            return Some(self.seen.remove(at));
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self.next_element(left)?;
            if pred(&e) {
                return Some(e);
            }
            self.seen.push(e);
        }
    }

    /// A stream error: its condition name, waiting until the server sends
    /// it; None if the stream ended without one.
    pub fn stream_error(&mut self, within: Duration) -> Option<(String, String)> {
        let e = self.wait_for(|e| e.is("error", ns::STREAM), within)?;
        let cond = e
            .elements()
            .find(|c| c.ns == ns::STREAM_ERRORS && c.name != "text")
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let text = e
            .get_child("text", ns::STREAM_ERRORS)
            .map(Element::text_content)
            .unwrap_or_default();
        Some((cond, text))
    }

    /// Whether the server closed the connection within `within`.
    pub fn wait_closed(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Discard whatever else arrives; any error here means closed.
            let mut chunk = [0u8; 16 * 1024];
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(500))))
                .ok();
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.closed = true,
            }
        }
        true
    }

    /// Drop the TCP connection without closing the stream (a lost link).
    pub fn abort(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// `<auth mechanism='PLAIN'>` for `user` with `token`.
pub fn auth_plain(user: &str, token: &str) -> String {
    let b64 = base64(format!("\0{user}\0{token}").as_bytes());
    format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{b64}</auth>")
}

/// A running slixmpp script (`conformance/python/xmpp_*.py`, args: host,
/// port, domain, then its own): its JSON lines arrive on `lines`.
pub struct XmppScript {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl XmppScript {
    pub fn spawn(g: &Gateway, domain: &str, name: &str, args: &[&str]) -> XmppScript {
        Self::spawn_with(g, domain, name, args, &[])
    }

    /// With extra environment variables, e.g. `IMGATE_XMPP_CAFILE` (the
    /// scripts then require STARTTLS and verify the certificate with it).
    pub fn spawn_with(
        g: &Gateway,
        domain: &str,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> XmppScript {
        // Direct TLS (XEP-0368) has a listener of its own.
        let direct_tls = env.iter().any(|(k, _)| *k == "IMGATE_XMPP_DIRECT_TLS");
        let listener = if direct_tls { "xmpps" } else { "xmpp" };
        let (host, port) = g.addr(listener).rsplit_once(':').expect("host:port");
        let mut child = Command::new(python())
            .envs(env.iter().copied())
            .arg(python_dir().join(name))
            .args([host, port, domain])
            .args(args)
            .current_dir(python_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the python script");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        XmppScript { child, lines }
    }

    /// The next JSON line (bounded wait); panics on a script error.
    pub fn next_line(&mut self) -> Value {
        let v = self
            .lines
            .recv_timeout(WAIT * 4)
            .unwrap_or_else(|_| panic!("the script printed nothing in time"));
        assert!(v.get("error").is_none(), "script failed: {v}");
        v
    }

    /// The result line (progress lines like `{"event":"ready"}` skipped).
    pub fn finish(mut self) -> Value {
        loop {
            let v = self.next_line();
            if v.get("event").is_none() {
                let _ = self.child.wait();
                return v;
            }
        }
    }
}

impl Drop for XmppScript {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a script to its result line.
pub fn run_script(g: &Gateway, name: &str, args: &[&str]) -> Value {
    XmppScript::spawn(g, "localhost", name, args).finish()
}

/// Standard base64 (this crate has no base64 dependency; SASL needs only
/// the encoder).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A payload using every `MessagePayload` field, as the JSON of DESIGN §5.5
/// (shared by the cross-protocol XMPP tests).
pub fn rich_payload_json() -> serde_json::Value {
    serde_json::json!({
        "type": 3, "searchableContent": "see <this> & that", "pushContent": "push",
        "content": "content\nline2", "base64edData": "AAEC/w==", "mediaType": 2,
        "remoteMediaUrl": "http://x/y.png", "persistFlag": 1, "expireDuration": 60,
        "mentionedType": 1, "mentionedTarget": ["m1", "m2"], "extra": "{\"k\":1}",
        "pushData": "pd"
    })
}

/// The same payload as an XMPP client writes it (`BODY|PAYLOAD_XML`, the
/// argument the send scripts take).
pub const RICH_XMPP: &str = "see <this> & that|<payload xmlns='urn:imgate:payload' type='3' \
    persistFlag='1' mediaType='2' expireDuration='60' mentionedType='1'>\
    <pushContent>push</pushContent><content>content\nline2</content><data>AAEC/w==</data>\
    <remoteMediaUrl>http://x/y.png</remoteMediaUrl><mentionedTarget>m1</mentionedTarget>\
    <mentionedTarget>m2</mentionedTarget><extra>{\"k\":1}</extra><pushData>pd</pushData></payload>";

/// The payload an XMPP client received (a script record with `body` and
/// `payload`) as the JSON of DESIGN §5.5.
pub fn received_payload_json(record: &serde_json::Value) -> serde_json::Value {
    use imgate_codecs::xmpp::payload::decode_payload;
    use imgate_codecs::xmpp::tree::{parse_stanza, Scope};
    let body = record["body"].as_str().unwrap_or_default();
    let xml = record["payload"]
        .as_str()
        .expect("an imgate payload element");
    let el = parse_stanza(xml, &Scope::client_stream("stream"), 16).expect("payload XML");
    let payload = decode_payload(Some(body), Some(&el))
        .expect("payload decodes")
        .0;
    serde_json::to_value(payload).expect("payload JSON")
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
