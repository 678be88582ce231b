//! Operations metrics and probes (issue 14): the store append histogram,
//! unacked deliveries, connections per listener and the review hook's
//! queue depth move with real traffic; `/readyz` turns 503 at shutdown
//! while everything still serves.

use std::time::{Duration, Instant};

use imgate_conformance::fake_http::FakeHttp;
use imgate_conformance::{unique, Gateway, PbClient, WAIT};

fn metric(g: &Gateway, series: &str) -> f64 {
    let text = g.admin().get_text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{series} is not a number"))
}

/// Status of a plain GET.
fn status(url: &str) -> u16 {
    match ureq::get(url).timeout(Duration::from_secs(10)).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[test]
fn append_latency_unacked_deliveries_and_connections_follow_traffic() {
    let g = Gateway::start();
    let (alice, bob) = (unique("om-a"), unique("om-b"));
    assert_eq!(
        metric(&g, "imgate_store_append_duration_seconds_count"),
        0.0
    );
    assert_eq!(metric(&g, "imgate_connections{protocol=\"pb\"}"), 0.0);
    let token = g.admin().token(&bob, "b1", 1);
    let mut pb = PbClient::login_ok(g.addr("pb"), &bob, &token, "b1", 1);
    assert_eq!(metric(&g, "imgate_connections{protocol=\"pb\"}"), 1.0);
    let sender = g.client(&alice, "web");
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = sender.send_text(&bob, &format!("m{i}"), &unique("c"));
        assert_eq!(r.code(), 0, "{:?}", r.body);
        ids.push(r.result()["messageUid"].as_u64().unwrap());
    }
    assert_eq!(
        metric(&g, "imgate_store_append_duration_seconds_count"),
        3.0
    );
    assert_eq!(
        metric(
            &g,
            "imgate_store_append_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        3.0
    );
    // Delivered to bob's PB device, not acked yet: pending.
    for id in &ids {
        assert_eq!(pb.next_deliver(WAIT).map(|m| m.message_id), Some(*id));
    }
    assert_eq!(metric(&g, "imgate_deliveries_unacked"), 3.0);
    for id in &ids {
        pb.ack(*id);
    }
    // The acks are answered only in the store; a sync on the same
    // connection comes after them.
    pb.sync(0, 1);
    assert_eq!(metric(&g, "imgate_deliveries_unacked"), 0.0);
    drop(pb);
    let deadline = Instant::now() + WAIT;
    while metric(&g, "imgate_connections{protocol=\"pb\"}") != 0.0 {
        assert!(Instant::now() < deadline, "pb connection still counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn review_forward_queue_depth_is_exported() {
    // Requests are held until the gate opens: the 4 workers hold one
    // forward each, the rest waits in the queue.
    let hook = FakeHttp::start(false, |_| (200, String::new()));
    let g = Gateway::start_with(&[
        ("IMGATE_REVIEW_URL", &hook.url),
        ("IMGATE_REVIEW_MODE", "forward"),
        ("IMGATE_REVIEW_QUEUE", "50"),
    ]);
    let c = g.client(&unique("om-r"), "web");
    for i in 0..10 {
        assert_eq!(
            c.send_text("someone", &format!("r{i}"), &unique("r"))
                .code(),
            0
        );
    }
    // The workers took 4 (they are at the gate): 6 wait.
    hook.wait_for(4, WAIT);
    assert_eq!(metric(&g, "imgate_review_forward_queue_capacity"), 50.0);
    assert_eq!(metric(&g, "imgate_review_forward_queue_depth"), 6.0);
    hook.open_gate();
    hook.wait_for(10, WAIT);
    assert_eq!(metric(&g, "imgate_review_forward_queue_depth"), 0.0);
}

#[test]
fn readyz_fails_at_shutdown_while_the_node_still_serves() {
    let g = Gateway::start_with(&[("IMGATE_SHUTDOWN_READY_DELAY_SECS", "30")]);
    let (admin, http) = (format!("{}/readyz", g.admin_url()), g.http_url());
    assert_eq!(status(&admin), 200);
    assert_eq!(status(&format!("{http}/readyz")), 200);
    g.send_sigterm();
    let deadline = Instant::now() + WAIT;
    while status(&admin) != 503 {
        assert!(Instant::now() < deadline, "/readyz still 200 after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status(&format!("{http}/readyz")), 503);
    assert_eq!(status(&format!("{http}/healthz")), 200);
    // Still serving: a login and a send work.
    let user = unique("om-d");
    let token = g.admin().token(&user, "d1", 1);
    let _pb = PbClient::login_ok(g.addr("pb"), &user, &token, "d1", 1);
    assert_eq!(
        g.client(&user, "web")
            .send_text("x", "still", &unique("s"))
            .code(),
        0
    );
}
