//! A gateway node is killed with `kill -9` while its devices are online;
//! they reconnect to another node of the same RabbitMQ prefix and get
//! every message they had not acked, plus what was sent afterwards.
//!
//! Nodes A and B share a prefix (unique to the test) and an admin secret.
//! [`DEVICES`] PB devices (one user each) connect to A and receive
//! messages sent from B; each acks the first half of what it got. Half of
//! the devices ack before a device new to the cluster logs in on A (that
//! login is answered once its registration is in the control stream, and
//! the same flush carries every cursor move pending on A), the other half
//! just before A is killed. Then more messages are sent (to devices
//! attached nowhere), the devices log in on B, more messages are sent
//! (live). Each device must get everything it did not ack. The first
//! half must not get acked messages again; the second half may (A's last
//! cursor batch, at most `cursor_flush` old, may die with it), but only as
//! a tail of what it acked: B resumes from a cursor the device really had.
//!
//! Also checked: the broker holds the same objects with 20 devices as
//! with 1 (the prefix's three streams, the retained-MQTT stream, one
//! `mqtt.node` queue per running node, one exchange; the same connections
//! and channels), and A's node queue is gone after the kill.
//!
//! Needs `IMGATE_TEST_AMQP` (the shared broker); without it the test says
//! `SKIPPED` on stderr and passes. The prefix's queues are deleted at the
//! end, also when the test fails.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use imgate_conformance::pb::PbClient;
use imgate_conformance::rabbit_support::{
    amqp_url, assert_fixed_queues, connections_of, eventually, exchanges_of, queues_of,
    rabbit_node, try_pb_login, PrefixCleanup,
};
use imgate_conformance::{unique, Client, Gateway, WAIT};

/// Devices on node A, one user each.
const DEVICES: usize = 20;
/// Messages per device before the kill; the device acks the first half.
const FIRST: usize = 10;
/// Devices whose acks are known to be in the control stream before the
/// kill (the others ack just before it).
const FLUSHED: usize = DEVICES / 2;
/// Messages per device sent after the kill, before the device reconnects.
const WHILE_AWAY: usize = 3;
/// Messages per device sent after it reconnected to node B.
const AFTER: usize = 3;

/// Read deliveries until every id of `want` came (within [`WAIT`]); all
/// the ids read, in order.
fn collect(dev: &mut PbClient, want: &BTreeSet<u64>, who: &str) -> Vec<u64> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let missing: Vec<u64> = want
            .iter()
            .filter(|id| !got.contains(*id))
            .copied()
            .collect();
        if missing.is_empty() {
            return got;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{who}: messages {missing:?} never came (got {got:?})"
        );
        match dev.next_deliver(left.min(Duration::from_millis(500))) {
            Some(m) => got.push(m.message_id),
            None => assert!(
                !dev.is_closed(),
                "{who}: connection closed; missing {missing:?}"
            ),
        }
    }
}

/// Send one message to each user from `sender`; the ids, per user.
fn send_round(sender: &Client, users: &[String], tag: &str, sent: &mut [Vec<u64>]) {
    for (i, user) in users.iter().enumerate() {
        let n = sent[i].len();
        let r = sender.send_text(user, &format!("{tag} {n}"), &format!("{user}-{n}"));
        assert_eq!((r.status, r.code()), (200, 0), "{:?}", r.body);
        sent[i].push(r.result()["messageUid"].as_u64().expect("messageUid"));
    }
}

#[test]
fn devices_of_a_killed_node_resume_on_another_node_without_loss() {
    let Some(url) = amqp_url("devices_of_a_killed_node_resume_on_another_node_without_loss") else {
        return;
    };
    let prefix = unique("failover");
    let _cleanup = PrefixCleanup(prefix.clone());
    let secret = unique("secret");
    let env = [("IMGATE_RATE_LIMIT_MESSAGES", "1000000")];
    let mut a = rabbit_node(&url, &prefix, &secret, 1, &env);
    let b = rabbit_node(&url, &prefix, &secret, 2, &env);
    let sender = b.client(&unique("fo-sender"), "web");
    let users: Vec<String> = (0..DEVICES).map(|i| unique(&format!("fo-u{i}"))).collect();
    let tokens: Vec<String> = users
        .iter()
        .map(|u| a.admin().token(u, "phone", 2))
        .collect();
    let login = |g: &Gateway, i: usize| {
        try_pb_login(g.addr("pb"), &users[i], &tokens[i], "phone", 2)
            .unwrap_or_else(|e| panic!("PB login of {}: {e}", users[i]))
    };

    // One device online: what the broker holds for the prefix...
    let mut devices = vec![login(&a, 0)];
    let (queues_1, exchanges_1, conns_1) = (
        queues_of(&prefix),
        exchanges_of(&prefix),
        connections_of(&prefix),
    );
    assert_fixed_queues(&queues_1, &prefix, 2);
    assert_eq!(
        exchanges_1,
        BTreeSet::from([format!("{prefix}.inbox")]),
        "exchanges of the prefix"
    );
    // ...is what it holds with twenty.
    devices.extend((1..DEVICES).map(|i| login(&a, i)));
    assert_eq!(
        queues_of(&prefix),
        queues_1,
        "queues with {DEVICES} devices"
    );
    assert_eq!(exchanges_of(&prefix), exchanges_1);
    assert_eq!(
        connections_of(&prefix),
        conns_1,
        "(connections, channels) with {DEVICES} devices vs 1"
    );

    // Messages from node B reach the devices on node A; each acks half.
    let mut sent: Vec<Vec<u64>> = vec![Vec::new(); DEVICES];
    for _ in 0..FIRST {
        send_round(&sender, &users, "before", &mut sent);
    }
    let acks = |dev: &mut PbClient, i: usize| {
        let first_half: Vec<u64> = sent[i][..FIRST / 2].to_vec();
        for id in &first_half {
            dev.ack(*id);
        }
        // Answered after the acks before it: node A has moved the cursor.
        assert!(dev.heartbeat(), "{}: heartbeat", users[i]);
        first_half
    };
    for (i, dev) in devices.iter_mut().enumerate() {
        let want: BTreeSet<u64> = sent[i].iter().copied().collect();
        let got = collect(dev, &want, &users[i]);
        assert_eq!(
            got.iter().copied().collect::<BTreeSet<u64>>(),
            want,
            "{}: deliveries on node A",
            users[i]
        );
    }
    // The first half of the devices ack; then a device new to the cluster
    // logs in on node A: its login is answered once its registration is in
    // the control stream, and the flush that carries it carries every
    // cursor move pending on A (`cursor_log`), so these acks are durable.
    let mut acked: Vec<Vec<u64>> = Vec::new();
    for (i, dev) in devices.iter_mut().enumerate().take(FLUSHED) {
        acked.push(acks(dev, i));
    }
    let probe = unique("fo-probe");
    let probe_token = a.admin().token(&probe, "probe", 2);
    let probe_dev = try_pb_login(a.addr("pb"), &probe, &probe_token, "probe", 2)
        .unwrap_or_else(|e| panic!("PB login of {probe}: {e}"));
    // The other half ack just before the kill: their last batch may be
    // lost with node A (a redelivery, never a loss).
    for (i, dev) in devices.iter_mut().enumerate().skip(FLUSHED) {
        acked.push(acks(dev, i));
    }

    // kill -9 node A; more messages while its devices are away.
    a.kill9();
    let killed = Instant::now();
    drop(devices);
    drop(probe_dev);
    for _ in 0..WHILE_AWAY {
        send_round(&sender, &users, "while away", &mut sent);
    }
    // The devices come back on node B; then live messages.
    let mut devices: Vec<PbClient> = (0..DEVICES).map(|i| login(&b, i)).collect();
    for _ in 0..AFTER {
        send_round(&sender, &users, "after", &mut sent);
    }
    let mut repeated = 0;
    let mut devices_with_repeats = 0;
    for (i, dev) in devices.iter_mut().enumerate() {
        let who = &users[i];
        let unacked: BTreeSet<u64> = sent[i][FIRST / 2..].iter().copied().collect();
        let got = collect(dev, &unacked, who);
        let all: BTreeSet<u64> = sent[i].iter().copied().collect();
        let strangers: Vec<&u64> = got.iter().filter(|id| !all.contains(id)).collect();
        assert!(strangers.is_empty(), "{who}: not sent to it: {strangers:?}");
        // Acked ones again: only a tail of the acked (a cursor it had).
        let again: Vec<u64> = acked[i]
            .iter()
            .filter(|id| got.contains(id))
            .copied()
            .collect();
        let tail = &acked[i][acked[i].len() - again.len()..];
        assert_eq!(
            again, tail,
            "{who}: redelivered acked messages are not a tail of its acks {:?}",
            acked[i]
        );
        if i < FLUSHED {
            assert!(
                again.is_empty(),
                "{who}: acks confirmed in the control stream before the kill were not honoured \
                 on node B: {again:?} came again"
            );
        }
        if !again.is_empty() {
            devices_with_repeats += 1;
            repeated += again.len();
        }
        for id in &got {
            dev.ack(*id);
        }
    }
    let resumed = killed.elapsed();
    // Node B's sync agrees, for every user.
    for (i, user) in users.iter().enumerate() {
        let ids: Vec<u64> = b
            .client(user, "web")
            .sync_all(0)
            .iter()
            .filter_map(|m| m["messageUid"].as_u64())
            .collect();
        assert_eq!(ids, sent[i], "{user}: sync on node B");
    }
    // Node A's own queue went with it; the rest is unchanged.
    let mut now = BTreeSet::new();
    eventually("node A's mqtt.node queue to go", WAIT * 2, || {
        now = queues_of(&prefix);
        now.len() == queues_1.len() - 1
    });
    assert_fixed_queues(&now, &prefix, 1);
    assert!(now.is_subset(&queues_1), "{now:?} vs {queues_1:?}");
    eprintln!(
        "failover: {DEVICES} devices resumed on node B {resumed:?} after kill -9 of node A; \
         {repeated} acked messages redelivered to {devices_with_repeats} devices (of the \
         {} that acked just before the kill); broker objects \
         for 1 and {DEVICES} devices: {} queues, {} exchange, (connections, channels) {:?}",
        DEVICES - FLUSHED,
        queues_1.len(),
        exchanges_1.len(),
        conns_1
    );
}
