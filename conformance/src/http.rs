//! HTTP helpers: a signing admin client and a bearer-token client.

use std::time::Duration;

use serde_json::{json, Value};
use sha1::{Digest, Sha1};

/// An HTTP status and the JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
}

impl Reply {
    /// The contract `code` of the body (panics if there is none).
    pub fn code(&self) -> i64 {
        self.body["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no code in reply {}: {}", self.status, self.body))
    }

    pub fn result(&self) -> &Value {
        &self.body["result"]
    }
}

fn agent() -> ureq::Agent {
    // https:// URLs (a gateway with the test certificate) trust only it.
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .tls_connector(std::sync::Arc::new(crate::tls::UreqTls))
        .build()
}

fn finish(r: Result<ureq::Response, ureq::Error>) -> Reply {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => panic!("HTTP transport error: {e}"),
    };
    let status = resp.status();
    let retry_after = resp.header("retry-after").map(str::to_string);
    let text = resp.into_string().unwrap_or_default();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON reply {status}: {text:?}"));
    Reply {
        status,
        body,
        retry_after,
    }
}

/// A nonce never used before by this process (the gateway refuses a
/// signature it has seen).
pub fn fresh_nonce() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("n{}-{}-{n}", std::process::id(), now_ms())
}

/// sha1_hex(nonce|secret|timestamp), computed here independently of the
/// gateway's code.
pub fn sign(nonce: &str, secret: &str, timestamp: &str) -> String {
    hex::encode(Sha1::digest(
        format!("{nonce}|{secret}|{timestamp}").as_bytes(),
    ))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The signed admin API.
pub struct Admin {
    base: String,
    secret: String,
    agent: ureq::Agent,
}

impl Admin {
    pub fn new(base: &str, secret: &str) -> Admin {
        Admin {
            base: base.to_string(),
            secret: secret.to_string(),
            agent: agent(),
        }
    }

    /// POST with explicit signature headers (None = header left out).
    pub fn post_with(&self, path: &str, body: &Value, headers: &[(&str, Option<String>)]) -> Reply {
        let mut req = self.agent.post(&format!("{}{}", self.base, path));
        for (k, v) in headers {
            if let Some(v) = v {
                req = req.set(k, v);
            }
        }
        finish(req.send_json(body.clone()))
    }

    /// POST, correctly signed now.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        let nonce = fresh_nonce();
        let ts = now_ms().to_string();
        let sig = sign(&nonce, &self.secret, &ts);
        self.post_with(
            path,
            body,
            &[
                ("nonce", Some(nonce)),
                ("timestamp", Some(ts)),
                ("sign", Some(sig)),
            ],
        )
    }

    /// POST a raw body, correctly signed.
    pub fn post_raw(&self, path: &str, body: &str) -> Reply {
        let nonce = fresh_nonce();
        let ts = now_ms().to_string();
        let sig = sign(&nonce, &self.secret, &ts);
        let req = self
            .agent
            .post(&format!("{}{}", self.base, path))
            .set("nonce", &nonce)
            .set("timestamp", &ts)
            .set("sign", &sig)
            .set("content-type", "application/json");
        finish(req.send_string(body))
    }

    pub fn token(&self, user: &str, device: &str, platform: i32) -> String {
        let r = self.post(
            "/admin/user/get_token",
            &json!({"userId": user, "clientId": device, "platform": platform}),
        );
        assert_eq!(r.code(), 0, "get_token failed: {:?}", r.body);
        r.result()["token"].as_str().expect("token").to_string()
    }

    pub fn create_group(&self, id: &str, owner: &str, members: &[&str]) {
        let r = self.post(
            "/admin/group/create",
            &json!({"operator": owner, "group": {"targetId": id, "name": id}, "members": members}),
        );
        assert_eq!(r.code(), 0, "group create failed: {:?}", r.body);
    }

    pub fn get_text(&self, path: &str) -> String {
        self.agent
            .get(&format!("{}{}", self.base, path))
            .call()
            .expect("GET")
            .into_string()
            .expect("body")
    }
}

/// A bearer-token client of `/v1`.
pub struct Client {
    base: String,
    pub token: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Client {
        Client {
            base: base.to_string(),
            token: token.to_string(),
            agent: agent(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        let req = self
            .agent
            .post(&format!("{}{}", self.base, path))
            .set("authorization", &format!("Bearer {}", self.token));
        finish(req.send_json(body.clone()))
    }

    pub fn post_raw(&self, path: &str, body: &str) -> Reply {
        let req = self
            .agent
            .post(&format!("{}{}", self.base, path))
            .set("authorization", &format!("Bearer {}", self.token))
            .set("content-type", "application/json");
        finish(req.send_string(body))
    }

    pub fn get(&self, path: &str) -> Reply {
        let req = self
            .agent
            .get(&format!("{}{}", self.base, path))
            .set("authorization", &format!("Bearer {}", self.token));
        finish(req.call())
    }

    /// Send a private text; the reply.
    pub fn send_text(&self, to: &str, text: &str, client_msg_id: &str) -> Reply {
        self.post(
            "/v1/messages",
            &json!({
                "conv": {"type": 0, "target": to, "line": 0},
                "payload": {"type": 1, "searchableContent": text},
                "clientMsgId": client_msg_id,
            }),
        )
    }

    /// Every message after `since`, following pages.
    pub fn sync_all(&self, since: u64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut since = since;
        loop {
            let r = self.get(&format!("/v1/sync?since={since}&limit=50"));
            assert_eq!(r.code(), 0, "sync failed: {:?}", r.body);
            let msgs = r.result()["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(last) = msgs.last() {
                since = last["messageUid"].as_u64().expect("messageUid");
            }
            out.extend(msgs);
            if !r.result()["hasMore"].as_bool().unwrap_or(false) {
                return out;
            }
        }
    }
}
