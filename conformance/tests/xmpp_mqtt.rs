//! XMPP ↔ MQTT through the IM namespace (DESIGN §5.3, §5.4), over the real
//! binary: slixmpp on the XMPP side, paho-mqtt (`im/send`, `im/inbox/<user>`,
//! `im/ack/<clientId>`) on the MQTT side. Text, messageUid and every
//! `MessagePayload` field must cross unchanged in both directions.

use imgate_conformance::mqtt::MqttAgent;
use imgate_conformance::xmpp::{
    received_payload_json, rich_payload_json, run_script, XmppScript, RICH_XMPP,
};
use imgate_conformance::{unique, Gateway};
use serde_json::{json, Value};

const DOMAIN: &str = "localhost";

/// The JSON body of an MQTT message event.
fn mqtt_json(msg: &Value) -> Value {
    serde_json::from_str(msg["payload"].as_str().unwrap_or("")).expect("JSON payload")
}

fn mqtt_user(g: &Gateway, user: &str, device: &str, version: u8) -> MqttAgent {
    let token = g.admin().token(user, device, 1);
    let mut a = MqttAgent::start(g.addr("mqtt"));
    let ack =
        a.connect(json!({"version": version, "client_id": device, "user": user, "token": token}));
    assert_eq!(ack["rc"], 0, "{ack}");
    a
}

#[test]
fn xmpp_to_mqtt_inbox_carries_text_uid_and_every_payload_field() {
    for version in [4u8, 5] {
        let g = Gateway::start();
        let (m, x) = (unique("mqtt-user"), unique("xmpp-user"));
        let mut a = mqtt_user(&g, &m, "m-dev", version);
        let inbox = format!("im/inbox/{m}");
        assert_eq!(a.subscribe(&inbox, 1), vec![1]);

        let token = g.admin().token(&x, "pc", 3);
        let sent = run_script(
            &g,
            "xmpp_send.py",
            &[
                &x,
                &token,
                &format!("{m}@{DOMAIN}"),
                "hello mqtt",
                RICH_XMPP,
            ],
        );
        assert_eq!(sent["errors"], json!([]), "{sent}");
        let ids = sent["sent_ids"].as_array().expect("sent ids").clone();

        let first = a.message(&inbox);
        assert_eq!(first["qos"], 1, "inbox messages arrive at QoS 1");
        let first = mqtt_json(&first);
        let second = mqtt_json(&a.message(&inbox));
        for (got, id) in [(&first, &ids[0]), (&second, &ids[1])] {
            assert_eq!(got["sender"], x.as_str(), "{got}");
            assert_eq!(got["conv"], json!({"type": 0, "target": m, "line": 0}));
            assert_eq!(got["clientMsgId"], *id, "stanza id = clientMsgId");
            let uid = got["messageUid"].as_u64().expect("messageUid");
            assert_eq!(got["messageUidStr"], uid.to_string());
        }
        assert_eq!(first["payload"]["searchableContent"], "hello mqtt");
        assert_eq!(first["payload"]["type"], 1);
        assert_eq!(second["payload"], rich_payload_json());

        // The uids are the store's: the recipient's sync over HTTP agrees.
        let synced = g.client(&m, "m-http").sync_all(0);
        for got in [&first, &second] {
            let stored = synced
                .iter()
                .find(|s| s["clientMsgId"] == got["clientMsgId"])
                .unwrap_or_else(|| panic!("{got} not in sync {synced:?}"));
            assert_eq!(stored["messageUid"], got["messageUid"]);
            assert_eq!(stored["payload"], got["payload"]);
        }
        assert_ne!(first["messageUid"], second["messageUid"]);
    }
}

#[test]
fn mqtt_im_send_reaches_xmpp_with_uid_and_every_payload_field() {
    for version in [4u8, 5] {
        let g = Gateway::start();
        let (m, x) = (unique("mqtt-user"), unique("xmpp-user"));
        let xtoken = g.admin().token(&x, "pc", 3);
        let mut recv = XmppScript::spawn(&g, DOMAIN, "xmpp_recv.py", &[&x, &xtoken, "2"]);
        assert_eq!(recv.next_line()["event"], "ready");

        let mut a = mqtt_user(&g, &m, "m-dev", version);
        assert_eq!(a.subscribe("im/ack/m-dev", 1), vec![1]);
        let mut uids = Vec::new();
        for (cid, payload) in [
            ("c1", json!({"type": 1, "searchableContent": "hello xmpp"})),
            ("c2", rich_payload_json()),
        ] {
            let send = json!({"conv": {"type": 0, "target": x, "line": 0},
                "payload": payload, "clientMsgId": cid});
            assert_eq!(
                a.publish(json!({"topic": "im/send", "qos": 1, "payload": send.to_string()})),
                0
            );
            let result = mqtt_json(&a.message("im/ack/m-dev"));
            assert_eq!(
                (result["code"].as_i64(), result["clientMsgId"].as_str()),
                (Some(0), Some(cid)),
                "{result}"
            );
            uids.push(result["messageUid"].as_u64().expect("messageUid"));
        }

        let got = recv.finish();
        let recs = got["received"].as_array().expect("records").clone();
        assert_eq!(recs.len(), 2, "{got}");
        for (rec, uid) in recs.iter().zip(&uids) {
            assert_eq!(rec["id"], uid.to_string(), "stanza id = messageUid");
            assert_eq!(rec["from"], format!("{m}@{DOMAIN}"));
        }
        assert_eq!(recs[0]["body"], "hello xmpp");
        // A plain text (no persistFlag in the JSON: 3, docs/messages.md)
        // is all in the body: no <payload> element is needed.
        assert!(recs[0]["payload"].is_null(), "{}", recs[0]);
        assert_eq!(recs[1]["body"], "see <this> & that");
        assert_eq!(received_payload_json(&recs[1]), rich_payload_json());
    }
}
