//! A minimal XMPP client (RFC 6120 c2s) for the XMPP load generator, over
//! imgate's own stanza framer: stream open, SASL PLAIN, resource binding,
//! XEP-0198 stream management when the server offers it, and the chores a
//! connected client must do (answer `<r/>` with `<a h/>`, answer XEP-0199
//! pings). It speaks to imgate (password = token) and to prosody (plain
//! accounts) alike. Every wait is bounded; nothing a server sends is
//! trusted to be well formed.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::StreamExt;
use imgate_codecs::xmpp::element::{escape_attr_into, escape_text_into};
use imgate_codecs::xmpp::{ns, Element, XmppEvent, XmppFramer};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

/// Bounded wait for one negotiation step or reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest stanza accepted from the server, and its deepest nesting.
const MAX_STANZA: usize = 1 << 20;
const MAX_DEPTH: usize = 64;

/// Who a connection logs in as.
#[derive(Debug, Clone)]
pub struct XmppLogin {
    /// SASL authcid: imgate's user id or a prosody account's local part.
    pub user: String,
    /// imgate's token or the account's password.
    pub password: String,
    /// imgate binds the token's device id whatever is asked.
    pub resource: String,
}

/// What the server sent, after the client's own chores were done.
#[derive(Debug)]
pub enum Incoming {
    /// A `<message>` stanza.
    Message(Element),
    /// `<a h/>`: the server handled this many of our stanzas (SM).
    Acked(u32),
    /// The answer (`result` or `error`) to our `<iq>` with this id.
    IqAnswer(String),
    /// Anything else (presence, iq results, roster pushes, `<enabled/>`).
    Other,
}

pub struct XmppConn {
    reader: FramedRead<OwnedReadHalf, XmppFramer>,
    writer: OwnedWriteHalf,
    out: Vec<u8>,
    pub jid: String,
    /// Stream management is enabled (the server offered XEP-0198).
    pub sm: bool,
    /// Stanzas received since SM was enabled (our `h`).
    received: u32,
    /// Stanzas sent since SM was enabled (what the server's `h` counts).
    pub sent_stanzas: u32,
    domain: String,
}

impl XmppConn {
    /// Connect, authenticate, bind, and enable stream management if offered.
    pub async fn login(addr: &str, domain: &str, login: &XmppLogin) -> anyhow::Result<XmppConn> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut c = XmppConn {
            reader: FramedRead::new(r, XmppFramer::new(MAX_STANZA, MAX_DEPTH)),
            writer: w,
            out: Vec::with_capacity(4096),
            jid: String::new(),
            sm: false,
            received: 0,
            sent_stanzas: 0,
            domain: domain.to_owned(),
        };
        c.open_stream().await?;
        let features = c.features().await?;
        let offers_plain = features
            .get_child("mechanisms", ns::SASL)
            .is_some_and(|m| m.elements().any(|e| e.text_content() == "PLAIN"));
        if !offers_plain {
            bail!(
                "{addr} offers no SASL PLAIN (prosody needs allow_unencrypted_plain_auth): {}",
                features.to_xml()
            );
        }
        let creds = base64(format!("\0{}\0{}", login.user, login.password).as_bytes());
        c.queue(&format!(
            "<auth xmlns='{}' mechanism='PLAIN'>{creds}</auth>",
            ns::SASL
        ));
        c.flush().await?;
        let answer = c.element("SASL answer").await?;
        if !answer.is("success", ns::SASL) {
            bail!("SASL refused {}: {}", login.user, answer.to_xml());
        }
        c.reader.decoder_mut().restart();
        c.open_stream().await?;
        let features = c.features().await?;
        let mut bind = String::from("<iq type='set' id='bind1'><bind xmlns='");
        bind.push_str(ns::BIND);
        bind.push_str("'><resource>");
        escape_text_into(&mut bind, &login.resource);
        bind.push_str("</resource></bind></iq>");
        c.queue(&bind);
        c.flush().await?;
        let bound = c.element("bind result").await?;
        c.jid = bound
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("jid", ns::BIND))
            .map(Element::text_content)
            .ok_or_else(|| anyhow!("bind failed for {}: {}", login.user, bound.to_xml()))?;
        if features.get_child("sm", ns::SM).is_some() {
            c.queue(&format!("<enable xmlns='{}'/>", ns::SM));
            c.flush().await?;
            let enabled = c.element("SM enabled").await?;
            c.sm = enabled.is("enabled", ns::SM);
        }
        Ok(c)
    }

    async fn open_stream(&mut self) -> anyhow::Result<()> {
        let mut header = String::from("<?xml version='1.0'?><stream:stream to='");
        escape_attr_into(&mut header, &self.domain);
        header.push_str(
            "' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
        );
        self.queue(&header);
        self.flush().await?;
        match self.event("the server's stream header").await? {
            XmppEvent::StreamOpen(_) => Ok(()),
            other => bail!("expected a stream header, got {other:?}"),
        }
    }

    async fn features(&mut self) -> anyhow::Result<Element> {
        let f = self.element("stream features").await?;
        if !f.is("features", ns::STREAM) {
            bail!("expected stream features, got {}", f.to_xml());
        }
        Ok(f)
    }

    /// The next framing event within [`REPLY_TIMEOUT`].
    async fn event(&mut self, what: &str) -> anyhow::Result<XmppEvent> {
        match tokio::time::timeout(REPLY_TIMEOUT, self.reader.next()).await {
            Err(_) => bail!("no {what} within {REPLY_TIMEOUT:?}"),
            Ok(None) => bail!("connection closed while waiting for {what}"),
            Ok(Some(Err(e))) => bail!("bad XML while waiting for {what}: {e}"),
            Ok(Some(Ok(ev))) => Ok(ev),
        }
    }

    /// The next element during negotiation (a stream error fails).
    async fn element(&mut self, what: &str) -> anyhow::Result<Element> {
        match self.event(what).await? {
            XmppEvent::Stanza(e) if e.is("error", ns::STREAM) => {
                bail!("stream error while waiting for {what}: {}", e.to_xml())
            }
            XmppEvent::Stanza(e) => Ok(e),
            XmppEvent::StreamClose => bail!("the server closed the stream before {what}"),
            XmppEvent::StreamOpen(_) => bail!("unexpected stream header before {what}"),
        }
    }

    /// Queue raw XML (one or more whole stanzas); written on [`Self::flush`].
    pub fn queue(&mut self, xml: &str) {
        self.out.extend_from_slice(xml.as_bytes());
    }

    /// Queue one stanza and count it for stream management.
    pub fn queue_stanza(&mut self, xml: &str) {
        self.queue(xml);
        if self.sm {
            self.sent_stanzas = self.sent_stanzas.wrapping_add(1);
        }
    }

    /// Queue `<r/>` (ask the server how many stanzas it handled).
    pub fn request_ack(&mut self) {
        if self.sm {
            self.queue("<r xmlns='urn:xmpp:sm:3'/>");
        }
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// The next thing the server sends, `None` when the stream ended.
    /// SM ack requests and pings are answered: the answer is queued, and
    /// the caller's next [`Self::flush`] writes it (so this stays
    /// cancel-safe in a `select!`). Not time-bounded: callers put it in a
    /// `select!` or `timeout`.
    pub async fn next(&mut self) -> anyhow::Result<Option<Incoming>> {
        let ev = match self.reader.next().await {
            None => return Ok(None),
            Some(Err(e)) => bail!("bad XML from the server: {e}"),
            Some(Ok(ev)) => ev,
        };
        let el = match ev {
            XmppEvent::StreamClose => return Ok(None),
            XmppEvent::StreamOpen(_) => bail!("the server restarted the stream"),
            XmppEvent::Stanza(el) => el,
        };
        if el.ns == ns::SM {
            return Ok(Some(match el.name.as_str() {
                "r" => {
                    let a = format!("<a xmlns='{}' h='{}'/>", ns::SM, self.received);
                    self.queue(&a);
                    Incoming::Other
                }
                "a" => match el.get_attr("h").and_then(|h| h.parse().ok()) {
                    Some(h) => Incoming::Acked(h),
                    None => bail!("an SM <a/> without a numeric h: {}", el.to_xml()),
                },
                _ => Incoming::Other,
            }));
        }
        if el.is("error", ns::STREAM) {
            bail!("stream error: {}", el.to_xml());
        }
        if self.sm && el.ns == ns::CLIENT {
            self.received = self.received.wrapping_add(1);
        }
        if el.name == "iq"
            && el.get_attr("type") == Some("get")
            && el.get_child("ping", ns::PING).is_some()
        {
            let mut pong = String::from("<iq type='result' id='");
            escape_attr_into(&mut pong, el.get_attr("id").unwrap_or_default());
            if let Some(from) = el.get_attr("from") {
                pong.push_str("' to='");
                escape_attr_into(&mut pong, from);
            }
            pong.push_str("'/>");
            self.queue_stanza(&pong);
            return Ok(Some(Incoming::Other));
        }
        if el.name == "message" {
            return Ok(Some(Incoming::Message(el)));
        }
        if el.name == "iq" && matches!(el.get_attr("type"), Some("result" | "error")) {
            let id = el.get_attr("id").unwrap_or_default().to_owned();
            return Ok(Some(Incoming::IqAnswer(id)));
        }
        Ok(Some(Incoming::Other))
    }

    /// Close the stream (errors ignored: the run is over either way).
    pub async fn close(&mut self) {
        self.queue("</stream:stream>");
        let _ = self.flush().await;
        let _ = self.writer.shutdown().await;
    }
}

/// Standard base64 with padding (RFC 4648 §4), for SASL PLAIN only.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
