//! MQTT 5 shared subscriptions across two real gateway processes on one
//! RabbitMQ: a group with a member on each node gets every message
//! exactly once in the whole cluster, spread over both members.
//!
//! Needs `IMGATE_TEST_AMQP` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! without it the test says so on stderr and passes. The nodes share an
//! admin secret and a name prefix unique to the test, whose queues are
//! deleted at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use imgate_conformance::mqtt::MqttAgent;
use imgate_conformance::rabbit_support::{amqp_url, Cluster};
use imgate_conformance::{unique, Gateway, WAIT};
use serde_json::{json, Value};

/// An MQTT client (paho, through the conformance agent) on node `g`.
fn mqtt(g: &Gateway, user: &str, device: &str, version: u8) -> MqttAgent {
    let token = g.admin().token(user, device, 1);
    let mut agent = MqttAgent::start(g.addr("mqtt"));
    let ack = agent.connect(json!({
        "version": version, "client_id": device, "user": user, "token": token
    }));
    assert_eq!(ack["rc"], 0, "{ack}");
    agent
}

/// The payloads a member got on `data` until the message on `end`
/// (published after the data, so everything before it has arrived).
fn collect_until(member: &mut MqttAgent, data: &str, end: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let m = member.expect("a message", |v: &Value| {
            v["event"] == "message" && (v["topic"] == data || v["topic"] == end)
        });
        if m["topic"] == end {
            return got;
        }
        got.push(m["payload"].as_str().unwrap_or_default().to_string());
    }
}

#[test]
fn a_shared_group_across_nodes_gets_each_message_once() {
    let Some(url) = amqp_url("a_shared_group_across_nodes_gets_each_message_once") else {
        return;
    };
    // 200 publishes from one user, well within the test's time.
    let c = Cluster::start_with(&url, &[("IMGATE_RATE_LIMIT_MESSAGES", "100000")]);
    let t = unique("jobs");
    let group = format!("$share/g/{t}/#");
    let (probe, data, end) = (
        format!("{t}/probe"),
        format!("{t}/data"),
        format!("{t}-end"),
    );
    let mut on_a = mqtt(&c.a, "sh-worker-a", "wa", 5);
    let mut on_b = mqtt(&c.b, "sh-worker-b", "wb", 5);
    for w in [&mut on_a, &mut on_b] {
        assert_eq!(w.subscribe(&group, 1), vec![1]);
        assert_eq!(w.subscribe(&end, 1), vec![1]);
    }
    let mut publisher = mqtt(&c.a, "sh-sensor", "s1", 5);

    // Node A assigns copies to node B once it has seen B's member: probe
    // until one reaches B.
    let deadline = Instant::now() + WAIT;
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "node A never assigned a message to the member on node B"
        );
        let rc = publisher.publish(json!({"topic": probe, "payload": format!("p{i}"), "qos": 1}));
        assert_eq!(rc, 0);
        let reached = on_b.try_expect(Duration::from_millis(300), &|v: &Value| {
            v["event"] == "message" && v["topic"] == probe
        });
        if reached.is_some() {
            break;
        }
    }

    const N: usize = 200;
    for i in 0..N {
        let rc = publisher.publish(json!({"topic": data, "payload": format!("m{i}"), "qos": 1}));
        assert_eq!(rc, 0, "publish {i}");
    }
    assert_eq!(
        publisher.publish(json!({"topic": end, "payload": "end", "qos": 1})),
        0
    );
    let got_a = collect_until(&mut on_a, &data, &end);
    let got_b = collect_until(&mut on_b, &data, &end);
    eprintln!("{} on node A, {} on node B", got_a.len(), got_b.len());

    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for p in got_a.iter().chain(&got_b) {
        *copies.entry(p.clone()).or_default() += 1;
    }
    let duplicated: Vec<&String> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| p)
        .collect();
    assert!(
        duplicated.is_empty(),
        "delivered more than once: {duplicated:?}"
    );
    let missing: Vec<String> = (0..N)
        .map(|i| format!("m{i}"))
        .filter(|p| !copies.contains_key(p))
        .collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    assert_eq!(copies.len(), N);
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "spread over both nodes: {} on A, {} on B",
        got_a.len(),
        got_b.len()
    );
}
