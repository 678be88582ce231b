//! Kill -9 *during* a flood (DESIGN §3.1, §3.2, §3.4, §3.5): several
//! senders (MQTT 5 QoS 1 `im/send` with a window of in-flight PUBLISHes,
//! and HTTP `POST /v1/messages`) flood one recipient who has an MQTT
//! device (PUBACKs its `im/inbox` deliveries), a PB device (DeliverAcks
//! them) and an XMPP device (XEP-0184 receipts). After a bounded number of acks the gateway is killed -9 while
//! the flood is still running, then restarted on the same data dir.
//!
//! Checked, through external behaviour only (so it holds for any store
//! model: pending rows, device cursors, RabbitMQ): every acked message is
//! in the recipient's `/v1/sync`, which is strictly ascending with the
//! acked ids unchanged and each sender's messages in send order; every
//! device, reconnecting, receives every acked message (counting what it
//! got before the crash), redeliveries carry the same `messageUid`, and
//! on each connection each conversation arrives in id order.
//!
//! Runs on the suite's store (`IMGATE_CONFORMANCE_STORE`, embedded by
//! default, RabbitMQ for an `amqp://` URL).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use imgate_codecs::mqtt::{
    encode::encode_packet, Connect, MqttFramer, Packet, PubResp, PubRespKind, Publish, QoS,
    SubOptions, Subscribe, SubscribeFilter, Version,
};
use imgate_codecs::xmpp::ns;
use imgate_conformance::gateway::conformance_store;
use imgate_conformance::xmpp::XmppRaw;
use imgate_conformance::{unique, Gateway, PbClient, WAIT};
use serde_json::{json, Value};

/// The gateway is killed once this many sends were acked.
const ACKS_BEFORE_KILL: usize = 600;
/// In-flight QoS 1 PUBLISHes per MQTT sender.
const MQTT_WINDOW: usize = 32;
/// Upper bound of sends per sender, should the kill never come.
const MAX_SENDS: usize = 20_000;
const MQTT_SENDERS: usize = 2;
const HTTP_SENDERS: usize = 2;
/// The recipient's devices, one per protocol.
const DEVICES: [&str; 3] = ["mqtt", "pb", "xmpp"];

/// A send the gateway acknowledged as durable.
#[derive(Debug)]
struct Acked {
    client_msg_id: String,
    /// From the HTTP reply, or the `im/ack` result that came before the
    /// MQTT PUBACK.
    uid: Option<u64>,
}

/// A message a receiver device got (and acked).
#[derive(Debug)]
struct Delivered {
    device: &'static str,
    /// Which connection of the device (0 before the crash, 1 after).
    connection: u32,
    uid: u64,
    sender: String,
    client_msg_id: String,
}

#[test]
fn kill_9_during_a_flood_loses_no_acked_message() {
    eprintln!("crash_flood on store {}", conformance_store());
    let env = [
        ("IMGATE_RATE_LIMIT_MESSAGES", "1000000"),
        ("IMGATE_MULTI_ENDPOINT", "true"),
    ];
    let mut g = Gateway::start_with(&env);
    let bob = unique("cf-bob");
    let (dtx, drx) = mpsc::channel::<Delivered>();

    // Receivers first, so they see part of the flood live.
    let receivers = start_receivers(&g, &bob, 0, &dtx);

    let (atx, arx) = mpsc::channel::<Acked>();
    let (rtx, rrx) = mpsc::channel::<String>();
    let mut senders: Vec<JoinHandle<()>> = Vec::new();
    for i in 0..MQTT_SENDERS {
        let user = unique("cf-mq");
        let token = g.admin().token(&user, "mq-dev", 1);
        let (addr, bob, atx, rtx) = (
            g.addr("mqtt").to_string(),
            bob.clone(),
            atx.clone(),
            rtx.clone(),
        );
        senders.push(std::thread::spawn(move || {
            mqtt_flood(&addr, &user, &token, &bob, i, &atx, &rtx)
        }));
    }
    for i in 0..HTTP_SENDERS {
        let user = unique("cf-http");
        let token = g.admin().token(&user, "http-dev", 3);
        let (url, bob, atx, rtx) = (g.http_url(), bob.clone(), atx.clone(), rtx.clone());
        senders.push(std::thread::spawn(move || {
            http_flood(&url, &token, &bob, i, &atx, &rtx)
        }));
    }
    drop((atx, rtx));

    // Kill on a real event: the N-th ack, while every sender still runs.
    let mut acked: Vec<Acked> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while acked.len() < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match arx.recv_timeout(left) {
            Ok(a) => acked.push(a),
            Err(e) => panic!(
                "only {} acks within {WAIT:?} ({e}); rejections: {:?}",
                acked.len(),
                rrx.try_iter().collect::<Vec<_>>()
            ),
        }
    }
    g.kill9();
    for s in senders {
        s.join().expect("sender thread");
    }
    // Acks read from the sockets before they closed count too.
    acked.extend(arx.try_iter());
    let rejected: Vec<String> = rrx.try_iter().collect();
    assert!(rejected.is_empty(), "sends rejected: {rejected:?}");
    for r in receivers {
        r.join().expect("receiver thread");
    }

    g.restart();
    let receivers = start_receivers(&g, &bob, 1, &dtx);
    drop(dtx);

    // Sync: complete, strictly ascending, acked ids unchanged, each
    // sender's messages in its send order.
    let synced = g.client(&bob, "cf-sync").sync_all(0);
    let uids: Vec<u64> = synced
        .iter()
        .filter_map(|m| m["messageUid"].as_u64())
        .collect();
    assert_eq!(uids.len(), synced.len(), "every message has a messageUid");
    assert!(
        uids.windows(2).all(|w| w[0] < w[1]),
        "sync is strictly ascending"
    );
    let by_cmid: HashMap<&str, u64> = synced
        .iter()
        .filter_map(|m| Some((m["clientMsgId"].as_str()?, m["messageUid"].as_u64()?)))
        .collect();
    assert_eq!(
        by_cmid.len(),
        synced.len(),
        "one stored message per clientMsgId"
    );
    for a in &acked {
        let stored = by_cmid.get(a.client_msg_id.as_str());
        assert!(
            stored.is_some(),
            "acked {} missing from sync",
            a.client_msg_id
        );
        if let Some(uid) = a.uid {
            assert_eq!(stored, Some(&uid), "id of {} changed", a.client_msg_id);
        }
    }
    assert_send_order(&synced);

    // Devices: every acked message arrives (before or after the crash),
    // always with the id sync shows.
    let want: HashSet<u64> = acked
        .iter()
        .map(|a| by_cmid[a.client_msg_id.as_str()])
        .collect();
    let mut tally = Tally::default();
    let deadline = Instant::now() + WAIT;
    while !tally.has_all(&want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match drx.recv_timeout(left) {
            Ok(d) => tally.add(d, &by_cmid),
            Err(_) => break,
        }
    }
    let Tally {
        got, redelivered, ..
    } = tally;
    for device in DEVICES {
        let have = got.get(device).cloned().unwrap_or_default();
        let missing: Vec<&u64> = want.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "{device} never received {} of {} acked messages, e.g. {:?}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(5)]
        );
    }
    eprintln!(
        "crash_flood: {} acked ({} with their id in the ack), {} stored, each device got all acked ones; {redelivered} redeliveries",
        acked.len(),
        acked.iter().filter(|a| a.uid.is_some()).count(),
        synced.len()
    );
    g.kill9();
    for r in receivers {
        r.join().expect("receiver thread");
    }
}

/// What the devices received, checked as it arrives.
#[derive(Default)]
struct Tally {
    got: HashMap<&'static str, HashSet<u64>>,
    /// Last first-time uid per (device, connection, sender).
    last: HashMap<(&'static str, u32, String), u64>,
    seen: HashSet<(&'static str, u32, u64)>,
    redelivered: usize,
}

impl Tally {
    fn add(&mut self, d: Delivered, by_cmid: &HashMap<&str, u64>) {
        assert_eq!(
            by_cmid.get(d.client_msg_id.as_str()),
            Some(&d.uid),
            "{} got {} with another id than sync's",
            d.device,
            d.client_msg_id
        );
        if !self.got.entry(d.device).or_default().insert(d.uid) {
            self.redelivered += 1;
        }
        // Per connection and conversation, first deliveries ascend (§3.4).
        if self.seen.insert((d.device, d.connection, d.uid)) {
            let key = (d.device, d.connection, d.sender.clone());
            let last = self.last.entry(key).or_insert(0);
            assert!(
                d.uid > *last,
                "{} connection {}: {} after {} from {}",
                d.device,
                d.connection,
                d.uid,
                last,
                d.sender
            );
            *last = d.uid;
        }
    }

    fn has_all(&self, want: &HashSet<u64>) -> bool {
        DEVICES
            .iter()
            .all(|d| self.got.get(d).is_some_and(|s| want.is_subset(s)))
    }
}

/// Each sender's messages (clientMsgId `<sender>-<seq>`) ascend by seq in
/// id order: a sender's own messages keep their send order (§3.4).
fn assert_send_order(synced: &[Value]) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for m in synced {
        let cmid = m["clientMsgId"].as_str().unwrap_or_default();
        let Some((who, seq)) = cmid.rsplit_once('-') else {
            panic!("unexpected clientMsgId {cmid:?}")
        };
        let seq: u64 = seq.parse().expect("numeric seq");
        if let Some(prev) = last.insert(who, seq) {
            assert!(prev < seq, "{who}: seq {seq} stored after {prev}");
        }
    }
}

/// The MQTT and PB devices of `user`, each in its own thread, until the
/// gateway goes away.
fn start_receivers(
    g: &Gateway,
    user: &str,
    connection: u32,
    out: &mpsc::Sender<Delivered>,
) -> Vec<JoinHandle<()>> {
    let mqtt_token = g.admin().token(user, "cf-mqtt", 1);
    let pb_token = g.admin().token(user, "cf-pb", 3);
    let mut mqtt = MqttConn::connect(
        g.addr("mqtt"),
        Version::V4,
        user,
        &mqtt_token,
        "cf-mqtt",
        false,
    );
    mqtt.subscribe(&format!("im/inbox/{user}"), QoS::AtLeastOnce);
    let pb = PbClient::login_ok(g.addr("pb"), user, &pb_token, "cf-pb", 3);
    let xmpp_token = g.admin().token(user, "cf-xmpp", 5);
    let (xmpp, _jid) = XmppRaw::login(g.addr("xmpp"), "localhost", user, &xmpp_token);
    let (o1, o2, o3) = (out.clone(), out.clone(), out.clone());
    vec![
        std::thread::spawn(move || mqtt_receive(mqtt, connection, &o1)),
        std::thread::spawn(move || pb_receive(pb, connection, &o2)),
        std::thread::spawn(move || xmpp_receive(xmpp, connection, &o3)),
    ]
}

/// XMPP deliveries (`id` = messageUid, body `flood <clientMsgId>`), each
/// acked with an XEP-0184 receipt, until the stream ends.
fn xmpp_receive(mut c: XmppRaw, connection: u32, out: &mpsc::Sender<Delivered>) {
    while let Some(el) = c.next_element(WAIT) {
        if el.name != "message" {
            continue;
        }
        let uid = el.get_attr("id").and_then(|i| i.parse::<u64>().ok());
        let body = el.get_child("body", ns::CLIENT).map(|b| b.text_content());
        let cmid = body.as_deref().and_then(|b| b.strip_prefix("flood "));
        let sender = el.get_attr("from").and_then(|f| f.split('@').next());
        let (Some(uid), Some(cmid), Some(sender)) = (uid, cmid, sender) else {
            continue;
        };
        c.send(&format!(
            "<message to='{sender}@localhost'><received xmlns='{}' id='{uid}'/></message>",
            ns::RECEIPTS
        ));
        let d = Delivered {
            device: "xmpp",
            connection,
            uid,
            sender: sender.to_string(),
            client_msg_id: cmid.to_string(),
        };
        if out.send(d).is_err() {
            return;
        }
    }
}

fn mqtt_receive(mut c: MqttConn, connection: u32, out: &mpsc::Sender<Delivered>) {
    while let Some(p) = c.recv() {
        let Packet::Publish(p) = p else { continue };
        if p.qos != QoS::AtMostOnce {
            c.send(&Packet::PubResp(PubResp::new(PubRespKind::PubAck, p.pkid)));
        }
        let m: Value = serde_json::from_slice(&p.payload).expect("inbox JSON message");
        let d = Delivered {
            device: "mqtt",
            connection,
            uid: m["messageUid"].as_u64().expect("messageUid"),
            sender: m["sender"].as_str().unwrap_or_default().to_string(),
            client_msg_id: m["clientMsgId"].as_str().unwrap_or_default().to_string(),
        };
        if out.send(d).is_err() {
            return;
        }
    }
}

fn pb_receive(mut c: PbClient, connection: u32, out: &mpsc::Sender<Delivered>) {
    while !c.is_closed() {
        let Some(m) = c.next_deliver(Duration::from_secs(1)) else {
            continue;
        };
        c.ack(m.message_id);
        let d = Delivered {
            device: "pb",
            connection,
            uid: m.message_id,
            sender: m.sender,
            client_msg_id: m.client_msg_id,
        };
        if out.send(d).is_err() {
            return;
        }
    }
}

fn send_body(to: &str, client_msg_id: &str) -> Value {
    json!({
        "conv": {"type": 0, "target": to, "line": 0},
        "payload": {"type": 1, "searchableContent": format!("flood {client_msg_id}")},
        "clientMsgId": client_msg_id,
    })
}

/// QoS 1 `im/send` with up to [`MQTT_WINDOW`] PUBLISHes in flight, until
/// the connection dies; every PUBACK with reason 0 is an ack. The send
/// results on `im/ack/<clientId>` (QoS 0) give the acked messages' ids
/// where they arrived first.
fn mqtt_flood(
    addr: &str,
    user: &str,
    token: &str,
    to: &str,
    n: usize,
    acked: &mpsc::Sender<Acked>,
    rejected: &mpsc::Sender<String>,
) {
    let mut c = MqttConn::connect(addr, Version::V5, user, token, "mq-dev", true);
    c.subscribe("im/ack/mq-dev", QoS::AtMostOnce);
    let mut in_flight: HashMap<u16, String> = HashMap::new();
    let mut uids: HashMap<String, u64> = HashMap::new();
    let mut next = 0usize;
    loop {
        while in_flight.len() < MQTT_WINDOW && next < MAX_SENDS {
            let pkid = (next % 60_000 + 1) as u16;
            let cmid = format!("mq{n}-{next}");
            let body = send_body(to, &cmid).to_string();
            c.send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "im/send".into(),
                pkid,
                properties: Default::default(),
                payload: Bytes::from(body),
            }));
            in_flight.insert(pkid, cmid);
            next += 1;
        }
        let Some(p) = c.recv() else { return };
        if let Packet::Publish(result) = &p {
            let v: Value = serde_json::from_slice(&result.payload).expect("im/ack JSON");
            if let (Some(cmid), Some(uid)) = (v["clientMsgId"].as_str(), v["messageUid"].as_u64()) {
                uids.insert(cmid.to_string(), uid);
            }
        }
        if let Packet::PubResp(r) = p {
            let Some(cmid) = in_flight.remove(&r.pkid) else {
                continue;
            };
            let sent = if r.reason == 0 {
                let uid = uids.remove(&cmid);
                acked
                    .send(Acked {
                        client_msg_id: cmid,
                        uid,
                    })
                    .is_ok()
            } else {
                rejected
                    .send(format!("{cmid}: PUBACK 0x{:02x}", r.reason))
                    .is_ok()
            };
            if !sent || (in_flight.is_empty() && next >= MAX_SENDS) {
                return;
            }
        }
    }
}

/// Sequential `POST /v1/messages` until the gateway stops answering.
fn http_flood(
    url: &str,
    token: &str,
    to: &str,
    n: usize,
    acked: &mpsc::Sender<Acked>,
    rejected: &mpsc::Sender<String>,
) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    for i in 0..MAX_SENDS {
        let cmid = format!("http{n}-{i}");
        let reply = agent
            .post(&format!("{url}/v1/messages"))
            .set("authorization", &format!("Bearer {token}"))
            .send_json(send_body(to, &cmid));
        let sent = match reply {
            Ok(r) => {
                let v: Value = r.into_json().expect("JSON reply");
                match v["result"]["messageUid"].as_u64() {
                    Some(uid) if v["code"] == 0 => acked
                        .send(Acked {
                            client_msg_id: cmid,
                            uid: Some(uid),
                        })
                        .is_ok(),
                    _ => rejected.send(format!("{cmid}: {v}")).is_ok(),
                }
            }
            Err(ureq::Error::Status(status, r)) => rejected
                .send(format!(
                    "{cmid}: HTTP {status} {}",
                    r.into_string().unwrap_or_default()
                ))
                .is_ok(),
            // The gateway is gone (killed): the flood is over.
            Err(ureq::Error::Transport(_)) => return,
        };
        if !sent {
            return;
        }
    }
}

/// A minimal blocking MQTT client over the project's codec.
struct MqttConn {
    stream: TcpStream,
    framer: MqttFramer,
    version: Version,
    buf: BytesMut,
    /// Packets read while waiting for a CONNACK/SUBACK.
    early: VecDeque<Packet>,
}

impl MqttConn {
    /// Connect and log in; panics unless CONNACK accepts.
    fn connect(
        addr: &str,
        version: Version,
        user: &str,
        token: &str,
        device: &str,
        clean: bool,
    ) -> MqttConn {
        let stream = TcpStream::connect(addr).expect("connecting to the MQTT listener");
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(WAIT)).ok();
        let mut c = MqttConn {
            stream,
            framer: MqttFramer::with_version(1 << 20, version),
            version,
            buf: BytesMut::new(),
            early: VecDeque::new(),
        };
        c.send(&Packet::Connect(Connect {
            version,
            client_id: device.into(),
            clean_start: clean,
            keep_alive: 60,
            username: Some(user.into()),
            password: Some(Bytes::from(token.to_string())),
            will: None,
            properties: Default::default(),
        }));
        match c.recv() {
            Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0, "CONNACK of {user}/{device}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    fn subscribe(&mut self, topic: &str, qos: QoS) {
        self.send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter {
                filter: topic.into(),
                options: SubOptions {
                    qos,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                },
            }],
            properties: Default::default(),
        }));
        // A persistent session may deliver before the SUBACK.
        loop {
            match self.read_packet() {
                Some(Packet::SubAck(a)) => {
                    assert_eq!(a.reasons, vec![qos.as_u8()], "SUBACK of {topic}");
                    return;
                }
                Some(p) => self.early.push_back(p),
                None => panic!("no SUBACK for {topic}"),
            }
        }
    }

    fn send(&mut self, p: &Packet) {
        let mut b = BytesMut::new();
        encode_packet(p, self.version, &mut b);
        // A write error means the gateway is gone; the next recv says so.
        let _ = self.stream.write_all(&b);
    }

    /// The next packet; None once the connection closed (or after
    /// [`WAIT`] of silence).
    fn recv(&mut self) -> Option<Packet> {
        self.early.pop_front().or_else(|| self.read_packet())
    }

    fn read_packet(&mut self) -> Option<Packet> {
        loop {
            match tokio_util::codec::Decoder::decode(&mut self.framer, &mut self.buf) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => panic!("the gateway sent a bad MQTT packet: {e}"),
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
