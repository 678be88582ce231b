//! A small HTTP/1.1 JSON POST client on hyper (plain http:// only); each
//! request is signed when a hook secret is configured (see `signature`).
//! The review hook and the event webhooks (`crate::event_hook`) share it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::signature::{HookSigner, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Largest reply body read from the review service.
const MAX_REPLY: usize = 1024 * 1024;

#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    signer: Option<HookSigner>,
}

impl HttpClient {
    pub fn new(url: &str, signer: Option<HookSigner>) -> Result<Self, String> {
        let url: Uri = url
            .parse()
            .map_err(|e| format!("bad hook URL {url:?}: {e}"))?;
        if url.scheme_str() != Some("http") {
            return Err("the hook URL must be http://".into());
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(HttpClient {
            client,
            url,
            signer,
        })
    }

    /// POST `body` as JSON; the status and the (bounded) reply body.
    pub async fn post_json(&self, body: &Value) -> Result<(u16, Bytes), String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let mut req =
            hyper::Request::post(self.url.clone()).header("content-type", "application/json");
        if let Some(signer) = &self.signer {
            // Signed at each attempt: a retry carries a fresh timestamp.
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            req = req
                .header(TIMESTAMP_HEADER, now_ms.to_string())
                .header(SIGNATURE_HEADER, signer.sign(now_ms, &bytes));
        }
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| format!("reading the reply: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}
