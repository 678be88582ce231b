//! The PROXY protocol (`proxy_protocol`) on the real binary over real
//! sockets: behind a TCP load balancer every connection comes from the
//! balancer's address (here 127.0.0.1) and starts with a v1 or v2 header
//! naming the client; the per-IP limits and the logs use that client
//! address. A listed listener refuses a connection without a valid
//! header; a listener not listed is unchanged.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};
use std::time::Duration;

use imgate_codecs::mqtt::{Connect, Packet, Properties, Version};
use imgate_codecs::pb::{proto, PbRequest};
use imgate_conformance::mqtt::RawMqtt;
use imgate_conformance::xmpp::{stream_header, XmppRaw};
use imgate_conformance::{Gateway, PbClient, WAIT};

const ANDROID: i32 = 2;
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A gateway with PB and MQTT behind a balancer, two connections per IP,
/// debug logs (the refusals and logins name the peer).
fn proxied_gateway(extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![
        ("IMGATE_PROXY_PROTOCOL", "pb,mqtt"),
        ("IMGATE_MAX_CONNECTIONS_PER_IP", "2"),
        ("RUST_LOG", "info,imgate=debug"),
        ("NO_COLOR", "1"),
    ];
    env.extend_from_slice(extra);
    Gateway::start_with(&env)
}

fn v1(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 {port} 8100\r\n").into_bytes()
}

/// v2 PROXY, TCP over IPv4, with an ALPN TLV after the addresses.
fn v2(client: Ipv4Addr, port: u16) -> Vec<u8> {
    let tlv: &[u8] = b"\x01\x00\x02h2";
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&(12 + tlv.len() as u16).to_be_bytes());
    h.extend_from_slice(&client.octets());
    h.extend_from_slice(&Ipv4Addr::LOCALHOST.octets());
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&8100u16.to_be_bytes());
    h.extend_from_slice(tlv);
    h
}

/// v2 PROXY, TCP over IPv6.
fn v2_tcp6(client: Ipv6Addr, port: u16) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0x00, 36]);
    h.extend_from_slice(&client.octets());
    h.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&8100u16.to_be_bytes());
    h
}

/// v2 LOCAL (the balancer's own health check): no client address.
fn v2_local() -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    h
}

/// A PB connection that sends `header` first, then logs in; panics unless
/// the login succeeds.
fn pb_via(g: &Gateway, header: &[u8], user: &str) -> PbClient {
    let token = g.admin().token(user, "phone", ANDROID);
    let mut c = PbClient::connect(g.addr("pb"));
    c.write_raw(header);
    let r = c.login(user, &token, "phone", ANDROID);
    assert_eq!(r.code, 0, "PB login of {user} after its header");
    c
}

/// True if a PB connection that sends `header` then a login is closed
/// without an answer.
fn pb_refused(g: &Gateway, header: &[u8], user: &str) -> bool {
    let token = g.admin().token(user, "phone", ANDROID);
    let mut c = PbClient::connect(g.addr("pb"));
    c.write_raw(header);
    c.request(PbRequest::Login(proto::LoginRequest {
        user_id: user.into(),
        token,
        client_id: "phone".into(),
        platform: ANDROID,
    }));
    c.wait_closed(WAIT) && c.recv(Duration::ZERO).is_none()
}

fn connect_packet(user: &str, token: &str, version: Version) -> Packet {
    Packet::Connect(Connect {
        version,
        client_id: "raw".into(),
        clean_start: true,
        keep_alive: 30,
        username: Some(user.into()),
        password: Some(token.to_owned().into()),
        will: None,
        properties: Properties::default(),
    })
}

/// An MQTT connection that sends `header` then CONNECT: its CONNACK code,
/// or None if it was closed without one.
fn mqtt_via(g: &Gateway, header: &[u8], user: &str, version: Version) -> (RawMqtt, Option<u8>) {
    let token = g.admin().token(user, "raw", 1);
    let mut raw = RawMqtt::connect(g.addr("mqtt"), version);
    raw.send_bytes(header);
    raw.send(&connect_packet(user, &token, version), version);
    let code = match raw.recv() {
        Some(Packet::ConnAck(a)) => Some(a.code),
        _ => None,
    };
    (raw, code)
}

/// Lines of the log that mention every one of `words`.
fn log_lines(g: &Gateway, words: &[&str]) -> Vec<String> {
    g.log()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn per_ip_limits_count_the_client_address_from_the_header() {
    let g = proxied_gateway(&[]);
    // Six clients with their own addresses, all through 127.0.0.1: over
    // its share of 2, yet each is admitted (v1 and v2, PB and MQTT).
    let mut open = vec![
        pb_via(&g, &v1("10.0.0.1", 4001), "u1"),
        pb_via(&g, &v2(Ipv4Addr::new(10, 0, 0, 2), 4002), "u2"),
        pb_via(&g, &v1("10.0.0.3", 4003), "u3"),
    ];
    let mut mqtt = Vec::new();
    for (i, header) in [v1("10.0.0.4", 4004), v2(Ipv4Addr::new(10, 0, 0, 5), 4005)]
        .iter()
        .enumerate()
    {
        let (raw, code) = mqtt_via(&g, header, &format!("m{i}"), Version::V5);
        assert_eq!(code, Some(0), "MQTT CONNECT after header {i}");
        mqtt.push(raw);
    }
    open.push(pb_via(&g, &v2(Ipv4Addr::new(10, 0, 0, 6), 4006), "u6"));

    // One client, 10.0.0.9, over both listeners: two are admitted, the
    // third is refused — its share counts the address from the header.
    open.push(pb_via(&g, &v1("10.0.0.9", 5001), "c1"));
    let (raw, code) = mqtt_via(&g, &v2(Ipv4Addr::new(10, 0, 0, 9), 5002), "c2", Version::V4);
    assert_eq!(code, Some(0));
    mqtt.push(raw);
    assert!(
        pb_refused(&g, &v1("10.0.0.9", 5003), "c3"),
        "the third connection of 10.0.0.9 is refused"
    );
    let (_raw, code) = mqtt_via(&g, &v2(Ipv4Addr::new(10, 0, 0, 9), 5004), "c4", Version::V5);
    assert_eq!(code, None, "on MQTT too");
    // Other clients are unaffected.
    open.push(pb_via(&g, &v1("10.0.0.10", 5005), "u10"));

    // The logs name the client, not the balancer: the session's peer and
    // the refusal.
    assert!(
        !log_lines(&g, &["pb login", "10.0.0.1:4001"]).is_empty(),
        "{}",
        g.log()
    );
    assert!(!log_lines(&g, &["pb login", "10.0.0.2:4002"]).is_empty());
    assert!(
        !log_lines(&g, &["connection refused", "10.0.0.9:5003", "IpOpen"]).is_empty(),
        "{}",
        g.log()
    );
    assert!(
        log_lines(&g, &["pb login", "127.0.0.1"]).is_empty(),
        "no session has the balancer's address"
    );
}

#[test]
fn pb_and_mqtt_work_after_every_kind_of_header() {
    let g = proxied_gateway(&[]);
    let mut bob = pb_via(&g, &v1("10.0.0.2", 4000), "bob");
    let mut alice = pb_via(&g, &v2(Ipv4Addr::new(10, 0, 0, 1), 4000), "alice");
    // The stream after the header is intact: a send and its delivery.
    assert_eq!(alice.send_text("bob", "hi bob", "m1").code, 0);
    let got = bob.next_deliver(WAIT).expect("delivered to bob");
    assert_eq!(got.sender, "alice");
    let _six = pb_via(&g, b"PROXY TCP6 2001:db8::7 ::1 4000 8100\r\n", "six");
    let _six2 = pb_via(&g, &v2_tcp6("2001:db8::8".parse().unwrap(), 4000), "six2");
    // No client address (v1 UNKNOWN, v2 LOCAL): the socket's peer stands.
    let _unknown = pb_via(&g, b"PROXY UNKNOWN\r\n", "unknown");
    let (_local, code) = mqtt_via(&g, &v2_local(), "local", Version::V4);
    assert_eq!(code, Some(0));
    for (version, header) in [
        (Version::V4, v1("10.0.0.3", 4000)),
        (Version::V5, v1("10.0.0.4", 4000)),
        (Version::V4, v2(Ipv4Addr::new(10, 0, 0, 5), 4000)),
        (Version::V5, v2(Ipv4Addr::new(10, 0, 0, 6), 4000)),
    ] {
        let (mut raw, code) = mqtt_via(&g, &header, "m", version);
        assert_eq!(code, Some(0), "MQTT {version:?} CONNECT after its header");
        // The session is live (and has logged its connection by now).
        raw.send(&Packet::PingReq, version);
        assert!(matches!(raw.recv(), Some(Packet::PingResp)));
    }
    assert!(
        !log_lines(&g, &["mqtt connected", "10.0.0.6:4000"]).is_empty(),
        "the MQTT session's peer is the client"
    );
}

#[test]
fn a_connection_without_a_valid_header_is_closed_on_a_proxy_listener() {
    let g = proxied_gateway(&[("IMGATE_LOGIN_TIMEOUT_SECS", "2")]);
    assert!(pb_refused(&g, b"", "nohead"), "PB login without a header");
    let (_raw, code) = mqtt_via(&g, b"", "nohead", Version::V5);
    assert_eq!(code, None, "MQTT CONNECT without a header");
    for bad in [
        &b"PROXY TCP9 10.0.0.1 127.0.0.1 1 2\r\n"[..],
        b"PROXY TCP4 10.0.0.1 127.0.0.1 1\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
    ] {
        assert!(
            pb_refused(&g, bad, "bad"),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // A header cut short, then nothing: closed by the login timeout.
    let mut cut = PbClient::connect(g.addr("pb"));
    cut.write_raw(b"PROXY TCP4 10.0.0.");
    assert!(
        cut.wait_closed(WAIT),
        "a cut header is not waited for forever"
    );
    assert!(
        !log_lines(&g, &["bad PROXY header", "within"]).is_empty(),
        "{}",
        g.log()
    );
}

#[test]
fn listeners_without_proxy_protocol_are_unchanged() {
    let g = proxied_gateway(&[]);
    // PB is listed: its header is taken...
    let _pb = pb_via(&g, &v1("10.0.0.1", 4000), "alice");
    // ...XMPP is not: a header there is bytes of the stream, not XML.
    let mut x = XmppRaw::connect(g.addr("xmpp"));
    x.send_bytes(&v1("10.0.0.2", 4000));
    x.send(&stream_header("localhost"));
    assert!(x.wait_closed(WAIT), "a PROXY header ends the XMPP stream");
    let token = g.admin().token("bob", "laptop", 3);
    let (_bob, jid) = XmppRaw::login(g.addr("xmpp"), "localhost", "bob", &token);
    assert!(jid.starts_with("bob@"), "{jid}");
    // Nor client HTTP: the header is a malformed request line.
    let mut http = TcpStream::connect(g.addr("http")).expect("http connect");
    http.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = v1("10.0.0.3", 4000);
    req.extend_from_slice(b"GET /no/such/path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    http.write_all(&req).unwrap();
    let mut answer = Vec::new();
    let _ = http.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Without a header, HTTP works as before.
    assert_eq!(g.client("carol", "web").sync_all(0).len(), 0);
}

/// An HTTP request after `header` on a fresh connection, read to its end.
fn http_via(g: &Gateway, header: &[u8]) -> (TcpStream, String) {
    let mut s = TcpStream::connect(g.addr("http")).expect("http connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = header.to_vec();
    req.extend_from_slice(b"GET /no/such/path HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = s.write_all(&req);
    // Keep-alive: read just the head of the answer (or the close).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn client_http_takes_the_header_when_listed() {
    let g = Gateway::start_with(&[
        ("IMGATE_PROXY_PROTOCOL", "http"),
        ("IMGATE_MAX_CONNECTIONS_PER_IP", "1"),
    ]);
    // Two clients through one balancer address with a share of 1: both
    // answered, and their connections stay open.
    let (_a, head) = http_via(&g, &v1("10.0.0.1", 4000));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (_b, head) = http_via(&g, &v2(Ipv4Addr::new(10, 0, 0, 2), 4000));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // The same client again while its first connection is open: refused.
    let (_c, head) = http_via(&g, &v1("10.0.0.1", 4001));
    assert_eq!(head, "", "closed without an answer");
    // No header: closed.
    let (_d, head) = http_via(&g, b"");
    assert_eq!(head, "", "closed without an answer");
    // The admin listener never takes one (it is not a client listener).
    g.admin().token("u", "d", 1);
}

#[test]
fn tls_follows_the_header() {
    use bytes::BytesMut;
    use imgate_codecs::pb::{PbFramer, PbServerMessage};
    use imgate_conformance::tls::{self, Conn};
    use tokio_util::codec::{Decoder, Encoder};

    let tls_env = tls::gateway_env();
    let mut env: Vec<(&str, &str)> = tls_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("IMGATE_PROXY_PROTOCOL", "pbs,https"));
    let g = Gateway::start_with(&env);

    // HTTPS: the header in the clear, then the handshake and a request.
    let mut tcp = TcpStream::connect(g.addr("https")).expect("https connect");
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(&v1("10.0.0.1", 4000)).unwrap();
    let mut https = Conn::tls_over(tcp).expect("TLS after the PROXY header");
    https
        .write_all(b"GET /no/such/path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = https.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // PB over TLS: a login after a v2 header.
    let token = g.admin().token("alice", "phone", ANDROID);
    let mut tcp = TcpStream::connect(g.addr("pbs")).expect("pbs connect");
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(&v2(Ipv4Addr::new(10, 0, 0, 2), 4000))
        .unwrap();
    let mut pb = Conn::tls_over(tcp).expect("TLS after the PROXY header");
    let mut framer = PbFramer::new(1024 * 1024);
    let mut out = BytesMut::new();
    let login = PbRequest::Login(proto::LoginRequest {
        user_id: "alice".into(),
        token,
        client_id: "phone".into(),
        platform: ANDROID,
    });
    framer.encode(login.to_frame(1), &mut out).unwrap();
    pb.write_all(&out).unwrap();
    let mut buf = BytesMut::new();
    let frame = loop {
        if let Some(frame) = framer.decode(&mut buf).expect("a PB frame") {
            break frame;
        }
        let mut chunk = [0u8; 4096];
        let n = pb.read(&mut chunk).expect("the login answer");
        assert!(n > 0, "closed before the login answer");
        buf.extend_from_slice(&chunk[..n]);
    };
    match PbServerMessage::decode(&frame) {
        Ok(PbServerMessage::LoginResponse(r)) => assert_eq!(r.code, 0),
        other => panic!("expected a LoginResponse, got {other:?}"),
    }
}
