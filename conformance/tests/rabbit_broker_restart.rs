//! The RabbitMQ broker restarts under load and nothing acked is lost.
//!
//! A real `imgate` gateway on the RabbitMQ store of a *private* broker
//! node ([`PrivateRabbit`]: the shared broker other tests use is never
//! touched), an HTTP sender posting messages in a loop (a failed send is
//! retried with the same `clientMsgId`, as a client would) and a PB device
//! acking what it gets. Mid-stream the broker node is stopped (the whole
//! Erlang VM), kept down until the gateway noticed (a send failed, the
//! connection loss is in its log), and started again on the same data.
//! Then: every message the gateway acked is in the recipient's sync with
//! the acked id, stored once, and reached the device; sends succeed again
//! without restarting the gateway.
//!
//! Skipped (says `SKIPPED` on stderr and passes) when `IMGATE_TEST_AMQP`
//! is unset, like the other RabbitMQ tests, even though it starts its own
//! broker, or when `rabbitmq-server` is not installed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use imgate_conformance::gateway::amqp_with_prefix;
use imgate_conformance::private_rabbit::{self, PrivateRabbit};
use imgate_conformance::rabbit_support::{amqp_url, eventually, try_pb_login};
use imgate_conformance::{unique, Gateway, WAIT};

/// What the sender saw.
#[derive(Default)]
struct Sent {
    /// (clientMsgId, messageUid) of every acked send, in send order.
    acked: Vec<(String, u64)>,
    /// Failed attempts: status, body, how long it took.
    failures: Vec<String>,
    /// The clientMsgId being tried when the sender stopped, if unacked.
    unfinished: Option<String>,
    /// The longest time an acked send took.
    slowest_ack: Duration,
}

/// Sets a flag when dropped, so the scoped threads stop even when the
/// main thread panics (the scope would otherwise wait for them forever).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn acked_len(sent: &Mutex<Sent>) -> usize {
    sent.lock().unwrap().acked.len()
}

#[test]
fn acked_messages_survive_a_broker_restart_under_load() {
    if amqp_url("acked_messages_survive_a_broker_restart_under_load").is_none() {
        return;
    }
    if let Err(why) = private_rabbit::installation() {
        eprintln!("SKIPPED: {why} (the broker restart test starts its own RabbitMQ node)");
        return;
    }
    let t0 = Instant::now();
    let mut rabbit = PrivateRabbit::start().expect("a private RabbitMQ node");
    let booted = t0.elapsed();
    let prefix = unique("restart");
    let store = amqp_with_prefix(&rabbit.url(), &prefix);
    let gw = Gateway::start_with(&[
        ("IMGATE_STORE", store.as_str()),
        ("IMGATE_RATE_LIMIT_MESSAGES", "1000000"),
    ]);
    let (alice, bob) = (unique("rs-alice"), unique("rs-bob"));
    let sender = gw.client(&alice, "web");
    let bob_http = gw.client(&bob, "web");
    let pb_addr = gw.addr("pb").to_string();
    let bob_token = gw.admin().token(&bob, "phone", 2);
    let device = try_pb_login(&pb_addr, &bob, &bob_token, "phone", 2).expect("bob's PB login");

    let sent = Mutex::new(Sent::default());
    let received = Mutex::new(Vec::<u64>::new());
    let reconnects = AtomicUsize::new(0);
    let login_failures = Mutex::new(Vec::<String>::new());
    let (stop_sending, stop_receiving) = (AtomicBool::new(false), AtomicBool::new(false));
    let mut outage = Duration::ZERO;
    let mut restart_took = Duration::ZERO;
    let mut acked_before_stop = 0;
    let mut acked_at_outage = 0;

    std::thread::scope(|s| {
        let _stop_sender = SetOnDrop(&stop_sending);
        let _stop_receiver = SetOnDrop(&stop_receiving);
        let sending = s.spawn(|| {
            let mut i = 0;
            while !stop_sending.load(Ordering::SeqCst) {
                let cmid = format!("{prefix}-m{i}");
                let began = Instant::now();
                let r = sender.send_text(&bob, &format!("message {i}"), &cmid);
                let uid = r.result()["messageUid"].as_u64();
                let mut g = sent.lock().unwrap();
                match (r.status, r.body["code"].as_i64(), uid) {
                    (200, Some(0), Some(uid)) => {
                        g.acked.push((cmid, uid));
                        g.slowest_ack = g.slowest_ack.max(began.elapsed());
                        g.unfinished = None;
                        i += 1;
                    }
                    _ => {
                        g.failures.push(format!(
                            "{} {} after {:?}",
                            r.status,
                            r.body,
                            began.elapsed()
                        ));
                        g.unfinished = Some(cmid);
                        drop(g);
                        // A client's pause before it resends (same id).
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        });
        s.spawn(|| {
            let mut dev = Some(device);
            while !stop_receiving.load(Ordering::SeqCst) {
                match dev.as_mut() {
                    Some(c) => match c.next_deliver(Duration::from_millis(200)) {
                        Some(m) => {
                            received.lock().unwrap().push(m.message_id);
                            c.ack(m.message_id);
                        }
                        None if c.is_closed() => {
                            dev = None;
                            reconnects.fetch_add(1, Ordering::SeqCst);
                        }
                        None => {}
                    },
                    None => match try_pb_login(&pb_addr, &bob, &bob_token, "phone", 2) {
                        Ok(c) => dev = Some(c),
                        Err(e) => {
                            login_failures.lock().unwrap().push(e);
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    },
                }
            }
        });

        // Load before the restart.
        eventually("30 acked sends before the restart", WAIT, || {
            acked_len(&sent) >= 30
        });
        acked_before_stop = acked_len(&sent);
        let stopped_at = Instant::now();
        rabbit.stop().expect("stopping the private RabbitMQ node");
        assert!(!rabbit.is_listening(), "the broker port is still open");
        // The node's VM is gone: nothing can be acked from here on.
        let acked_at_halt = acked_len(&sent);
        // Down until the gateway noticed: a send failed, the loss is logged.
        eventually("a send failing while the broker is down", WAIT * 2, || {
            !sent.lock().unwrap().failures.is_empty()
        });
        eventually("the gateway logging the lost connection", WAIT, || {
            gw.log().contains("RabbitMQ connection lost")
        });
        let acked_while_down = acked_len(&sent);
        acked_at_outage = acked_while_down;
        assert!(!rabbit.is_listening(), "the broker port opened while down");
        assert_eq!(
            acked_while_down, acked_at_halt,
            "sends were acked while the broker was down"
        );
        outage = stopped_at.elapsed();
        let restarting = Instant::now();
        rabbit
            .start_again()
            .expect("starting the private RabbitMQ node again");
        restart_took = restarting.elapsed();
        // Load after the restart, same gateway process.
        eventually("30 more acked sends after the restart", WAIT * 3, || {
            acked_len(&sent) >= acked_while_down + 30
        });
        stop_sending.store(true, Ordering::SeqCst);
        sending.join().expect("the sender thread");

        // One more send on the recovered gateway.
        let cmid = format!("{prefix}-final");
        let last = sender.send_text(&bob, "after the restart", &cmid);
        assert_eq!((last.status, last.code()), (200, 0), "{:?}", last.body);
        let uid = last.result()["messageUid"].as_u64().expect("messageUid");
        sent.lock().unwrap().acked.push((cmid, uid));

        // Every acked message reached the device (which acked it).
        let acked_ids: BTreeSet<u64> = sent.lock().unwrap().acked.iter().map(|a| a.1).collect();
        let deadline = Instant::now() + WAIT * 2;
        loop {
            let got: BTreeSet<u64> = received.lock().unwrap().iter().copied().collect();
            let missing: Vec<&u64> = acked_ids.difference(&got).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} acked messages never reached bob's device (e.g. {:?}); device reconnects: {}, \
                 login failures: {:?}",
                missing.len(),
                &missing[..missing.len().min(10)],
                reconnects.load(Ordering::SeqCst),
                login_failures.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        stop_receiving.store(true, Ordering::SeqCst);
    });

    let sent = sent.into_inner().unwrap();
    let received = received.into_inner().unwrap();
    // Every acked message is in bob's sync with its acked id, stored once.
    let sync = bob_http.sync_all(0);
    let mut by_cmid: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in &sync {
        let cmid = m["clientMsgId"].as_str().unwrap_or_default().to_string();
        by_cmid
            .entry(cmid)
            .or_default()
            .push(m["messageUid"].as_u64().expect("messageUid"));
    }
    for (cmid, uid) in &sent.acked {
        assert_eq!(
            by_cmid.get(cmid),
            Some(&vec![*uid]),
            "acked {cmid} = {uid} is not in bob's sync exactly once"
        );
    }
    // Nothing else: a failed attempt was resent with the same id until
    // acked, so only the last, unfinished one may be stored unacked.
    let acked_cmids: BTreeSet<&String> = sent.acked.iter().map(|a| &a.0).collect();
    let extra: Vec<&String> = by_cmid
        .keys()
        .filter(|c| !acked_cmids.contains(c) && Some(*c) != sent.unfinished.as_ref())
        .collect();
    assert!(extra.is_empty(), "unexpected messages in sync: {extra:?}");
    // The device got nothing that is not in sync.
    let sync_ids: BTreeSet<u64> = by_cmid.values().flatten().copied().collect();
    let phantom: Vec<&u64> = received.iter().filter(|u| !sync_ids.contains(u)).collect();
    assert!(phantom.is_empty(), "delivered but not in sync: {phantom:?}");

    // The restart really happened and the gateway saw it.
    let log = gw.log();
    assert_eq!(rabbit.starts(), 2);
    assert!(
        !sent.failures.is_empty(),
        "no send failed during the outage"
    );
    assert!(
        log.contains("RabbitMQ connection re-established"),
        "the gateway never reconnected"
    );
    let redelivered = received.len() - received.iter().collect::<BTreeSet<_>>().len();
    eprintln!(
        "broker restart: broker booted in {booted:?}, down for {outage:?}, restarted in \
         {restart_took:?}; {} sends acked ({acked_before_stop} when the stop began, \
         {acked_at_outage} when the node had halted), slowest acked send {:?}; failed \
         attempts: {:?}; device got {} deliveries ({redelivered} repeated, {} reconnects); \
         total {:?}",
        sent.acked.len(),
        sent.slowest_ack,
        sent.failures,
        received.len(),
        reconnects.load(Ordering::SeqCst),
        t0.elapsed()
    );
}
