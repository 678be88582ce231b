//! A tiny HTTP/1.1 server for tests that need a peer service (the review
//! hook): every request body is recorded, and a handler decides the reply.
//! Requests can be held at a gate until the test opens it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Handler = dyn Fn(&serde_json::Value) -> (u16, String) + Send + Sync;

/// One request as received: its headers (names lowercased) and the exact
/// body bytes.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct FakeHttp {
    pub url: String,
    received: Arc<(Mutex<Vec<serde_json::Value>>, Condvar)>,
    raw: Arc<Mutex<Vec<RawRequest>>>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl FakeHttp {
    /// Start on an ephemeral port; `open` = whether requests are answered
    /// at once or held until [`FakeHttp::open_gate`].
    pub fn start(
        open: bool,
        handler: impl Fn(&serde_json::Value) -> (u16, String) + Send + Sync + 'static,
    ) -> FakeHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake http");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let gate = Arc::new((Mutex::new(open), Condvar::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (r, g, w) = (received.clone(), gate.clone(), raw.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (r, g, w, handler) = (r.clone(), g.clone(), w.clone(), handler.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                    let mut len = 0usize;
                    let mut headers = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                        }
                    }
                    let mut body = vec![0u8; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let json: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    // Raw first: whoever sees the JSON can read the raw.
                    w.lock().unwrap().push(RawRequest { headers, body });
                    {
                        let (lock, cv) = &*r;
                        lock.lock().unwrap().push(json.clone());
                        cv.notify_all();
                    }
                    {
                        let (lock, cv) = &*g;
                        let mut open = lock.lock().unwrap();
                        while !*open {
                            open = cv.wait(open).unwrap();
                        }
                    }
                    let (status, text) = handler(&json);
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = conn.write_all(resp.as_bytes());
                });
            }
        });
        FakeHttp {
            url,
            received,
            raw,
            gate,
        }
    }

    pub fn open_gate(&self) {
        let (lock, cv) = &*self.gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Wait until at least `n` requests arrived; all requests with their
    /// headers and exact bodies.
    pub fn wait_for_raw(&self, n: usize, within: Duration) -> Vec<RawRequest> {
        self.wait_for(n, within);
        self.raw.lock().unwrap().clone()
    }

    /// Wait until at least `n` requests arrived; all request bodies.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        let (lock, cv) = &*self.received;
        let mut got = lock.lock().unwrap();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            got = cv.wait_timeout(got, left).unwrap().0;
        }
        got.clone()
    }
}

/// What a hook receiver does (docs/security.md): recompute
/// `sha256=HMAC-SHA256(secret, timestamp + "." + body)` over the body it
/// received and compare in constant time.
pub fn signature_verifies(secret: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    use hmac::{Hmac, Mac};
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<sha2::Sha256>>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

impl FakeHttp {
    /// Wait (bounded) until the requests received satisfy `done`; all of
    /// them, whether or not they did.
    pub fn wait_until(
        &self,
        within: Duration,
        done: impl Fn(&[RawRequest]) -> bool,
    ) -> Vec<RawRequest> {
        let deadline = Instant::now() + within;
        loop {
            let n = self.raw.lock().unwrap().len();
            let got = self.raw.lock().unwrap().clone();
            if done(&got) {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return got;
            }
            // Until one more request arrives (or the time is up).
            self.wait_for(n + 1, left);
        }
    }
}
