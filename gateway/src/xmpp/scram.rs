//! SASL SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677) for XMPP, with
//! a **device secret** as the password.
//!
//! SCRAM never sends the password: the server must hold keys derived from
//! it beforehand. A device secret's keys are derived when the admin API
//! issues it ([`derive`], kept with the secret's digest in
//! `device_secrets`); a token is a signed credential the server never
//! stores, so tokens keep logging in with PLAIN. The salt is per user
//! ([`salt_for`]: the server names it before it knows which device
//! logs in; secrets are 256 random bits, so a per-user salt costs
//! nothing against guessing), [`ITERATIONS`] rounds. The client's proof
//! is checked against every SCRAM-capable secret of the user; the one it
//! matches is the device. No channel binding (`-PLUS`) is offered; a
//! client asking for it (`p=`) is refused.
//!
//! Offered only with `xmpp_scram = true` (docs/xmpp.md): clients that
//! prefer SCRAM and do not fall back to PLAIN would otherwise fail to
//! log in with a token.

use base64::Engine;
use imgate_codecs::xmpp::{ns, Element};

pub use crate::scram_keys::{salt_for, Hash, Keys, ITERATIONS};

/// Longest SCRAM message accepted from a client.
const MAX_MESSAGE: usize = 4096;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    pub gs2_header: String,
    pub bare: String,
    pub user: String,
    pub nonce: String,
}

/// Why an exchange failed: the SASL condition and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramError(pub &'static str, pub String);

fn malformed(text: &str) -> ScramError {
    ScramError("malformed-request", format!("2 {text}"))
}

/// Undo RFC 5802's `=2C` / `=3D` escaping of a username.
fn unescape_name(s: &str) -> Option<String> {
    let out = s.replace("=2C", ",").replace("=3D", "=");
    (!out.contains('=')).then_some(out)
}

pub fn parse_client_first(msg: &str) -> Result<ClientFirst, ScramError> {
    let mut parts = msg.splitn(3, ',');
    let cb = parts.next().unwrap_or_default();
    let authzid = parts.next().ok_or_else(|| malformed("no GS2 header"))?;
    let bare = parts
        .next()
        .ok_or_else(|| malformed("no client-first-bare"))?;
    match cb {
        "n" | "y" => {}
        _ if cb.starts_with("p=") => {
            return Err(ScramError(
                "invalid-mechanism",
                "2 channel binding is not offered".into(),
            ))
        }
        _ => return Err(malformed("bad GS2 flag")),
    }
    let mut user = None;
    let mut nonce = None;
    for attr in bare.split(',') {
        if let Some(v) = attr.strip_prefix("n=") {
            user = unescape_name(v);
        } else if let Some(v) = attr.strip_prefix("r=") {
            nonce = Some(v.to_string());
        } else if attr.starts_with("m=") {
            return Err(malformed("no extensions are supported"));
        }
    }
    let user = user
        .filter(|u| !u.is_empty())
        .ok_or_else(|| malformed("no user name"))?;
    let nonce = nonce
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic() && c != ','))
        .ok_or_else(|| malformed("no nonce"))?;
    if let Some(a) = authzid.strip_prefix("a=") {
        let a = unescape_name(a).unwrap_or_default();
        if a != user && !a.starts_with(&format!("{user}@")) {
            return Err(ScramError(
                "invalid-authzid",
                "244 cannot act as another user".into(),
            ));
        }
    } else if !authzid.is_empty() {
        return Err(malformed("bad authzid"));
    }
    Ok(ClientFirst {
        gs2_header: format!("{cb},{authzid},"),
        bare: bare.to_string(),
        user,
        nonce,
    })
}

/// The server side of one exchange after the client-first message.
pub struct ServerExchange {
    hash: Hash,
    first: ClientFirst,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    pub fn new(hash: Hash, first: ClientFirst, server_nonce: &str) -> ServerExchange {
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={ITERATIONS}",
            B64.encode(salt_for(&first.user))
        );
        ServerExchange {
            hash,
            first,
            server_first,
            nonce,
        }
    }

    pub fn user(&self) -> &str {
        &self.first.user
    }

    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Check the client-final message against each candidate's keys:
    /// the index of the one it proves and the server-final message.
    pub fn finish(
        &self,
        client_final: &str,
        candidates: &[Keys],
    ) -> Result<(usize, String), ScramError> {
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("no proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                channel = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        if channel != Some(B64.encode(&self.first.gs2_header).as_str()) {
            return Err(malformed("channel binding data does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| malformed("proof is not base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.first.bare, self.server_first, without_proof
        );
        for (i, keys) in candidates.iter().enumerate() {
            let signature = self.hash.hmac(&keys.stored_key, auth_message.as_bytes());
            if signature.len() != proof.len() {
                continue;
            }
            let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
            if constant_eq(&self.hash.digest(&client_key), &keys.stored_key) {
                let server_signature = self.hash.hmac(&keys.server_key, auth_message.as_bytes());
                return Ok((i, format!("v={}", B64.encode(server_signature))));
            }
        }
        Err(ScramError(
            "not-authorized",
            "244 SCRAM proof does not match a device secret of this user".into(),
        ))
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decode a SASL element's base64 text as UTF-8 (bounded).
pub fn sasl_text(el: &Element) -> Result<String, ScramError> {
    let text = el.text_content();
    if text.len() > MAX_MESSAGE {
        return Err(malformed("SCRAM message too long"));
    }
    let bytes = B64
        .decode(text.trim())
        .map_err(|_| malformed("not base64"))?;
    String::from_utf8(bytes).map_err(|_| malformed("not UTF-8"))
}

/// The `<challenge>` carrying the server-first message (the client
/// answers with a `<response>`).
pub fn challenge(server_first: &str) -> Element {
    Element::new("challenge", ns::SASL).text(B64.encode(server_first))
}

/// The `<success>` carrying the server-final message.
pub fn success(server_final: &str) -> Element {
    Element::new("success", ns::SASL).text(B64.encode(server_final))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram_keys::derive;

    /// The client side, as RFC 5802 §3 computes it.
    fn client_final(
        hash: Hash,
        user: &str,
        password: &str,
        first_bare: &str,
        server_first: &str,
    ) -> String {
        let attrs: Vec<&str> = server_first.split(',').collect();
        let nonce = attrs[0].strip_prefix("r=").unwrap();
        let salt = B64.decode(attrs[1].strip_prefix("s=").unwrap()).unwrap();
        let rounds: u32 = attrs[2].strip_prefix("i=").unwrap().parse().unwrap();
        let salted = hash.hi(password.as_bytes(), &salt, rounds);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored = hash.digest(&client_key);
        let without = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth = format!("{first_bare},{server_first},{without}");
        let sig = hash.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let _ = user;
        format!("{without},p={}", B64.encode(proof))
    }

    #[test]
    fn rfc7677_test_vector_hi() {
        // RFC 7677 §3: user "user", password "pencil", salt
        // W22ZaJ0SNY7soEsUEjb6gQ==, 4096 rounds → the server signature of
        // the example exchange.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = Hash::Sha256.hi(b"pencil", &salt, 4096);
        let server_key = Hash::Sha256.hmac(&salted, b"Server Key");
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let v = B64.encode(Hash::Sha256.hmac(&server_key, auth.as_bytes()));
        assert_eq!(v, "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn an_exchange_proves_the_right_device_and_refuses_others() {
        for hash in [Hash::Sha1, Hash::Sha256] {
            let first = parse_client_first("n,,n=alice,r=abc123").unwrap();
            let bare = first.bare.clone();
            let ex = ServerExchange::new(hash, first, "srv456");
            let cf = client_final(hash, "alice", "ds1_secret-b", &bare, ex.server_first());
            let candidates = [
                derive(hash, "alice", "ds1_secret-a"),
                derive(hash, "alice", "ds1_secret-b"),
            ];
            let (i, server_final) = ex.finish(&cf, &candidates).unwrap();
            assert_eq!(i, 1);
            assert!(server_final.starts_with("v="));
            let wrong = client_final(hash, "alice", "guess", &bare, ex.server_first());
            assert_eq!(
                ex.finish(&wrong, &candidates).unwrap_err().0,
                "not-authorized"
            );
            let replay = cf.replace("srv456", "other");
            assert!(ex.finish(&replay, &candidates).is_err());
        }
    }

    #[test]
    fn client_first_parsing() {
        assert_eq!(parse_client_first("n,,n=a=2Cb,r=x").unwrap().user, "a,b");
        assert_eq!(
            parse_client_first("p=tls-unique,,n=a,r=x").unwrap_err().0,
            "invalid-mechanism"
        );
        assert_eq!(
            parse_client_first("n,a=bob,n=alice,r=x").unwrap_err().0,
            "invalid-authzid"
        );
        assert!(parse_client_first("n,,n=alice").is_err());
        assert!(parse_client_first("garbage").is_err());
    }
}
