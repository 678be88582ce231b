//! WebSocket transport (DESIGN §5.6): one `ws` listener serves `/mqtt`
//! (subprotocol `mqtt`), `/xmpp-websocket` (RFC 7395, subprotocol `xmpp`)
//! and `/pb` (one PB frame per binary message), and each runs the same
//! session as on TCP: messages cross between WebSocket and TCP clients of
//! every protocol. paho-mqtt speaks MQTT with `transport="websockets"`;
//! the PB and XMPP scenarios drive the framing by hand to check it byte
//! for byte. With a certificate `wss` carries the same sessions next to
//! `ws`. Refused upgrades get an HTTP error with the JSON error body.

use std::time::Duration;

use bytes::BytesMut;
use imgate_codecs::mqtt::{Connect, MqttFramer, Packet, Properties, Version};
use imgate_codecs::pb::{proto, PbFrame, PbFramer, PbRequest, PbServerMessage};
use imgate_codecs::xmpp::{ns, Element, XmppEvent, XmppFramer};
use imgate_conformance::mqtt::MqttAgent;
use imgate_conformance::ws::WsClient;
use imgate_conformance::{unique, Gateway, PbClient, WAIT};
use serde_json::{json, Value};
use tokio_util::codec::{Decoder, Encoder};

const DOMAIN: &str = "localhost";

fn pb_bytes(req: PbRequest, seq: u16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    PbFramer::new(1 << 20)
        .encode(req.to_frame(seq), &mut buf)
        .expect("encode");
    buf.to_vec()
}

/// One binary message is exactly one PB frame.
fn one_frame(message: Vec<u8>) -> PbFrame {
    let mut buf = BytesMut::from(&message[..]);
    let frame = PbFramer::new(1 << 20)
        .decode(&mut buf)
        .expect("a PB frame")
        .expect("a whole PB frame in the message");
    assert!(
        buf.is_empty(),
        "one frame per message, {} bytes more",
        buf.len()
    );
    frame
}

fn next_pb(ws: &mut WsClient) -> (u16, PbServerMessage) {
    let frame = one_frame(ws.recv_binary(WAIT).expect("a PB message"));
    (frame.seq, PbServerMessage::decode(&frame).expect("decodes"))
}

fn text_send(to: &str, text: &str, id: &str) -> PbRequest {
    PbRequest::Send(imgate_conformance::pb::text_request(0, to, text, id))
}

#[test]
fn pb_over_websocket_is_one_frame_per_message_and_meets_tcp_clients() {
    let g = Gateway::start();
    let (a, b) = (unique("ws-pa"), unique("ws-pb"));
    let at = g.admin().token(&a, "web", 2);
    let bt = g.admin().token(&b, "phone", 2);
    let mut ws = WsClient::connect(g.addr("ws"), "/pb", &[]).expect("upgrade /pb");
    assert_eq!(ws.subprotocol, None);
    ws.send_binary(pb_bytes(
        PbRequest::Login(proto::LoginRequest {
            user_id: a.clone(),
            token: at,
            client_id: "web".into(),
            platform: 2,
        }),
        1,
    ));
    match next_pb(&mut ws) {
        (1, PbServerMessage::LoginResponse(r)) => assert_eq!(r.code, 0),
        other => panic!("expected the login response, got {other:?}"),
    }
    let mut bob = PbClient::login_ok(g.addr("pb"), &b, &bt, "phone", 2);
    // WebSocket → TCP.
    ws.send_binary(pb_bytes(text_send(&b, "from the browser", &unique("c")), 2));
    let sent = match next_pb(&mut ws) {
        (2, PbServerMessage::SendResponse(r)) => r,
        other => panic!("expected the send response, got {other:?}"),
    };
    assert_eq!(sent.code, 0);
    let got = bob.next_deliver(WAIT).expect("bob gets it over TCP");
    assert_eq!(got.message_id, sent.message_id);
    assert_eq!(got.sender, a);
    // TCP → WebSocket, several at once: still one frame per message.
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = bob.send_text(&a, &format!("back {i}"), &unique("c"));
        assert_eq!(r.code, 0);
        ids.push(r.message_id);
    }
    let mut delivered = Vec::new();
    while delivered.len() < ids.len() {
        match next_pb(&mut ws) {
            (0, PbServerMessage::Deliver(d)) => {
                delivered.push(d.message.expect("message").message_id)
            }
            other => panic!("expected deliveries, got {other:?}"),
        }
    }
    assert_eq!(delivered, ids);
    // A text message is not PB: the connection is closed.
    ws.send_text("hello");
    assert!(ws.closed_within(WAIT), "a text frame on /pb closes it");
}

#[test]
fn mqtt_over_websocket_with_paho_exchanges_im_messages_with_pb() {
    let g = Gateway::start();
    let (m, p) = (unique("ws-m"), unique("ws-p"));
    let mt = g.admin().token(&m, "dev1", 3);
    let pt = g.admin().token(&p, "phone", 2);
    let mut agent = MqttAgent::start(g.addr("ws"));
    let ack = agent.connect(json!({
        "client_id": "dev1", "user": m, "token": mt, "version": 5,
        "transport": "websockets", "ws_path": "/mqtt",
    }));
    assert_eq!(ack["rc"], 0, "{ack}");
    assert_eq!(agent.subscribe(&format!("im/inbox/{m}"), 1), vec![1]);
    let mut pb = PbClient::login_ok(g.addr("pb"), &p, &pt, "phone", 2);
    let sent = pb.send_text(&m, "to paho over ws", &unique("c"));
    assert_eq!(sent.code, 0);
    let msg = agent.message(&format!("im/inbox/{m}"));
    let payload: Value =
        serde_json::from_str(msg["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(payload["messageUid"], sent.message_id, "{payload}");
    assert_eq!(payload["payload"]["searchableContent"], "to paho over ws");
    let send = json!({"conv": {"type": 0, "target": p, "line": 0},
        "payload": {"type": 1, "searchableContent": "from paho"}, "clientMsgId": unique("c")});
    agent.publish(json!({"topic": "im/send", "qos": 1, "payload": send.to_string()}));
    let got = pb
        .next_deliver(WAIT)
        .expect("pb gets the MQTT-over-WS send");
    assert_eq!(got.sender, m);
}

/// Read XMPP-over-WebSocket messages: each one is a whole element.
struct XmppWs {
    ws: WsClient,
}

impl XmppWs {
    fn next(&mut self) -> XmppEvent {
        let text = self.ws.recv_text(WAIT).expect("an XMPP message");
        let mut framer = XmppFramer::websocket(1 << 20, 32);
        // A server `<open/>` is what the client framer calls the stream's
        // opening; every later message is parsed on its own.
        let mut buf = BytesMut::from(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"
                .to_string()
                .as_str(),
        );
        let _ = framer.decode(&mut buf);
        let mut buf = BytesMut::from(text.as_str());
        let ev = framer
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .unwrap_or_else(|| panic!("not one whole element: {text}"));
        assert!(
            buf.iter().all(u8::is_ascii_whitespace),
            "one element per message: {text}"
        );
        ev
    }

    fn element(&mut self) -> Element {
        match self.next() {
            XmppEvent::Stanza(el) => el,
            XmppEvent::StreamOpen(el) => el,
            XmppEvent::StreamClose => panic!("unexpected <close/>"),
        }
    }

    fn send(&mut self, xml: &str) {
        self.ws.send_text(xml);
    }

    fn open(&mut self) -> Element {
        self.send(&format!(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{DOMAIN}' version='1.0'/>"
        ));
        let open = self.element();
        assert!(open.is("open", ns::FRAMING), "{}", open.to_xml());
        assert_eq!(open.get_attr("from"), Some(DOMAIN));
        let features = self.element();
        assert!(features.is("features", ns::STREAM), "{}", features.to_xml());
        features
    }
}

#[test]
fn xmpp_over_websocket_rfc7395_logs_in_binds_and_chats_with_pb() {
    let g = Gateway::start();
    let ws = WsClient::connect(g.addr("ws"), "/xmpp-websocket", &["xmpp"]).expect("upgrade");
    xmpp_ws_logs_in_binds_and_chats_with_pb(&g, ws);
}

/// With a certificate the `wss` listener runs next to `ws`: XMPP (RFC
/// 7395) and MQTT over WebSocket over TLS, the same sessions.
#[test]
fn xmpp_and_mqtt_over_wss_next_to_plain_ws() {
    let env = imgate_conformance::tls::gateway_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let g = Gateway::start_with(&env);
    let ws =
        WsClient::connect_tls(g.addr("wss"), "/xmpp-websocket", &["xmpp"]).expect("wss upgrade");
    xmpp_ws_logs_in_binds_and_chats_with_pb(&g, ws);
    // MQTT over wss: CONNECT with a token, CONNACK 0, a ping answered.
    let user = unique("wss-m");
    let token = g.admin().token(&user, "dev1", 3);
    let mut ws = WsClient::connect_tls(g.addr("wss"), "/mqtt", &["mqtt"]).expect("wss upgrade");
    assert_eq!(ws.subprotocol.as_deref(), Some("mqtt"));
    let connect = Packet::Connect(Connect {
        version: Version::V5,
        client_id: "dev1".into(),
        clean_start: true,
        keep_alive: 30,
        username: Some(user.clone()),
        password: Some(token.into()),
        will: None,
        properties: Properties::default(),
    });
    let mut framer = MqttFramer::with_version(1 << 20, Version::V5);
    let mut out = BytesMut::new();
    framer.encode(connect, &mut out).expect("encode");
    ws.send_binary(out.to_vec());
    let mut next = |ws: &mut WsClient| {
        let bytes = ws.recv_binary(WAIT).expect("an MQTT message");
        let mut buf = BytesMut::from(&bytes[..]);
        let packet = framer
            .decode(&mut buf)
            .expect("decodes")
            .expect("one whole packet");
        assert!(buf.is_empty(), "one packet per message");
        packet
    };
    match next(&mut ws) {
        Packet::ConnAck(a) => assert_eq!(a.code, 0),
        other => panic!("expected CONNACK over wss, got {other:?}"),
    }
    let mut out = BytesMut::new();
    MqttFramer::with_version(1 << 20, Version::V5)
        .encode(Packet::PingReq, &mut out)
        .expect("encode");
    ws.send_binary(out.to_vec());
    assert!(matches!(next(&mut ws), Packet::PingResp));
}

/// Log in over RFC 7395 on `ws` (plain or TLS), bind, and chat with a PB
/// client; then close with `<close/>`.
fn xmpp_ws_logs_in_binds_and_chats_with_pb(g: &Gateway, ws: WsClient) {
    use base64::Engine;
    let (x, p) = (unique("ws-x"), unique("ws-xp"));
    let xt = g.admin().token(&x, "web", 3);
    let pt = g.admin().token(&p, "phone", 2);
    assert_eq!(ws.subprotocol.as_deref(), Some("xmpp"));
    let mut c = XmppWs { ws };
    let features = c.open();
    let mechanisms = features
        .get_child("mechanisms", ns::SASL)
        .expect("SASL first: no STARTTLS on a WebSocket");
    assert!(
        mechanisms.to_xml().contains("PLAIN"),
        "{}",
        mechanisms.to_xml()
    );
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{x}\0{xt}"));
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
    ));
    let success = c.element();
    assert!(success.is("success", ns::SASL), "{}", success.to_xml());
    let features = c.open();
    assert!(features.get_child("bind", ns::BIND).is_some());
    c.send("<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>");
    let bound = c.element();
    assert_eq!(bound.get_attr("type"), Some("result"), "{}", bound.to_xml());
    c.send("<presence xmlns='jabber:client'/>");

    let mut pb = PbClient::login_ok(g.addr("pb"), &p, &pt, "phone", 2);
    c.send(&format!(
        "<message xmlns='jabber:client' type='chat' to='{p}@{DOMAIN}' id='m1'><body>from a browser</body></message>"
    ));
    let got = pb
        .next_deliver(WAIT)
        .expect("pb gets the XMPP-over-WS message");
    assert_eq!(got.sender, x);
    let sent = pb.send_text(&x, "to the browser", &unique("c"));
    assert_eq!(sent.code, 0);
    // Whatever comes first (presence, receipts), the message arrives as a
    // standalone `jabber:client` element.
    let message = loop {
        let el = c.element();
        if el.is("message", ns::CLIENT) && el.get_child("body", ns::CLIENT).is_some() {
            break el;
        }
    };
    assert_eq!(
        message
            .get_child("body", ns::CLIENT)
            .map(|b| b.text_content()),
        Some("to the browser".to_string())
    );
    // <close/> is answered with <close/> and the WebSocket closes.
    c.send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
    loop {
        match c.ws.recv_text(WAIT) {
            Some(t) if t.contains("<close") => break,
            Some(_) => continue,
            None => panic!("no <close/> answer"),
        }
    }
    assert!(c.ws.closed_within(WAIT));
}

#[test]
fn xmpp_over_websocket_refuses_a_stream_tag_with_a_stream_error() {
    let g = Gateway::start();
    let ws = WsClient::connect(g.addr("ws"), "/xmpp-websocket", &["xmpp"]).expect("upgrade");
    let mut c = XmppWs { ws };
    c.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>");
    let open = c.element();
    assert!(open.is("open", ns::FRAMING), "{}", open.to_xml());
    let err = c.element();
    assert!(err.is("error", ns::STREAM), "{}", err.to_xml());
    assert!(
        c.ws.closed_within(Duration::from_secs(10))
            || c.ws.recv_text(WAIT).is_some_and(|t| t.contains("<close"))
    );
}

#[test]
fn refused_upgrades_get_an_http_error_with_a_code() {
    let g = Gateway::start();
    let r = WsClient::connect(g.addr("ws"), "/smtp", &[])
        .err()
        .expect("refused");
    assert_eq!(r.status, 404);
    let body: Value = serde_json::from_str(&r.body).expect("JSON body");
    assert_eq!(body["code"], 253, "{body}");
    let r = WsClient::connect(g.addr("ws"), "/xmpp-websocket", &["mqtt"])
        .err()
        .expect("refused");
    assert_eq!(r.status, 400);
    let body: Value = serde_json::from_str(&r.body).expect("JSON body");
    assert_eq!(body["code"], 251, "{body}");
    // MQTT's subprotocol is picked among the offered ones.
    let ws = WsClient::connect(g.addr("ws"), "/mqtt", &["foo", "mqtt"]).expect("upgrade");
    assert_eq!(ws.subprotocol.as_deref(), Some("mqtt"));
    // The metrics count the WebSocket listener's connections: this one
    // (the refused ones close on their own time, so wait for them).
    let deadline = std::time::Instant::now() + WAIT;
    let line = "imgate_listener_connections{listener=\"ws\"} 1\n";
    loop {
        let metrics = g.admin().get_text("/metrics");
        if metrics.contains(line) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        // Polling a gauge that moves on the server's own schedule.
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(ws);
}
