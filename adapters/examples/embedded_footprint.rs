//! Disk bytes per stored 1:1 message of the embedded store, and its raw
//! durable append rate (no gateway, no network): `C` tasks call
//! `EmbeddedStore::append` `N` times in total with a 100-byte text between
//! 64 senders and one recipient, each with a client message id, as the
//! IM path stores them. Then the file is compacted and its size divided by
//! `N` (issue 10's target: ≤ 400 B per message).
//!
//! ```text
//! cargo run --release -p imgate-adapters --example embedded_footprint -- [N] [C]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use imgate_adapters::{EmbeddedConfig, EmbeddedStore};
use imgate_core::model::{Conversation, MessagePayload};
use imgate_core::store::NewMessage;
use imgate_core::Store;

fn message(i: usize) -> NewMessage {
    let sender = format!("sender-{:02}", i % 64);
    NewMessage {
        sender: sender.clone(),
        sender_device: Some("phone".into()),
        conversation: Conversation::private("receiver-1"),
        payload: MessagePayload::text("x".repeat(100)),
        client_msg_id: format!("c-{i:08}"),
        to_users: vec![],
        recipients: vec![sender, "receiver-1".into()],
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let c: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path()))?);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c.max(1) {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), imgate_core::StoreError>(());
                }
                store.append(message(i)).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let store = Arc::try_unwrap(store).map_err(|_| "store still shared")?;
    store.close().await;
    let path = dir.path().join("imgate.redb");
    let before = std::fs::metadata(&path)?.len();
    let mut db = redb::Database::open(&path)?;
    while db.compact()? {}
    {
        use redb::{ReadableTableMetadata, TableHandle};
        let txn = db.begin_read()?;
        for t in txn.list_tables()? {
            let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new(t.name());
            // Stats need no key/value decoding: open untyped.
            let stats = match txn.open_untyped_table(def) {
                Ok(table) => table.stats()?,
                Err(_) => continue,
            };
            println!(
                "table={} leaf_pages={} stored_bytes={} metadata_bytes={} fragmented_bytes={}",
                t.name(),
                stats.leaf_pages(),
                stats.stored_bytes(),
                stats.metadata_bytes(),
                stats.fragmented_bytes()
            );
        }
    }
    drop(db);
    let after = std::fs::metadata(&path)?.len();
    println!(
        "appends={n} concurrency={c} msgs_per_sec={:.0} file_bytes={before} compacted_bytes={after} bytes_per_message={:.0}",
        n as f64 / secs,
        after as f64 / n as f64
    );
    Ok(())
}
