//! Browser proof of the WebSocket transport (issue 13): the web demo
//! (`examples/web`, MQTT.js over `/mqtt`) in headless Chromium exchanges IM
//! messages with xmpp.js over RFC 7395 (`/xmpp-websocket`) and a PB client
//! over TCP; and xmpp.js alone logs in over `/xmpp-websocket` and chats with
//! a PB client. `node/agent.mjs` drives the browser and xmpp.js
//! (`imgate_conformance::node`); `scripts/node-deps.sh` installs them.

use std::time::Duration;

use imgate_conformance::node::{NodeAgent, NodeTools};
use imgate_conformance::{unique, Gateway, PbClient, WAIT};
use serde_json::{json, Value};

const DOMAIN: &str = "localhost";
/// The agent exits by itself after this, whatever happens to the test.
const AGENT_LIFETIME: Duration = Duration::from_secs(90);

fn xmpp_service(g: &Gateway) -> String {
    format!("ws://{}/xmpp-websocket", g.addr("ws"))
}

fn xmpp_login(agent: &mut NodeAgent, g: &Gateway, user: &str, token: &str, device: &str) {
    agent.cmd(
        json!({"op": "xmpp", "service": xmpp_service(g), "domain": DOMAIN,
        "user": user, "token": token, "resource": device}),
    );
    let online = agent.event("xmpp_online");
    assert_eq!(
        online["jid"],
        format!("{user}@{DOMAIN}/{device}"),
        "{online}"
    );
}

/// The next `<message/>` with a body that xmpp.js received.
fn xmpp_body(agent: &mut NodeAgent) -> Value {
    agent.expect("an XMPP message with a body", |v| {
        v["event"] == "xmpp_message" && v["body"].is_string()
    })
}

#[test]
fn mqtt_js_in_chromium_exchanges_messages_with_xmpp_js_and_pb() {
    let Some(tools) = NodeTools::find("browser", true) else {
        return;
    };
    let g = Gateway::start();
    let (w, x, p) = (unique("web"), unique("xjs"), unique("pbu"));
    let wt = g.admin().token(&w, "browser", 5);
    let xt = g.admin().token(&x, "laptop", 3);
    let pt = g.admin().token(&p, "phone", 2);
    let mut agent = NodeAgent::start(&tools, AGENT_LIFETIME);
    agent.cmd(
        json!({"op": "browser", "ws": format!("ws://{}/mqtt", g.addr("ws")),
        "user": w, "token": wt, "device": "browser",
        "chromium": tools.chromium.as_ref().expect("chromium")}),
    );
    agent.event("browser_loaded");
    let state = agent.expect("the page connected (or failed)", |v| {
        v["event"] == "browser_state" && (v["value"] == "connected" || v["value"] == "error")
    });
    assert_eq!(state["value"], "connected", "{:?}", agent.unconsumed());
    xmpp_login(&mut agent, &g, &x, &xt, "laptop");
    let mut pb = PbClient::login_ok(g.addr("pb"), &p, &pt, "phone", 2);

    // Browser -> xmpp.js.
    agent.cmd(json!({"op": "browser_send", "to": x, "text": "browser to xmpp.js"}));
    let r = agent.event("browser_sent")["result"].clone();
    assert_eq!(r["code"], 0, "{r}");
    let uid = r["messageUidStr"]
        .as_str()
        .expect("messageUidStr")
        .to_string();
    let got = xmpp_body(&mut agent);
    assert_eq!(got["body"], "browser to xmpp.js", "{got}");
    assert_eq!(got["type"], "chat", "{got}");
    let from = got["from"].as_str().unwrap_or_default();
    assert!(from.starts_with(&format!("{w}@{DOMAIN}")), "{got}");
    assert_eq!(got["id"], uid, "the XMPP id is the message id: {got}");

    // Browser -> PB.
    agent.cmd(json!({"op": "browser_send", "to": p, "text": "browser to pb"}));
    let r = agent.event("browser_sent")["result"].clone();
    assert_eq!(r["code"], 0, "{r}");
    let d = pb
        .next_deliver(WAIT)
        .expect("pb gets the browser's message");
    assert_eq!(d.sender, w);
    assert_eq!(d.message_id.to_string(), r["messageUidStr"], "{r}");
    assert_eq!(
        d.payload.as_ref().map(|c| c.searchable_content.as_str()),
        Some("browser to pb")
    );
    pb.ack(d.message_id);

    // xmpp.js -> browser; the browser's PUBACK is the delivery ack, which
    // comes back to xmpp.js as a XEP-0184 receipt.
    let xid = unique("xmsg");
    agent.cmd(json!({"op": "xmpp_send", "to": format!("{w}@{DOMAIN}"),
        "body": "xmpp.js to browser", "id": xid}));
    agent.event("xmpp_sent");
    let m = agent.event("browser_received")["value"].clone();
    assert_eq!(m["sender"], x.as_str(), "{m}");
    assert_eq!(
        m["payload"]["searchableContent"], "xmpp.js to browser",
        "{m}"
    );
    assert_eq!(m["conv"]["target"], w.as_str(), "{m}");
    let receipt = agent.expect("the receipt for the browser's ack", |v| {
        v["event"] == "xmpp_message" && v["receipt"].is_string()
    });
    assert_eq!(receipt["receipt"], xid.as_str(), "{receipt}");

    // PB -> browser.
    let sent = pb.send_text(&w, "pb to browser", &unique("c"));
    assert_eq!(sent.code, 0);
    let m = agent.event("browser_received")["value"].clone();
    assert_eq!(m["sender"], p.as_str(), "{m}");
    assert_eq!(m["payload"]["searchableContent"], "pb to browser", "{m}");
    assert_eq!(m["messageUidStr"], sent.message_id.to_string(), "{m}");

    // Exactly what was sent: nothing else arrived, no page errors.
    let rest = agent.unconsumed();
    for v in &rest {
        let ev = v["event"].as_str().unwrap_or_default();
        let unexpected = matches!(
            ev,
            "browser_received"
                | "browser_error"
                | "browser_page_error"
                | "browser_blocked"
                | "xmpp_error"
        ) || (ev == "xmpp_message" && v["body"].is_string());
        assert!(!unexpected, "unexpected event {v}; all left: {rest:?}");
    }
    assert!(
        pb.next_deliver(Duration::from_millis(300)).is_none(),
        "pb got one message only"
    );
    if let Ok(path) = std::env::var("IMGATE_BROWSER_SCREENSHOT") {
        agent.cmd(json!({"op": "screenshot", "path": path}));
        agent.event("screenshot");
    }
}

#[test]
fn xmpp_js_over_websocket_logs_in_and_chats_with_pb() {
    let Some(tools) = NodeTools::find("xmpp.js", false) else {
        return;
    };
    let g = Gateway::start();
    let (x, p) = (unique("xjs"), unique("pbu"));
    let xt = g.admin().token(&x, "laptop", 3);
    let pt = g.admin().token(&p, "phone", 2);
    let mut agent = NodeAgent::start(&tools, AGENT_LIFETIME);
    xmpp_login(&mut agent, &g, &x, &xt, "laptop");
    let mut pb = PbClient::login_ok(g.addr("pb"), &p, &pt, "phone", 2);

    // xmpp.js -> PB, and the PB ack comes back as a receipt.
    let xid = unique("xmsg");
    agent.cmd(json!({"op": "xmpp_send", "to": format!("{p}@{DOMAIN}"),
        "body": "hello from xmpp.js", "id": xid}));
    agent.event("xmpp_sent");
    let d = pb.next_deliver(WAIT).expect("pb gets the xmpp.js message");
    assert_eq!(d.sender, x);
    assert_eq!(
        d.payload.as_ref().map(|c| c.searchable_content.as_str()),
        Some("hello from xmpp.js")
    );
    pb.ack(d.message_id);
    let receipt = agent.expect("the receipt for pb's ack", |v| {
        v["event"] == "xmpp_message" && v["receipt"].is_string()
    });
    assert_eq!(receipt["receipt"], xid.as_str(), "{receipt}");

    // PB -> xmpp.js.
    let sent = pb.send_text(&x, "hello from pb", &unique("c"));
    assert_eq!(sent.code, 0);
    let got = xmpp_body(&mut agent);
    assert_eq!(got["body"], "hello from pb", "{got}");
    assert_eq!(got["id"], sent.message_id.to_string(), "{got}");
    assert!(
        got["from"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{p}@{DOMAIN}")),
        "{got}"
    );
}
