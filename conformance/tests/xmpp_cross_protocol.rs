//! XMPP ↔ PB and XMPP ↔ HTTP, both ways, with slixmpp on the XMPP side:
//! every `MessagePayload` field crosses field-for-field (DESIGN §2), the
//! XMPP side carrying what `<body>` cannot in the imgate payload element.

use std::time::Duration;

use imgate_codecs::pb::proto;
use imgate_conformance::xmpp::{
    received_payload_json, rich_payload_json, run_script, XmppScript, RICH_XMPP,
};
use imgate_conformance::{unique, Gateway, PbClient, WAIT};
use serde_json::{json, Value};

const DOMAIN: &str = "localhost";

/// An XMPP receiver that is online (its script printed "ready").
fn online_receiver(g: &Gateway, user: &str, device: &str, n: usize) -> XmppScript {
    let token = g.admin().token(user, device, 3);
    let mut s = XmppScript::spawn(g, DOMAIN, "xmpp_recv.py", &[user, &token, &n.to_string()]);
    assert_eq!(s.next_line()["event"], "ready");
    s
}

#[test]
fn http_to_xmpp_and_xmpp_to_http() {
    let g = Gateway::start();
    let (h, x) = (unique("http-user"), unique("xmpp-user"));
    let recv = online_receiver(&g, &x, "pc", 2);
    let http = g.client(&h, "web");
    let r = http.send_text(&x, "plain hello", "h1");
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let r = http.post(
        "/v1/messages",
        &json!({"conv": {"type": 0, "target": x, "line": 0}, "payload": rich_payload_json(), "clientMsgId": "h2"}),
    );
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let uid = r.result()["messageUid"].as_u64().expect("uid");
    let got = recv.finish();
    let recs = got["received"].as_array().expect("records").clone();
    assert_eq!(recs[0]["body"], "plain hello");
    assert_eq!(recs[1]["id"], uid.to_string(), "stanza id = messageUid");
    assert_eq!(recs[1]["from"], format!("{h}@{DOMAIN}"));
    assert_eq!(received_payload_json(&recs[1]), rich_payload_json());

    // XMPP → HTTP: the HTTP user syncs exactly what was sent.
    let token = g.admin().token(&x, "pc", 3);
    let sent = run_script(
        &g,
        "xmpp_send.py",
        &[&x, &token, &format!("{h}@{DOMAIN}"), "from xmpp", RICH_XMPP],
    );
    assert_eq!(sent["errors"], json!([]));
    let msgs = http.sync_all(uid);
    let from_x: Vec<&Value> = msgs.iter().filter(|m| m["sender"] == x.as_str()).collect();
    assert_eq!(from_x.len(), 2, "{msgs:?}");
    assert_eq!(from_x[0]["payload"]["searchableContent"], "from xmpp");
    assert_eq!(from_x[0]["payload"]["type"], 1);
    assert_eq!(
        from_x[0]["conv"],
        json!({"type": 0, "target": h, "line": 0})
    );
    assert_eq!(from_x[1]["payload"], rich_payload_json());
    let ids = sent["sent_ids"].as_array().expect("ids");
    assert_eq!(from_x[0]["clientMsgId"], ids[0], "stanza id = clientMsgId");
}

#[test]
fn pb_to_xmpp_and_xmpp_to_pb() {
    let g = Gateway::start();
    let (p, x) = (unique("pb-user"), unique("xmpp-user"));
    let ptoken = g.admin().token(&p, "phone", 2);
    let mut pb = PbClient::login_ok(g.addr("pb"), &p, &ptoken, "phone", 2);
    let recv = online_receiver(&g, &x, "pc", 1);
    let pp = proto::MessagePayload {
        r#type: 3,
        searchable_content: "see <this> & that".into(),
        push_content: "push".into(),
        content: "content\nline2".into(),
        data: vec![0, 1, 2, 255],
        media_type: 2,
        remote_media_url: "http://x/y.png".into(),
        persist_flag: 1,
        expire_duration: 60,
        mentioned_type: 1,
        mentioned_target: vec!["m1".into(), "m2".into()],
        extra: "{\"k\":1}".into(),
        push_data: "pd".into(),
    };
    let ack = pb.send(proto::SendRequest {
        client_msg_id: "p1".into(),
        conversation: Some(proto::Conversation {
            r#type: 0,
            target: x.clone(),
            line: 0,
        }),
        payload: Some(pp.clone()),
        to_users: vec![],
    });
    assert_eq!(ack.code, 0);
    let got = recv.finish();
    let rec = &got["received"][0];
    assert_eq!(rec["id"], ack.message_id.to_string());
    assert_eq!(received_payload_json(rec), rich_payload_json());

    // XMPP → PB, live.
    let xtoken = g.admin().token(&x, "pc", 3);
    let sent = run_script(
        &g,
        "xmpp_send.py",
        &[&x, &xtoken, &format!("{p}@{DOMAIN}"), "hi pb", RICH_XMPP],
    );
    assert_eq!(sent["errors"], json!([]));
    let first = pb.next_deliver(WAIT).expect("PB gets the XMPP text");
    assert_eq!(first.sender, x);
    assert_eq!(
        first
            .payload
            .as_ref()
            .map(|p| p.searchable_content.as_str()),
        Some("hi pb")
    );
    pb.ack(first.message_id);
    let second = pb.next_deliver(WAIT).expect("PB gets the rich message");
    assert_eq!(second.payload.as_ref(), Some(&pp));
    pb.ack(second.message_id);
    assert!(pb.next_deliver(Duration::from_millis(300)).is_none());
}

#[test]
fn rejected_messages_come_back_as_stanza_errors() {
    let g = Gateway::start();
    let x = unique("xmpp-user");
    let token = g.admin().token(&x, "pc", 3);
    let group = unique("grp");
    g.admin()
        .create_group(&group, "someone-else", &["someone-else"]);
    let sent = run_script(
        &g,
        "xmpp_send.py",
        &[
            &x,
            &token,
            &format!("{group}@groups.{DOMAIN}"),
            "not a member",
        ],
    );
    let errors = sent["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{sent}");
    assert_eq!(errors[0]["condition"], "forbidden");
    assert!(
        errors[0]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("9 "),
        "{sent}"
    );
}

/// XEP-0184 across protocols: an XMPP sender gets `<received/>` with its
/// own stanza id when the recipient acks, whether the recipient is a PB
/// client (DeliverAck) or an MQTT client (PUBACK on its inbox); nothing
/// before the ack.
#[test]
fn xmpp_sender_gets_receipts_from_pb_and_mqtt_acks() {
    use imgate_codecs::xmpp::{ns, Element};
    use imgate_conformance::mqtt::MqttAgent;
    use imgate_conformance::xmpp::XmppRaw;
    let g = Gateway::start();
    let (x, p, m) = (unique("rx-xmpp"), unique("rx-pb"), unique("rx-mqtt"));
    let xtoken = g.admin().token(&x, "pc", 3);
    let (mut sender, _) = XmppRaw::login(g.addr("xmpp"), DOMAIN, &x, &xtoken);
    let receipt_for = |sender: &mut XmppRaw, id: &str, within: Duration| {
        sender.wait_for(
            |e: &Element| {
                e.get_child("received", ns::RECEIPTS)
                    .and_then(|r| r.get_attr("id"))
                    == Some(id)
            },
            within,
        )
    };
    let chat = |to: &str, id: &str| {
        format!("<message to='{to}@{DOMAIN}' type='chat' id='{id}'><body>ping</body><request xmlns='urn:xmpp:receipts'/></message>")
    };

    // PB recipient: the receipt comes with its DeliverAck, not before.
    let ptoken = g.admin().token(&p, "phone", 2);
    let mut pb = PbClient::login_ok(g.addr("pb"), &p, &ptoken, "phone", 2);
    sender.send(&chat(&p, "to-pb-1"));
    let d = pb.next_deliver(WAIT).expect("PB gets the message");
    assert!(
        receipt_for(&mut sender, "to-pb-1", Duration::from_millis(300)).is_none(),
        "no receipt before the ack"
    );
    pb.ack(d.message_id);
    let r = receipt_for(&mut sender, "to-pb-1", WAIT).expect("receipt after the PB ack");
    assert_eq!(
        r.get_attr("from"),
        Some(format!("{p}@{DOMAIN}/phone").as_str())
    );

    // MQTT recipient: its PUBACK on the inbox is the ack.
    let mtoken = g.admin().token(&m, "dev", 1);
    let mut mq = MqttAgent::start(g.addr("mqtt"));
    let ack = mq.connect(
        json!({"version": 5, "client_id": "dev", "user": m, "token": mtoken, "manual_ack": true}),
    );
    assert_eq!(ack["rc"], 0, "{ack}");
    let inbox = format!("im/inbox/{m}");
    assert_eq!(mq.subscribe(&inbox, 1), vec![1]);
    sender.send(&chat(&m, "to-mqtt-1"));
    let got = mq.message(&inbox);
    mq.cmd(json!({"op": "ack", "mid": got["mid"]}));
    let r = receipt_for(&mut sender, "to-mqtt-1", WAIT).expect("receipt after the MQTT PUBACK");
    assert_eq!(
        r.get_attr("from"),
        Some(format!("{m}@{DOMAIN}/dev").as_str())
    );
}
