//! Limits of the generic MQTT broker over real sockets: retained messages
//! per user and in total (count and bytes, freed by deletion, rebuilt
//! after a restart), subscriptions per session, and wills held to the
//! checks of a PUBLISH (reserved topics at CONNECT, the publish rate when
//! they fire).

use imgate_codecs::mqtt::{
    reason, Connect, LastWill, Packet, Properties, Publish, QoS, SubOptions, Subscribe,
    SubscribeFilter, Unsubscribe, Version,
};
use imgate_conformance::mqtt::RawMqtt;
use imgate_conformance::rabbit_support::eventually;
use imgate_conformance::{unique, Gateway, WAIT};

/// A raw client past CONNACK, with its version.
struct Client {
    raw: RawMqtt,
    v: Version,
    next_pkid: u16,
}

/// CONNECT `user`/`device` (with `will`); the CONNACK code and the socket.
fn connect_with(
    g: &Gateway,
    user: &str,
    device: &str,
    v: Version,
    will: Option<LastWill>,
) -> (u8, RawMqtt) {
    let token = g.admin().token(user, device, 1);
    let mut raw = RawMqtt::connect(g.addr("mqtt"), v);
    raw.send(
        &Packet::Connect(Connect {
            version: v,
            client_id: device.into(),
            clean_start: true,
            keep_alive: 60,
            username: Some(user.into()),
            password: Some(token.into()),
            will,
            properties: Properties::default(),
        }),
        v,
    );
    match raw.recv() {
        Some(Packet::ConnAck(a)) => (a.code, raw),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn connect(g: &Gateway, user: &str, device: &str, v: Version) -> Client {
    let (code, raw) = connect_with(g, user, device, v, None);
    assert_eq!(code, 0, "CONNACK");
    Client {
        raw,
        v,
        next_pkid: 1,
    }
}

fn will(topic: &str) -> Option<LastWill> {
    Some(LastWill {
        topic: topic.into(),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    })
}

impl Client {
    fn pkid(&mut self) -> u16 {
        self.next_pkid += 1;
        self.next_pkid
    }

    /// PUBLISH; for QoS ≥ 1 the PUBACK / PUBREC reason (None: closed
    /// without one).
    fn publish(&mut self, topic: &str, payload: &str, qos: QoS, retain: bool) -> Option<u8> {
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            self.pkid()
        };
        let p = Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            pkid,
            properties: Properties::default(),
            payload: payload.to_owned().into(),
        });
        self.raw.send(&p, self.v);
        if qos == QoS::AtMostOnce {
            return Some(0);
        }
        loop {
            match self.raw.recv()? {
                Packet::PubResp(r) if r.pkid == pkid => return Some(r.reason),
                _ => continue,
            }
        }
    }

    fn retain(&mut self, topic: &str, payload: &str) -> u8 {
        self.publish(topic, payload, QoS::AtLeastOnce, true)
            .expect("a PUBACK")
    }

    /// SUBSCRIBE at QoS 1; the SUBACK reasons.
    fn subscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        let pkid = self.pkid();
        let s = Packet::Subscribe(Subscribe {
            pkid,
            filters: filters
                .iter()
                .map(|f| SubscribeFilter {
                    filter: (*f).into(),
                    options: SubOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    },
                })
                .collect(),
            properties: Properties::default(),
        });
        self.raw.send(&s, self.v);
        loop {
            match self.raw.recv() {
                Some(Packet::SubAck(a)) if a.pkid == pkid => return a.reasons,
                Some(_) => continue,
                None => panic!("no SUBACK"),
            }
        }
    }

    fn unsubscribe(&mut self, filter: &str) {
        let pkid = self.pkid();
        let u = Packet::Unsubscribe(Unsubscribe {
            pkid,
            filters: vec![filter.into()],
            properties: Properties::default(),
        });
        self.raw.send(&u, self.v);
        loop {
            match self.raw.recv() {
                Some(Packet::UnsubAck(a)) if a.pkid == pkid => return,
                Some(_) => continue,
                None => panic!("no UNSUBACK"),
            }
        }
    }

    /// The PUBLISHes received (topic, payload, retain) up to and without
    /// the first on `until`; each QoS 1 one is acknowledged.
    fn publishes_until(&mut self, until: &str) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        loop {
            match self.raw.recv() {
                Some(Packet::Publish(p)) => {
                    if p.qos == QoS::AtLeastOnce {
                        let ack = imgate_codecs::mqtt::PubResp::new(
                            imgate_codecs::mqtt::PubRespKind::PubAck,
                            p.pkid,
                        );
                        self.raw.send(&Packet::PubResp(ack), self.v);
                    }
                    if p.topic == until {
                        return out;
                    }
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    out.push((p.topic, payload, p.retain));
                }
                Some(_) => continue,
                None => panic!("closed or silent before {until}; got {out:?}"),
            }
        }
    }
}

fn topics(v: &[(String, String, bool)]) -> Vec<&str> {
    v.iter().map(|(t, _, _)| t.as_str()).collect()
}

/// Publish the end marker `end` from `c` (not retained).
fn mark(c: &mut Client, end: &str) {
    assert!(c
        .publish(end, "end", QoS::AtLeastOnce, false)
        .is_some_and(|r| r < 0x80));
}

#[test]
fn retained_count_per_user_refuses_the_next_and_deletion_frees() {
    let g = Gateway::start_with(&[("IMGATE_MQTT_RETAINED_MAX_PER_USER", "2")]);
    let t = unique("rcount");
    let (alice, bob) = (unique("alice"), unique("bob"));
    let mut live = connect(&g, &unique("live"), "l", Version::V5);
    live.subscribe(&[&format!("{t}/#")]);
    let mut a = connect(&g, &alice, "a", Version::V5);
    let at = |n: &str| format!("{t}/{n}");
    assert!(a.retain(&at("1"), "one") < 0x80);
    assert!(a.retain(&at("2"), "two") < 0x80);
    // The third of alice's: refused at QoS 1 and 2, and not delivered.
    assert_eq!(a.retain(&at("3"), "three"), reason::QUOTA_EXCEEDED);
    assert_eq!(
        a.publish(&at("3"), "three", QoS::ExactlyOnce, true),
        Some(reason::QUOTA_EXCEEDED),
        "PUBREC"
    );
    // Replacing one of hers counts nothing new; bob has his own quota.
    assert!(a.retain(&at("1"), "one again") < 0x80);
    let mut b = connect(&g, &bob, "b", Version::V5);
    assert!(b.retain(&at("b"), "bob's") < 0x80);
    // QoS 0 over the limit: delivered, not retained.
    a.publish(&at("q0"), "zero", QoS::AtMostOnce, true);
    // MQTT 3.1.1 QoS 1 over the limit: closed without a PUBACK.
    let mut a4 = connect(&g, &alice, "a4", Version::V4);
    assert_eq!(a4.publish(&at("v4"), "four", QoS::AtLeastOnce, true), None);
    mark(&mut b, &at("end1"));
    let got = live.publishes_until(&at("end1"));
    assert_eq!(
        topics(&got),
        [at("1"), at("2"), at("1"), at("b"), at("q0")],
        "refused ones are not delivered"
    );

    let mut late = connect(&g, &unique("late"), "x", Version::V5);
    late.subscribe(&[&format!("{t}/#")]);
    mark(&mut b, &at("end2"));
    let retained = late.publishes_until(&at("end2"));
    assert_eq!(
        retained,
        [
            (at("1"), "one again".to_owned(), true),
            (at("2"), "two".to_owned(), true),
            (at("b"), "bob's".to_owned(), true),
        ]
    );

    // Clearing one frees its place (alice again: a4 took her place).
    let mut a = connect(&g, &alice, "a", Version::V5);
    assert!(a.retain(&at("2"), "") < 0x80);
    assert!(a.retain(&at("3"), "three") < 0x80);
    assert_eq!(a.retain(&at("4"), "four"), reason::QUOTA_EXCEEDED);
}

#[test]
fn retained_bytes_in_total_bind_every_user_until_freed() {
    let g = Gateway::start_with(&[("IMGATE_MQTT_RETAINED_MAX_BYTES_TOTAL", "1000")]);
    let t = unique("rbytes");
    let big = "x".repeat(400);
    let mut a = connect(&g, &unique("alice"), "a", Version::V5);
    let mut b = connect(&g, &unique("bob"), "b", Version::V5);
    assert!(a.retain(&format!("{t}/a"), &big) < 0x80);
    assert!(b.retain(&format!("{t}/b"), &big) < 0x80);
    // About 840 bytes retained: 420 more would pass 1000, whoever sends.
    assert_eq!(a.retain(&format!("{t}/a2"), &big), reason::QUOTA_EXCEEDED);
    assert_eq!(b.retain(&format!("{t}/b2"), &big), reason::QUOTA_EXCEEDED);
    // Small ones still fit.
    assert!(b.retain(&format!("{t}/s"), "small") < 0x80);
    // Alice clears hers: bob's big one fits now.
    assert!(a.retain(&format!("{t}/a"), "") < 0x80);
    assert!(b.retain(&format!("{t}/b2"), &big) < 0x80);
}

#[test]
fn retained_counters_survive_a_restart() {
    let mut g = Gateway::start_with(&[("IMGATE_MQTT_RETAINED_MAX_PER_USER", "2")]);
    let t = unique("rrestart");
    let alice = unique("alice");
    let mut a = connect(&g, &alice, "a", Version::V5);
    assert!(a.retain(&format!("{t}/1"), "one") < 0x80);
    assert!(a.retain(&format!("{t}/2"), "two") < 0x80);
    drop(a);
    g.restart();
    let mut a = connect(&g, &alice, "a", Version::V5);
    assert_eq!(
        a.retain(&format!("{t}/3"), "three"),
        reason::QUOTA_EXCEEDED,
        "alice's two retained messages still count"
    );
    // The owner was kept too: another user is not charged for them.
    let mut b = connect(&g, &unique("bob"), "b", Version::V5);
    assert!(b.retain(&format!("{t}/b"), "bob's") < 0x80);
    assert!(a.retain(&format!("{t}/1"), "") < 0x80);
    assert!(a.retain(&format!("{t}/3"), "three") < 0x80);
}

#[test]
fn subscriptions_per_session_are_limited() {
    let g = Gateway::start_with(&[("IMGATE_MQTT_MAX_SUBSCRIPTIONS_PER_SESSION", "2")]);
    let t = unique("subs");
    let f = |n: &str| format!("{t}/{n}");
    let mut s = connect(&g, &unique("sub"), "s", Version::V5);
    assert_eq!(
        s.subscribe(&[&f("a"), &f("b"), &f("c")]),
        [1, 1, reason::QUOTA_EXCEEDED]
    );
    // Replacing one is no new subscription; a shared one counts.
    assert_eq!(s.subscribe(&[&f("a")]), [1]);
    assert_eq!(
        s.subscribe(&[&format!("$share/g/{t}/d")]),
        [reason::QUOTA_EXCEEDED]
    );
    // The refused filter got nothing.
    let mut p = connect(&g, &unique("pub"), "p", Version::V5);
    assert!(p.publish(&f("c"), "c", QoS::AtLeastOnce, false).is_some());
    mark(&mut p, &f("b"));
    assert!(s.publishes_until(&f("b")).is_empty());
    // Room again after an UNSUBSCRIBE.
    s.unsubscribe(&f("b"));
    assert_eq!(s.subscribe(&[&f("c")]), [1]);
    // MQTT 3.1.1: 0x80 for the excess.
    let mut s4 = connect(&g, &unique("sub4"), "s4", Version::V4);
    assert_eq!(
        s4.subscribe(&[&f("a"), &f("b"), &f("c")]),
        [1, 1, reason::V4_SUBACK_FAILURE]
    );
}

#[test]
fn wills_to_reserved_topics_are_refused_at_connect() {
    let g = Gateway::start();
    let t = unique("wres");
    let mut all = connect(&g, &unique("all"), "all", Version::V5);
    assert_eq!(all.subscribe(&["#"]), [1]);
    let mut inboxes = connect(&g, &unique("inboxes"), "ib", Version::V5);
    assert_eq!(inboxes.subscribe(&["+/inbox/+"]), [1]);
    let mallory = unique("mallory");
    for (topic, v, code) in [
        ("im/inbox/bob", Version::V5, reason::NOT_AUTHORIZED),
        ("im/inbox/bob", Version::V4, reason::V4_NOT_AUTHORIZED),
        ("$SYS/x", Version::V5, reason::NOT_AUTHORIZED),
        ("$SYS/x", Version::V4, reason::V4_NOT_AUTHORIZED),
        ("im/send", Version::V5, reason::NOT_AUTHORIZED),
    ] {
        let (got, mut raw) = connect_with(&g, &mallory, "m", v, will(topic));
        assert_eq!(got, code, "will to {topic} over {v:?}");
        assert!(raw.until_closed().is_empty(), "closed after the refusal");
    }
    // Nothing reached the wildcard subscribers before this marker.
    let end = format!("{t}/inbox/end");
    let mut p = connect(&g, &unique("pub"), "p", Version::V5);
    mark(&mut p, &end);
    assert_eq!(all.publishes_until(&end), []);
    assert_eq!(inboxes.publishes_until(&end), []);
}

#[test]
fn wills_obey_the_publish_rate_limit() {
    let g = Gateway::start_with(&[
        ("IMGATE_RATE_LIMIT_MESSAGES", "3"),
        ("IMGATE_RATE_LIMIT_PER_SECS", "3600"),
        ("RUST_LOG", "info,imgate::mqtt=debug"),
    ]);
    let t = unique("wrate");
    let mut w = connect(&g, &unique("watch"), "w", Version::V5);
    w.subscribe(&[&format!("{t}/#")]);
    let user = unique("dev");
    // Within the rate a will fires (one of the three).
    let (code, raw) = connect_with(&g, &user, "d1", Version::V5, will(&format!("{t}/first")));
    assert_eq!(code, 0);
    drop(raw);
    assert_eq!(
        topics(&w.publishes_until(&format!("{t}/first"))),
        Vec::<&str>::new()
    );
    // Publishes use the rest (two, since the will took one) until one
    // is over the rate.
    let mut d = connect(&g, &user, "d", Version::V5);
    let mut sent = Vec::new();
    loop {
        let topic = format!("{t}/p{}", sent.len());
        let code = d.publish(&topic, "p", QoS::AtLeastOnce, false);
        if code == Some(reason::QUOTA_EXCEEDED) {
            break;
        }
        assert!(code.is_some_and(|c| c < 0x80), "{code:?}");
        sent.push(topic);
        assert!(sent.len() <= 3, "the rate never refused a publish");
    }
    // A will of the same user now is dropped.
    let (code, raw) = connect_with(&g, &user, "d2", Version::V5, will(&format!("{t}/second")));
    assert_eq!(code, 0);
    drop(raw);
    eventually("the will dropped over the rate", WAIT, || {
        g.log()
            .contains("mqtt: will over the publish rate limit; dropped")
    });
    let mut other = connect(&g, &unique("other"), "o", Version::V5);
    mark(&mut other, &format!("{t}/end"));
    let got = w.publishes_until(&format!("{t}/end"));
    assert_eq!(topics(&got), sent, "no will after the rate was used up");
}
