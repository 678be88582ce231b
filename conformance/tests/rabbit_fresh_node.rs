//! A node started after many messages, with an empty data dir, is ready
//! with all of them: its index is a cache of the streams, rebuilt from
//! them before the gateway says `ready`.
//!
//! Node A appends [`MESSAGES`] messages to one recipient (from
//! [`SENDERS`] HTTP clients in parallel), then node C starts on the same
//! prefix with a fresh data dir. As soon as [`Gateway::start_with`]
//! returns (the gateway printed `ready`, the store caught up), the
//! recipient's sync on C equals the one on A: the same messages, ids and
//! order. Prints how long the appends took and how long C took to become
//! ready (also the store's own catch-up time from its log).
//!
//! Needs `IMGATE_TEST_AMQP` (the shared broker); without it the test says
//! `SKIPPED` on stderr and passes. The prefix's queues are deleted at the
//! end, also when the test fails.

use std::sync::Mutex;
use std::time::Instant;

use imgate_conformance::rabbit_support::{amqp_url, rabbit_node, PrefixCleanup};
use imgate_conformance::{unique, Client};

const MESSAGES: usize = 5_000;
const SENDERS: usize = 8;

/// The store's own "ready" line: `took_ms=<n>` of the catch-up (the log
/// may be coloured: escape sequences are left out first).
fn store_ready_ms(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("RabbitMQ store ready"))?;
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // CSI: ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(ch);
        }
    }
    let at = plain.find("took_ms=")? + "took_ms=".len();
    let digits: String = plain[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn a_node_started_after_5000_messages_is_ready_with_all_of_them() {
    let Some(url) = amqp_url("a_node_started_after_5000_messages_is_ready_with_all_of_them") else {
        return;
    };
    let prefix = unique("fresh");
    let _cleanup = PrefixCleanup(prefix.clone());
    let secret = unique("secret");
    let env = [("IMGATE_RATE_LIMIT_MESSAGES", "1000000")];
    let a = rabbit_node(&url, &prefix, &secret, 1, &env);
    let rcpt = unique("fresh-rcpt");
    let senders: Vec<Client> = (0..SENDERS)
        .map(|i| a.client(&unique(&format!("fresh-s{i}")), "web"))
        .collect();

    let appending = Instant::now();
    let acked = Mutex::new(Vec::with_capacity(MESSAGES));
    std::thread::scope(|s| {
        for (t, sender) in senders.iter().enumerate() {
            let (acked, rcpt) = (&acked, &rcpt);
            s.spawn(move || {
                for i in 0..MESSAGES / SENDERS {
                    let r = sender.send_text(rcpt, &format!("s{t} m{i}"), &format!("s{t}-m{i}"));
                    assert_eq!((r.status, r.code()), (200, 0), "{:?}", r.body);
                    let uid = r.result()["messageUid"].as_u64().expect("messageUid");
                    acked.lock().unwrap().push(uid);
                }
            });
        }
    });
    let append_took = appending.elapsed();
    let mut acked = acked.into_inner().unwrap();
    acked.sort_unstable();
    acked.dedup();
    assert_eq!(acked.len(), MESSAGES, "distinct acked ids");

    let on_a = a.client(&rcpt, "web").sync_all(0);
    let ids_a: Vec<u64> = on_a
        .iter()
        .filter_map(|m| m["messageUid"].as_u64())
        .collect();
    assert_eq!(ids_a, acked, "node A's sync is every acked message");

    // Node C, empty data dir, started after all of it.
    let starting = Instant::now();
    let c = rabbit_node(&url, &prefix, &secret, 3, &env);
    let ready_took = starting.elapsed();
    let syncing = Instant::now();
    let on_c = c.client(&rcpt, "web").sync_all(0);
    let sync_took = syncing.elapsed();
    let ids_c: Vec<u64> = on_c
        .iter()
        .filter_map(|m| m["messageUid"].as_u64())
        .collect();
    assert_eq!(
        ids_c.len(),
        MESSAGES,
        "messages in node C's sync when ready"
    );
    assert_eq!(ids_c, ids_a, "node C's sync ids vs node A's");
    assert_eq!(on_c, on_a, "node C's sync vs node A's (whole messages)");
    eprintln!(
        "fresh node: {MESSAGES} messages appended on node A in {append_took:?} ({SENDERS} \
         senders, {:.0}/s); node C with an empty data dir ready in {ready_took:?} (store \
         catch-up {} ms); its full sync read in {sync_took:?}",
        MESSAGES as f64 / append_took.as_secs_f64(),
        store_ready_ms(&c.log()).map_or("?".to_string(), |ms| ms.to_string())
    );
}
