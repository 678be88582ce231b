//! Event webhooks (issue 14): with `webhook_url` set, logins over PB, MQTT
//! and XMPP, their ends and delivery acks are POSTed as signed JSON
//! events; a refused event is retried; a dead receiver never slows a
//! session, and what does not fit the queue is dropped and counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use imgate_conformance::fake_http::{signature_verifies, FakeHttp, RawRequest};
use imgate_conformance::mqtt::MqttAgent;
use imgate_conformance::xmpp::XmppRaw;
use imgate_conformance::{unique, Gateway, PbClient, WAIT};
use serde_json::{json, Value};

const SECRET: &str = "webhook-test-secret";

/// One expected event.
type Check = Box<dyn Fn(&Value) -> bool>;

fn event(r: &RawRequest) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

fn has(reqs: &[RawRequest], pred: &dyn Fn(&Value) -> bool) -> bool {
    reqs.iter().map(event).any(|e| pred(&e))
}

/// The value of one metric line (`name{labels}`), 0 if absent.
fn metric(g: &Gateway, series: &str) -> f64 {
    let text = g.admin().get_text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
}

#[test]
fn logins_logouts_and_acks_are_signed_events_and_a_500_is_retried() {
    // The first request is refused with a 500; every later one accepted.
    let answered = Arc::new(AtomicUsize::new(0));
    let n = answered.clone();
    let hook = FakeHttp::start(true, move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            (500, String::new())
        } else {
            (200, String::new())
        }
    });
    let g = Gateway::start_with(&[
        ("IMGATE_WEBHOOK_URL", &hook.url),
        ("IMGATE_HOOK_SECRET", SECRET),
        ("IMGATE_WEBHOOK_BACKOFF_MS", "50"),
    ]);
    let (alice, bob, carol) = (unique("wh-a"), unique("wh-b"), unique("wh-c"));
    let admin = g.admin();

    let mut pb = PbClient::login_ok(
        g.addr("pb"),
        &alice,
        &admin.token(&alice, "pb1", 1),
        "pb1",
        1,
    );
    let mut mq = MqttAgent::start(g.addr("mqtt"));
    let ack = mq.connect(json!({"version": 5, "client_id": "mq1", "user": bob,
        "token": admin.token(&bob, "mq1", 1)}));
    assert_eq!(ack["rc"], 0, "{ack}");
    let (_x, _jid) = XmppRaw::login(
        g.addr("xmpp"),
        "localhost",
        &carol,
        &admin.token(&carol, "xm1", 1),
    );

    // A message to alice over PB, acked by her device.
    let sent = g
        .client(&bob, "web")
        .send_text(&alice, "hello", &unique("m"));
    assert_eq!(sent.code(), 0, "{:?}", sent.body);
    let uid = sent.result()["messageUid"].as_u64().expect("messageUid");
    let m = pb.next_deliver(WAIT).expect("delivered to alice");
    assert_eq!(m.message_id, uid);
    pb.ack(uid);
    // Her session ends.
    drop(pb);
    // Bob reads his conversation with alice over HTTP.
    let read = g.client(&bob, "web").post(
        "/v1/conversations/read",
        &json!({"conv": {"type": 0, "target": alice, "line": 0}, "messageUid": uid}),
    );
    assert_eq!(read.code(), 0, "{:?}", read.body);

    let is = |kind: &'static str, user: String, device: &'static str, proto: &'static str| {
        move |e: &Value| {
            e["event"] == kind
                && e["user"] == user
                && e["device"] == device
                && e["protocol"] == proto
        }
    };
    let uid_str = uid.to_string();
    let want: Vec<Check> = vec![
        Box::new(is("connected", alice.clone(), "pb1", "pb")),
        Box::new(is("connected", bob.clone(), "mq1", "mqtt")),
        Box::new(is("connected", carol.clone(), "xm1", "xmpp")),
        Box::new(is("disconnected", alice.clone(), "pb1", "pb")),
        Box::new({
            let delivered = is("delivered", alice.clone(), "pb1", "pb");
            move |e: &Value| {
                delivered(e)
                    && e["messageUid"] == uid
                    && e["messageUidStr"].as_str() == Some(uid_str.as_str())
            }
        }),
        Box::new({
            let read = is("read", bob.clone(), "web", "http");
            let alice = alice.clone();
            move |e: &Value| {
                read(e) && e["messageUid"] == uid && e["conv"]["target"] == alice.as_str()
            }
        }),
    ];
    let got = hook.wait_until(WAIT, |reqs| want.iter().all(|w| has(reqs, w.as_ref())));
    for (i, w) in want.iter().enumerate() {
        assert!(
            has(&got, w.as_ref()),
            "event {i} missing; got {:?}",
            got.iter().map(event).collect::<Vec<_>>()
        );
    }
    for r in &got {
        let e = event(r);
        for key in ["event", "user", "device", "protocol", "id"] {
            assert!(e[key].is_string(), "{key} in {e}");
        }
        assert!(e["time"].is_i64() && e["node"].is_u64(), "{e}");
        let ts = r.header("x-imgate-timestamp").expect("timestamp header");
        let sig = r.header("x-imgate-signature").expect("signature header");
        assert!(signature_verifies(SECRET, ts, &r.body, sig), "{e}");
        assert!(!signature_verifies("another", ts, &r.body, sig));
    }
    // The refused first event came again: the same id twice.
    let first = event(&got[0]);
    assert!(
        got.iter().skip(1).any(|r| event(r)["id"] == first["id"]),
        "the event answered 500 was not retried: {first}"
    );
    assert!(metric(&g, "imgate_webhook_events_total{outcome=\"retried\"}") >= 1.0);
    assert!(metric(&g, "imgate_webhook_events_total{outcome=\"delivered\"}") >= 5.0);
}

#[test]
fn a_dead_receiver_with_a_full_queue_drops_and_counts_without_slowing_logins() {
    // A port nobody listens on any more.
    let url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/events", l.local_addr().unwrap())
    };
    let g = Gateway::start_with(&[
        ("IMGATE_WEBHOOK_URL", &url),
        ("IMGATE_WEBHOOK_QUEUE", "1"),
        ("IMGATE_WEBHOOK_RETRIES", "100"),
        ("IMGATE_WEBHOOK_BACKOFF_MS", "20000"),
    ]);
    let user = unique("wh-dead");
    let started = std::time::Instant::now();
    for i in 0..10 {
        let device = format!("d{i}");
        let token = g.admin().token(&user, &device, 0);
        let c = PbClient::login_ok(g.addr("pb"), &user, &token, &device, 0);
        drop(c);
    }
    assert!(
        started.elapsed() < WAIT,
        "logins waited for the webhook: {:?}",
        started.elapsed()
    );
    // Each login emitted `connected` before its answer: 10 events, of
    // which the workers hold one each (retrying, 20 s apart) and the
    // queue one; the rest was dropped at once.
    let dropped = metric(
        &g,
        "imgate_webhook_events_total{outcome=\"dropped_queue_full\"}",
    );
    assert!(dropped >= 5.0, "dropped {dropped}");
    assert_eq!(metric(&g, "imgate_webhook_events_queue_capacity"), 1.0);
    assert!(metric(&g, "imgate_webhook_events_queue_depth") <= 1.0);
    assert_eq!(
        metric(&g, "imgate_webhook_events_total{outcome=\"delivered\"}"),
        0.0
    );
}
