//! Layer 5, sensitive words: scan `searchable_content`, `content` and
//! `push_content`; then, by strategy (per conversation type if configured):
//! `reject` (code 242), `drop` (the sender gets success, nothing is stored
//! or delivered) or `mask` (each hit replaced by `*`). Every hit is
//! recorded through a [`HitSink`].

use std::collections::HashMap;
use std::future::{ready, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tower::{Layer, Service};

use super::{SendAck, SendCommand};
use crate::model::Conversation;
use crate::words::WordFilter;
use crate::{now_ms, ErrorCode, ImError};

/// What to do with a message that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordStrategy {
    Reject,
    Drop,
    Mask,
}

impl std::str::FromStr for WordStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "reject" => Ok(WordStrategy::Reject),
            "drop" => Ok(WordStrategy::Drop),
            "mask" => Ok(WordStrategy::Mask),
            other => Err(format!(
                "unknown strategy {other:?}: use reject, drop or mask"
            )),
        }
    }
}

/// A default strategy and optional overrides by conversation type.
#[derive(Debug, Clone)]
pub struct WordStrategies {
    pub default: WordStrategy,
    pub by_type: HashMap<i32, WordStrategy>,
}

impl WordStrategies {
    pub fn for_conversation(&self, c: &Conversation) -> WordStrategy {
        self.by_type.get(&c.kind).copied().unwrap_or(self.default)
    }
}

/// One recorded hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitRecord {
    pub sender: String,
    pub conv: Conversation,
    #[serde(rename = "clientMsgId")]
    pub client_msg_id: String,
    pub words: Vec<String>,
    pub action: WordStrategy,
    pub timestamp: i64,
}

/// Where hits go (the gateway keeps and persists them).
pub trait HitSink: Send + Sync + 'static {
    fn record(&self, hit: HitRecord);
}

#[derive(Clone)]
pub struct WordFilterLayer {
    filter: Arc<WordFilter>,
    strategies: WordStrategies,
    sink: Arc<dyn HitSink>,
}

impl WordFilterLayer {
    pub fn new(
        filter: Arc<WordFilter>,
        strategies: WordStrategies,
        sink: Arc<dyn HitSink>,
    ) -> Self {
        WordFilterLayer {
            filter,
            strategies,
            sink,
        }
    }
}

impl<S> Layer<S> for WordFilterLayer {
    type Service = WordFilterService<S>;
    fn layer(&self, inner: S) -> WordFilterService<S> {
        WordFilterService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct WordFilterService<S> {
    inner: S,
    layer: WordFilterLayer,
}

/// Pass the (maybe masked) command on, or answer now.
type Outcome = Result<SendCommand, Result<SendAck, ImError>>;

impl WordFilterLayer {
    fn apply(&self, mut cmd: SendCommand) -> Outcome {
        let list = self.filter.current();
        if list.is_empty() {
            return Ok(cmd);
        }
        let strategy = self.strategies.for_conversation(&cmd.draft.conversation);
        let p = &mut cmd.draft.payload;
        let mut words = Vec::new();
        for field in [
            &mut p.searchable_content,
            &mut p.content,
            &mut p.push_content,
        ] {
            if strategy == WordStrategy::Mask {
                let (masked, hits) = list.mask(field);
                if !hits.is_empty() {
                    *field = masked;
                }
                words.extend(hits.into_iter().map(|h| h.word));
            } else {
                words.extend(list.scan(field).into_iter().map(|h| h.word));
            }
        }
        if words.is_empty() {
            return Ok(cmd);
        }
        words.sort();
        words.dedup();
        self.sink.record(HitRecord {
            sender: cmd.draft.sender.clone(),
            conv: cmd.draft.conversation.clone(),
            client_msg_id: cmd.draft.client_msg_id.clone(),
            words,
            action: strategy,
            timestamp: now_ms(),
        });
        match strategy {
            WordStrategy::Mask => Ok(cmd),
            WordStrategy::Reject => Err(Err(ImError::new(
                ErrorCode::SensitiveWord,
                "sensitive word matched",
            ))),
            // Success for the sender, nothing stored or delivered. There is
            // no stored message, so the ack carries id 0.
            WordStrategy::Drop => Err(Ok(SendAck {
                message_id: 0,
                server_ts: now_ms(),
                client_msg_id: cmd.draft.client_msg_id,
                duplicate: false,
            })),
        }
    }
}

impl<S> Service<SendCommand> for WordFilterService<S>
where
    S: Service<SendCommand, Response = SendAck, Error = ImError>,
    S::Future: Send + 'static,
{
    type Response = SendAck;
    type Error = ImError;
    type Future = Pin<Box<dyn Future<Output = Result<SendAck, ImError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ImError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, cmd: SendCommand) -> Self::Future {
        match self.layer.apply(cmd) {
            Ok(cmd) => Box::pin(self.inner.call(cmd)),
            Err(reply) => Box::pin(ready(reply)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cmd, Recorder};
    use super::*;
    use std::sync::Mutex;
    use tower::ServiceExt;

    #[derive(Default)]
    struct Sink(Mutex<Vec<HitRecord>>);
    impl HitSink for Sink {
        fn record(&self, hit: HitRecord) {
            self.0.lock().unwrap().push(hit);
        }
    }

    fn layer(strategy: WordStrategy, sink: Arc<Sink>) -> WordFilterLayer {
        WordFilterLayer::new(
            Arc::new(WordFilter::new(vec!["secret".to_string()])),
            WordStrategies {
                default: strategy,
                by_type: HashMap::from([(1, WordStrategy::Mask)]),
            },
            sink,
        )
    }

    #[tokio::test]
    async fn reject_drop_and_mask() {
        let sink = Arc::new(Sink::default());
        let rec = Recorder::default();
        let mut c = cmd("alice", "bob", "1");
        c.draft.payload.searchable_content = "the SECRET plan".into();

        let e = layer(WordStrategy::Reject, sink.clone())
            .layer(rec.clone())
            .oneshot(c.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::SensitiveWord);
        let ack = layer(WordStrategy::Drop, sink.clone())
            .layer(rec.clone())
            .oneshot(c.clone())
            .await
            .unwrap();
        assert_eq!(ack.message_id, 0);
        assert_eq!(
            rec.count(),
            0,
            "rejected and dropped messages never reach the store"
        );

        // Group conversations (type 1) mask by override.
        c.draft.conversation = Conversation::group("g");
        c.draft.payload.push_content = "secret!".into();
        layer(WordStrategy::Reject, sink.clone())
            .layer(rec.clone())
            .oneshot(c.clone())
            .await
            .unwrap();
        assert_eq!(rec.count(), 1);
        let hits = sink.0.lock().unwrap();
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[2].action, WordStrategy::Mask);
        assert_eq!(hits[0].words, vec!["secret".to_string()]);
    }

    #[test]
    fn mask_rewrites_every_text_field() {
        let sink = Arc::new(Sink::default());
        let l = layer(WordStrategy::Mask, sink);
        let mut c = cmd("alice", "bob", "1");
        c.draft.payload.searchable_content = "a secret".into();
        c.draft.payload.content = "Secret".into();
        c.draft.payload.push_content = "no".into();
        let Ok(out) = l.apply(c) else {
            panic!("passes masked")
        };
        assert_eq!(out.draft.payload.searchable_content, "a ******");
        assert_eq!(out.draft.payload.content, "******");
        assert_eq!(out.draft.payload.push_content, "no");
    }
}
