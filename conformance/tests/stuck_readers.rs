//! Issue 11 row 7: a client that logs in and stops reading is closed after
//! the write deadline, even though its idle timer cannot fire while a
//! delivery write is stuck. Observed from the server's side: the
//! `imgate_connections` gauge of `/metrics`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use imgate_conformance::{Gateway, PbClient, WAIT};

const ANDROID: i32 = 2;

fn open_connections(g: &Gateway, protocol: &str) -> Option<u64> {
    let text = g.admin().get_text("/metrics");
    let prefix = format!("imgate_connections{{protocol=\"{protocol}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// Wait (bounded) until `protocol` has `want` open connections.
fn wait_for_connections(g: &Gateway, protocol: &str, want: u64) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if open_connections(g, protocol) == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn gateway() -> Gateway {
    Gateway::start_with(&[
        ("IMGATE_WRITE_TIMEOUT_SECS", "2"),
        // The idle timer alone would close the connection within 3 s of
        // silence if the session were not stuck in a write; make it long
        // so only the write deadline can end it.
        ("IMGATE_HEARTBEAT_SECS", "3600"),
        ("IMGATE_RATE_LIMIT_MESSAGES", "100000"),
    ])
}

/// 48 KiB of text per message: ~400 of them (19 MB) overflow the socket
/// buffers of a reader that never reads.
fn big_text(i: usize) -> String {
    format!("{i:06}{}", "x".repeat(48 * 1024))
}

#[test]
fn a_pb_client_that_stops_reading_is_closed_after_the_write_deadline() {
    let g = gateway();
    let bob_token = g.admin().token("bob", "phone", ANDROID);
    // Logged in, then never reads again.
    let _bob = PbClient::login_ok(g.addr("pb"), "bob", &bob_token, "phone", ANDROID);
    assert!(wait_for_connections(&g, "pb", 1));
    let alice = g.client("alice", "web");
    for i in 0..400 {
        let r = alice.send_text("bob", &big_text(i), &format!("big-{i}"));
        assert_eq!(r.code(), 0, "send {i}: {r:?}");
    }
    assert!(
        wait_for_connections(&g, "pb", 0),
        "bob's stuck connection is still open: {:?}",
        open_connections(&g, "pb")
    );
}

fn mqtt_str(out: &mut Vec<u8>, v: &str) {
    out.extend_from_slice(&(v.len() as u16).to_be_bytes());
    out.extend_from_slice(v.as_bytes());
}

/// A packet: the fixed header's first byte, the remaining length as a
/// variable byte integer, the body.
fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// An MQTT 3.1.1 CONNECT (clean session, no keep-alive) for `client_id`
/// with the token as password.
fn mqtt_connect(user: &str, client_id: &str, token: &str) -> Vec<u8> {
    let mut connect = Vec::new();
    mqtt_str(&mut connect, "MQTT");
    connect.extend_from_slice(&[4, 0b1100_0010, 0, 0]);
    mqtt_str(&mut connect, client_id);
    mqtt_str(&mut connect, user);
    mqtt_str(&mut connect, token);
    mqtt_packet(0x10, &connect)
}

/// A SUBSCRIBE to `filter` at QoS 0.
fn mqtt_subscribe(filter: &str) -> Vec<u8> {
    let mut sub = vec![0, 1];
    mqtt_str(&mut sub, filter);
    sub.push(0);
    mqtt_packet(0x82, &sub)
}

#[test]
fn an_mqtt_subscriber_that_stops_reading_is_closed_after_the_write_deadline() {
    let g = gateway();
    let token = g.admin().token("bob", "sensor", ANDROID);
    let mut bob = TcpStream::connect(g.addr("mqtt")).expect("mqtt connect");
    bob.write_all(&mqtt_connect("bob", "sensor", &token))
        .unwrap();
    bob.set_read_timeout(Some(WAIT)).unwrap();
    let mut connack = [0u8; 4];
    bob.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "bob logged in");
    bob.write_all(&mqtt_subscribe("t/#")).unwrap();
    assert!(wait_for_connections(&g, "mqtt", 1));
    // Alice publishes to bob's subscription until bob's connection is
    // closed (or the bounded run ends).
    let ptoken = g.admin().token("alice", "pub", ANDROID);
    let mut alice = TcpStream::connect(g.addr("mqtt")).expect("mqtt connect");
    alice
        .write_all(&mqtt_connect("alice", "pub", &ptoken))
        .unwrap();
    assert!(wait_for_connections(&g, "mqtt", 2));
    let mut body = Vec::new();
    mqtt_str(&mut body, "t/1");
    body.extend_from_slice(&[b'x'; 48 * 1024]);
    let publish = mqtt_packet(0x30, &body);
    let deadline = Instant::now() + WAIT;
    let mut closed = false;
    while Instant::now() < deadline {
        for _ in 0..50 {
            alice.write_all(&publish).expect("alice publishes");
        }
        if open_connections(&g, "mqtt") == Some(1) {
            closed = true;
            break;
        }
    }
    assert!(closed, "bob's stuck MQTT connection is still open");
}
