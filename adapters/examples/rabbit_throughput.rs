//! Durable append throughput of the RabbitMQ store, next to the raw
//! RabbitMQ publisher-confirm rate measured on the same broker in the same
//! run (DESIGN §7, issue 6).
//!
//! ```text
//! IMGATE_TEST_AMQP=amqp://guest:guest@127.0.0.1:5672/%2f \
//!   cargo run --release -p imgate-adapters --example rabbit_throughput -- [N] [C]
//! ```
//!
//! - raw: `C` tasks publish `N` persistent messages (the size of one log
//!   record) with confirms to one durable quorum queue over one
//!   confirm-mode channel; a publish counts once confirmed.
//! - store: `C` tasks call `RabbitStore::append` `N` times; each message
//!   goes to the log stream (one publish, one confirm) and is acked once
//!   indexed on this node.
//!
//! With `-- --index-build N C` it fills a fresh log with `N` messages
//! (`C` concurrent appends), then opens a second node with an empty index
//! and reports how fast it indexed the log (`index_build_msgs_per_sec`:
//! `N` over the time `RabbitStore::open` took to catch up).
//!
//! With `-- --devices N` it attaches `N` devices to one node through the
//! store API (this machine allows 20,000 open files per process, so 50,000
//! sockets cannot reach one node here; the store's cost per device is what
//! is measured): attach rate, RSS per attached device, the broker's queue
//! and channel counts with 10 devices and with `N`, and one message
//! delivered to every device.
//!
//! With `-- --raw-only N C` it measures only the raw rates and prints
//! them as `key=value` lines (scripts/bench-rabbit.sh compares them with a
//! real gateway driven by `imgate load`).
//!
//! Everything it creates (prefix `bench-<pid>`) is deleted at the end
//! (`-- --cleanup PREFIX...` deletes what an interrupted run left).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use imgate_adapters::rabbit::{delete_topology, RabbitConfig, RabbitStore};
use imgate_core::model::{Conversation, MessagePayload};
use imgate_core::store::NewMessage;
use imgate_core::Store;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

fn message(i: usize) -> NewMessage {
    NewMessage {
        sender: format!("bench-sender-{}", i % 64),
        sender_device: Some("dev".into()),
        conversation: Conversation::private("bench-bob"),
        payload: MessagePayload::text("x".repeat(100)),
        client_msg_id: format!("m{i}"),
        to_users: vec![],
        recipients: vec![format!("bench-sender-{}", i % 64), "bench-bob".into()],
    }
}

/// Raw confirmed publishes to a quorum queue; with `also_stream`, each
/// one is also routed (`CC`) to a stream, as the store's appends are.
async fn raw(
    url: &str,
    queue: &str,
    also_stream: Option<&str>,
    n: usize,
    c: usize,
    body: Vec<u8>,
) -> f64 {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("declare");
    let mut headers = FieldTable::default();
    if let Some(stream) = also_stream {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        ch.queue_declare(
            stream.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .expect("declare stream");
        headers.insert(
            "CC".into(),
            AMQPValue::FieldArray(vec![AMQPValue::LongString(stream.into())].into()),
        );
    }
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let next = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (ch, next, body, queue, headers) = (
            ch.clone(),
            next.clone(),
            body.clone(),
            queue.to_string(),
            headers.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_headers(headers.clone()),
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("confirm");
                assert!(confirm.is_ack());
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = ch.queue_delete(queue.into(), Default::default()).await;
    if let Some(stream) = also_stream {
        let _ = ch.queue_delete(stream.into(), Default::default()).await;
    }
    let _ = conn.close(200, "bench done".into()).await;
    rate
}

async fn store(store: Arc<RabbitStore>, n: usize, c: usize) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                store.append(message(i)).await.expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A record the size of a log record of the store (100-byte text).
fn sample_record() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "message", "origin": {"boot": 1, "token": 1},
        "message": {"message_id": 1, "sender": "bench-sender-1", "payload": "x".repeat(100)},
        "recipients": ["bench-sender-1", "bench-bob"], "sender_device": "dev"
    }))
    .expect("json")
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Queues of `prefix` and the channels of its connections (rabbitmqctl).
fn broker_objects(prefix: &str) -> (usize, u64) {
    let run = |args: &[&str]| {
        std::process::Command::new("rabbitmqctl")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let queues = run(&["-q", "list_queues", "name"])
        .lines()
        .filter(|q| q.trim().starts_with(&format!("{prefix}.")))
        .count();
    let channels = run(&["-q", "list_connections", "client_properties", "channels"])
        .lines()
        .filter(|l| l.contains(&format!("imgate {prefix} ")))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum();
    (queues, channels)
}

/// `--devices N`: N attached devices on one node.
async fn devices(url: &str, prefix: &str, n: usize) {
    let sep = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{sep}prefix={prefix}");
    let dir = tempfile::tempdir().expect("temp dir");
    let s = RabbitStore::open(RabbitConfig::from_url(&store_url, dir.path(), 1).expect("config"))
        .await
        .expect("open store");
    let mut feeds = Vec::with_capacity(n);
    for i in 0..10.min(n) {
        feeds.push(
            s.attach_device(&format!("dev-user-{i}"), "phone")
                .await
                .expect("attach"),
        );
    }
    let with_10 = broker_objects(prefix);
    let rss_before = rss_kb();
    let started = Instant::now();
    // Attach in waves of 256 concurrent first logins (each registers its
    // cursor in the control stream, batched).
    let mut i = feeds.len();
    while i < n {
        let wave: Vec<_> = (i..(i + 256).min(n))
            .map(|k| {
                let s = s.clone();
                tokio::spawn(
                    async move { s.attach_device(&format!("dev-user-{k}"), "phone").await },
                )
            })
            .collect();
        for w in wave {
            feeds.push(w.await.expect("task").expect("attach"));
        }
        i = (i + 256).min(n);
    }
    let secs = started.elapsed().as_secs_f64();
    let rss_after = rss_kb();
    let with_n = broker_objects(prefix);
    println!(
        "devices={n} attach_seconds={secs:.2} attaches_per_sec={:.0} rss_kb_before={rss_before} rss_kb_after={rss_after} rss_kb_per_device={:.2}",
        (n - 10.min(n)) as f64 / secs,
        (rss_after.saturating_sub(rss_before)) as f64 / (n - 10.min(n)).max(1) as f64
    );
    println!(
        "broker with 10 devices: queues={} channels={}; with {n}: queues={} channels={}",
        with_10.0, with_10.1, with_n.0, with_n.1
    );
    assert_eq!(with_10, with_n, "broker objects must not grow with devices");
    // Every device's session waits on its own feed, as sessions do (their
    // first timeline read, empty, is done before the message is sent).
    let waiting: Vec<_> = feeds
        .into_iter()
        .map(|mut f| {
            tokio::spawn(async move {
                let got = tokio::time::timeout(std::time::Duration::from_secs(300), f.next())
                    .await
                    .expect("delivery in time")
                    .expect("feed open");
                (got.message_id, f)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    // One message to every device (a 'group' of all users).
    let everyone: Vec<String> = (0..n).map(|k| format!("dev-user-{k}")).collect();
    let started = Instant::now();
    let m = s
        .append(NewMessage {
            recipients: everyone,
            ..message(0)
        })
        .await
        .expect("append")
        .message;
    let mut feeds = Vec::with_capacity(n);
    for w in waiting {
        let (id, f) = w.await.expect("task");
        assert_eq!(id, m.message_id);
        feeds.push(f);
    }
    println!(
        "one message to all {n} devices delivered in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    drop(feeds);
    s.close().await;
    delete_topology(url, prefix, &[]).await.expect("cleanup");
}

/// `--index-build N C`: a log of `N` messages, then a fresh node's
/// catch-up time.
async fn index_build(url: &str, prefix: &str, n: usize, c: usize) {
    let sep = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{sep}prefix={prefix}");
    let (da, db) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let a = Arc::new(
        RabbitStore::open(RabbitConfig::from_url(&store_url, da.path(), 1).expect("config"))
            .await
            .expect("open store"),
    );
    let fill = store(a.clone(), n, c).await;
    println!("messages={n} concurrency={c} fill_msgs_per_sec={fill:.0}");
    if let Ok(a) = Arc::try_unwrap(a) {
        a.close().await;
    }
    let started = Instant::now();
    let b = RabbitStore::open(RabbitConfig::from_url(&store_url, db.path(), 2).expect("config"))
        .await
        .expect("open the fresh node");
    let secs = started.elapsed().as_secs_f64();
    let synced = b.sync("bench-bob", 0, 1).await.expect("sync");
    assert!(
        !synced.messages.is_empty(),
        "the fresh node indexed the log"
    );
    let index_bytes = std::fs::metadata(db.path().join(format!("rabbit-{prefix}.redb")))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "index_build_seconds={secs:.2} index_build_msgs_per_sec={:.0} index_bytes_per_msg={}",
        n as f64 / secs,
        index_bytes / n.max(1) as u64
    );
    b.close().await;
    delete_topology(url, prefix, &[]).await.expect("cleanup");
}

/// `--raw-only N C`: only the raw confirm rates (for scripts/bench-rabbit.sh,
/// which measures the gateway end to end), as `key=value` lines.
async fn raw_only_run(url: &str, prefix: &str, n: usize, c: usize) {
    let sample = sample_record();
    let raw_queue = format!("{prefix}.raw");
    let raw_stream = format!("{prefix}.rawlog");
    let both = Some(raw_stream.as_str());
    raw(url, &raw_queue, None, 500, c, sample.clone()).await;
    raw(url, &raw_queue, both, 500, c, sample.clone()).await;
    let q = raw(url, &raw_queue, None, n, c, sample.clone()).await;
    let b = raw(url, &raw_queue, both, n, c, sample.clone()).await;
    println!("record_bytes={}", sample.len());
    println!("raw_quorum_msgs_per_sec={q:.0}");
    println!("raw_quorum_stream_msgs_per_sec={b:.0}");
    delete_topology(url, prefix, &[raw_queue, raw_stream])
        .await
        .expect("cleanup");
}

#[tokio::main]
async fn main() {
    let url = std::env::var("IMGATE_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--cleanup") {
        // Delete what an interrupted run (or test) left: --cleanup PREFIX...
        for prefix in args.skip(1) {
            delete_topology(&url, &prefix, &[format!("{prefix}.raw")])
                .await
                .expect("cleanup");
        }
        return;
    }
    if args.peek().map(String::as_str) == Some("--devices") {
        args.next();
        let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
        devices(&url, &format!("bench-dev-{}", std::process::id()), n).await;
        return;
    }
    if args.peek().map(String::as_str) == Some("--index-build") {
        args.next();
        let n: usize = args
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or(1_000_000);
        let c: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
        index_build(&url, &format!("bench-ib-{}", std::process::id()), n, c).await;
        return;
    }
    let raw_only = args.peek().map(String::as_str) == Some("--raw-only");
    if raw_only {
        args.next();
    }
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let c: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let prefix = format!("bench-{}", std::process::id());
    if raw_only {
        raw_only_run(&url, &prefix, n, c).await;
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let sep = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{sep}prefix={prefix}");
    let config = RabbitConfig::from_url(&store_url, dir.path(), 1).expect("config");
    let s = Arc::new(RabbitStore::open(config).await.expect("open store"));
    // bob has a registered device (a cursor; nothing on the broker).
    drop(s.attach_device("bench-bob", "phone").await.expect("attach"));
    // A record of the same size as the store's, for the raw run.
    let sample = sample_record();
    let raw_queue = format!("{prefix}.raw");
    let raw_stream = format!("{prefix}.rawlog");
    let both = Some(raw_stream.as_str());
    // Warm up every path, then measure raw, store, raw again.
    raw(&url, &raw_queue, None, 500, c, sample.clone()).await;
    raw(&url, &raw_queue, both, 500, c, sample.clone()).await;
    store(s.clone(), 500, c).await;
    let q1 = raw(&url, &raw_queue, None, n, c, sample.clone()).await;
    let b1 = raw(&url, &raw_queue, both, n, c, sample.clone()).await;
    let st = store(s.clone(), n, c).await;
    let q2 = raw(&url, &raw_queue, None, n, c, sample.clone()).await;
    let b2 = raw(&url, &raw_queue, both, n, c, sample.clone()).await;
    let (rq, rb) = ((q1 + q2) / 2.0, (b1 + b2) / 2.0);
    println!("messages={n} concurrency={c} record_bytes={}", sample.len());
    println!("raw confirms, durable quorum queue:          {rq:.0} msg/s (runs: {q1:.0}, {q2:.0})");
    println!("raw confirms, quorum queue + stream (CC):    {rb:.0} msg/s (runs: {b1:.0}, {b2:.0})");
    println!("RabbitStore::append (same routing, indexed): {st:.0} msg/s");
    println!(
        "ratio store/raw quorum: {:.2}; store/raw quorum+stream: {:.2}",
        st / rq,
        st / rb
    );
    if let Ok(s) = Arc::try_unwrap(s) {
        s.close().await;
    }
    delete_topology(&url, &prefix, &[raw_queue])
        .await
        .expect("cleanup");
}
