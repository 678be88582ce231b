//! Criterion micro-benchmark of the core policy pipeline (DESIGN §6): the
//! whole tower stack of `imgate_core::pipeline::build_pipeline` — auth,
//! validate, dedupe, rate limit, quota, sensitive words, review hook,
//! store service — over [`NullStore`], a `Store` whose append answers at
//! once. So the figures are the pipeline's own cost per message, without
//! any disk or broker.
//!
//! Cases: a fresh private text; a resend answered by dedupe; a fresh text
//! scanned against 1,000 sensitive words.
//!
//! `cargo bench -p imgate-bench --bench pipeline` (add `-- --quick`).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use imgate_core::model::{Conversation, Message, MessagePayload, Platform};
use imgate_core::pipeline::{
    build_pipeline, Draft, PipelineConfig, PolicyParts, Principal, Protocol, RateLimitConfig,
    SendCommand, SendService,
};
use imgate_core::store::{
    Announcement, Appended, CursorMoved, DeviceFeed, Group, ImportMessage, Imported, NewMessage,
    Recalled, SettingChange, SyncPage, UserFeed,
};
use imgate_core::words::WordFilter;
use imgate_core::{BoxFuture, Store, StoreError};
use tokio::sync::broadcast;
use tower::ServiceExt;

/// Dedupe window of the fresh-send cases (see [`pipeline`]).
const FRESH_DEDUPE_WINDOW: Duration = Duration::from_secs(1);

/// A store that keeps nothing: append gives the next id at once, reads are
/// empty, device feeds are refused. Enough for the pipeline's path.
struct NullStore {
    next_id: AtomicU64,
    settings: broadcast::Sender<SettingChange>,
    announcements: broadcast::Sender<Arc<Announcement>>,
    cursors: broadcast::Sender<Arc<CursorMoved>>,
    messages: broadcast::Sender<Arc<Message>>,
}

impl NullStore {
    fn new() -> NullStore {
        NullStore {
            next_id: AtomicU64::new(1),
            settings: broadcast::channel(1).0,
            announcements: broadcast::channel(1).0,
            cursors: broadcast::channel(1).0,
            messages: broadcast::channel(1).0,
        }
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

type R<T> = Result<T, StoreError>;

impl Store for NullStore {
    fn append(&self, m: NewMessage) -> BoxFuture<'_, R<Appended>> {
        let message = Message {
            message_id: self.next_id.fetch_add(1, Ordering::Relaxed),
            sender: m.sender,
            conversation: m.conversation,
            payload: m.payload,
            server_ts: 1_764_000_000_000,
            client_msg_id: m.client_msg_id,
            to_users: m.to_users,
        };
        ready(Ok(Appended {
            message: Arc::new(message),
            duplicate: false,
        }))
    }
    fn sync<'a>(&'a self, _: &'a str, _: u64, _: usize) -> BoxFuture<'a, R<SyncPage>> {
        ready(Ok(SyncPage::default()))
    }
    fn history<'a>(
        &'a self,
        _: &'a str,
        _: &'a Conversation,
        _: u64,
        _: usize,
    ) -> BoxFuture<'a, R<SyncPage>> {
        ready(Ok(SyncPage::default()))
    }
    fn get(&self, _: u64) -> BoxFuture<'_, R<Option<Arc<Message>>>> {
        ready(Ok(None))
    }
    fn get_for<'a>(&'a self, _: u64, _: &'a str) -> BoxFuture<'a, R<Option<Arc<Message>>>> {
        ready(Ok(None))
    }
    fn recall(&self, _: u64) -> BoxFuture<'_, R<Recalled>> {
        ready(Ok(None))
    }
    fn last_message_id<'a>(&'a self, _: &'a str) -> BoxFuture<'a, R<u64>> {
        ready(Ok(0))
    }
    fn attach_device<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, R<DeviceFeed>> {
        ready(Err(StoreError::Unavailable(
            "NullStore keeps no devices".into(),
        )))
    }
    fn ack<'a>(&'a self, _: &'a str, _: &'a str, _: u64) -> BoxFuture<'a, R<()>> {
        ready(Ok(()))
    }
    fn subscribe_user(&self, _: &str) -> UserFeed {
        UserFeed::new(self.messages.subscribe())
    }
    fn group<'a>(&'a self, _: &'a str) -> BoxFuture<'a, R<Option<Group>>> {
        ready(Ok(None))
    }
    fn scan_groups<'a>(&'a self, _: &'a str, _: usize) -> BoxFuture<'a, R<(Vec<Group>, bool)>> {
        ready(Ok((Vec::new(), false)))
    }
    fn put_group(&self, _: Group) -> BoxFuture<'_, R<()>> {
        ready(Ok(()))
    }
    fn delete_group<'a>(&'a self, _: &'a str) -> BoxFuture<'a, R<bool>> {
        ready(Ok(false))
    }
    fn setting<'a>(&'a self, _: &'a str) -> BoxFuture<'a, R<Option<String>>> {
        ready(Ok(None))
    }
    fn put_setting(&self, _: String, _: String) -> BoxFuture<'_, R<()>> {
        ready(Ok(()))
    }
    fn watch_settings(&self) -> broadcast::Receiver<SettingChange> {
        self.settings.subscribe()
    }
    fn announce(&self, _: String, _: String) -> BoxFuture<'_, R<()>> {
        ready(Ok(()))
    }
    fn watch_announcements(&self) -> broadcast::Receiver<Arc<Announcement>> {
        self.announcements.subscribe()
    }
    fn watch_cursors(&self) -> broadcast::Receiver<Arc<CursorMoved>> {
        self.cursors.subscribe()
    }
    fn import(&self, _: Vec<ImportMessage>) -> BoxFuture<'_, R<Vec<Imported>>> {
        ready(Ok(Vec::new()))
    }
    fn scan(&self, _: u64, _: usize) -> BoxFuture<'_, R<SyncPage>> {
        ready(Ok(SyncPage::default()))
    }
    fn sent_on_day<'a>(&'a self, _: &'a str, _: i64) -> BoxFuture<'a, R<u64>> {
        ready(Ok(0))
    }
    fn conversations<'a>(
        &'a self,
        _: &'a str,
        _: u64,
        _: usize,
    ) -> BoxFuture<'a, R<imgate_core::store::ConversationPage>> {
        ready(Ok(Default::default()))
    }
    fn mark_read<'a>(
        &'a self,
        _: &'a str,
        _: &'a Conversation,
        _: u64,
    ) -> BoxFuture<'a, R<Option<imgate_core::store::ReadState>>> {
        ready(Ok(None))
    }
    fn prune(&self, _: i64, _: Option<i64>) -> BoxFuture<'_, R<imgate_core::store::Pruned>> {
        ready(Ok(Default::default()))
    }
}

/// The stack over a [`NullStore`]. `dedupe_window`: how long sends are
/// remembered; the fresh-send cases use a short one so the dedupe map
/// stays as small as in a server at that rate, not millions of entries.
fn pipeline(words: Vec<String>, dedupe_window: Duration) -> SendService {
    let config = PipelineConfig {
        dedupe_window,
        // Never the limiter's verdict: the benchmark sends far faster.
        rate: RateLimitConfig {
            messages: u32::MAX,
            per: Duration::from_secs(1),
        },
        ..PipelineConfig::default()
    };
    let parts = PolicyParts {
        words: Arc::new(WordFilter::new(words)),
        ..PolicyParts::default()
    };
    build_pipeline(&config, Arc::new(NullStore::new()), &parts)
}

fn command(client_msg_id: String) -> SendCommand {
    SendCommand {
        principal: Principal {
            user_id: "alice".into(),
            device_id: "alice-phone".into(),
            platform: Platform::Android,
            protocol: Protocol::Mqtt,
            admin: false,
        },
        draft: Draft {
            sender: "alice".into(),
            conversation: Conversation::private("bob"),
            payload: MessagePayload::text("hello bob, see you at 10 in the usual place"),
            client_msg_id,
            to_users: vec![],
        },
    }
}

fn bench(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("a tokio runtime: {e}"),
    };
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    let n = AtomicU64::new(0);
    let fresh = |svc: &SendService| {
        let id = format!("c{}", n.fetch_add(1, Ordering::Relaxed));
        let ack = rt.block_on(svc.clone().oneshot(command(id)));
        black_box(ack.is_ok())
    };

    let svc = pipeline(Vec::new(), FRESH_DEDUPE_WINDOW);
    g.bench_function("private_text", |b| b.iter(|| fresh(&svc)));

    let svc = pipeline(Vec::new(), Duration::from_secs(600));
    let resend = command("resent".into());
    if let Err(e) = rt.block_on(svc.clone().oneshot(resend.clone())) {
        panic!("the first send: {e:?}");
    }
    g.bench_function("resend_answered_by_dedupe", |b| {
        b.iter(|| black_box(rt.block_on(svc.clone().oneshot(resend.clone())).is_ok()))
    });

    let words = (0..1000).map(|i| format!("forbidden{i}")).collect();
    let svc = pipeline(words, FRESH_DEDUPE_WINDOW);
    g.bench_function("private_text_1000_words", |b| b.iter(|| fresh(&svc)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
