//! A GUI-class XMPP client's typical session (issue 12): Converse.js (npm
//! `converse.js`, its prebuilt dist) in headless Chromium logs in over
//! XMPP-over-WebSocket (`/xmpp-websocket`, SASL PLAIN with the token), shows
//! the PB contact who wrote first in its roster and that message in the
//! chat, joins a group as a MUC room, sends to it (the PB member gets it),
//! receives a PB member's room message (in its model and on the page), and
//! retracts (XEP-0424) its own room message, which reaches PB as a recall.
//! `node/agent.mjs` drives the page (`node/converse/`), assertions read
//! Converse's own state through `window.imgateConverse` and its DOM.

use std::time::Duration;

use imgate_conformance::node::{node_dir, NodeAgent, NodeTools};
use imgate_conformance::{unique, Gateway, PbClient, WAIT};
use serde_json::{json, Value};

const DOMAIN: &str = "localhost";
/// The agent exits by itself after this, whatever happens to the test.
const AGENT_LIFETIME: Duration = Duration::from_secs(90);
/// Payload type of a recall notice.
const RECALL_NOTICE: i32 = 80;

/// `window.imgateConverse[f](...args)` once.
fn call(agent: &mut NodeAgent, f: &str, args: Value) -> Value {
    agent.cmd(json!({"op": "converse_call", "fn": f, "args": args}));
    agent.expect(f, |v| v["event"] == "converse" && v["fn"] == f)["value"].clone()
}

/// `window.imgateConverse[f](...args)` polled in the page until truthy.
fn wait(agent: &mut NodeAgent, f: &str, args: Value) -> Value {
    agent.cmd(json!({"op": "converse_wait", "fn": f, "args": args}));
    agent.expect(f, |v| v["event"] == "converse" && v["fn"] == f)["value"].clone()
}

#[test]
fn converse_js_logs_in_sees_its_contact_chats_in_a_room_and_retracts() {
    let Some(tools) = NodeTools::find("converse", true) else {
        return;
    };
    let dist = node_dir().join("node_modules/converse.js/dist/converse.min.js");
    assert!(
        dist.is_file(),
        "{} is missing: run `bash scripts/node-deps.sh`",
        dist.display()
    );
    let g = Gateway::start();
    let (c, p, grp) = (unique("cvu"), unique("cvp"), unique("cvroom"));
    let ct = g.admin().token(&c, "browser", 5);
    let pt = g.admin().token(&p, "phone", 2);
    g.admin().create_group(&grp, &p, &[&p, &c]);
    let (p_jid, room) = (format!("{p}@{DOMAIN}"), format!("{grp}@groups.{DOMAIN}"));

    // The contact writes first: that conversation puts them in the roster.
    let mut pb = PbClient::login_ok(g.addr("pb"), &p, &pt, "phone", 2);
    let first = pb.send_text(&c, "hello converse", &unique("c"));
    assert_eq!(first.code, 0);

    let mut agent = NodeAgent::start(&tools, AGENT_LIFETIME);
    agent.cmd(json!({"op": "converse",
        "ws": format!("ws://{}/xmpp-websocket", g.addr("ws")),
        "user": c, "token": ct, "device": "browser", "domain": DOMAIN,
        "chromium": tools.chromium.as_ref().expect("chromium")}));
    agent.event("browser_loaded");
    wait(&mut agent, "connected", json!([]));
    assert_eq!(
        wait(&mut agent, "hasContact", json!([p_jid])),
        p_jid.as_str()
    );
    assert_eq!(call(&mut agent, "openChat", json!([p_jid])), p_jid.as_str());
    let hello = wait(&mut agent, "findMessage", json!([p_jid, "hello converse"]));
    assert_eq!(hello["sender"], "them", "{hello}");

    // Join the group's room; Converse sees itself and the owner there.
    call(&mut agent, "joinRoom", json!([room, c]));
    let nicks = wait(&mut agent, "roomEntered", json!([room]));
    assert!(
        nicks
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x == c.as_str())),
        "{nicks}"
    );

    // Converse -> room: the PB member gets it in the group.
    let sent = call(&mut agent, "send", json!([room, "converse to room"]));
    assert_eq!(sent["body"], "converse to room", "{sent}");
    let d = pb.next_deliver(WAIT).expect("pb gets the room message");
    assert_eq!(d.sender, c);
    let conv = d.conversation.as_ref().expect("conversation");
    assert_eq!((conv.r#type, conv.target.as_str()), (1, grp.as_str()));
    assert_eq!(
        d.payload.as_ref().map(|m| m.searchable_content.as_str()),
        Some("converse to room")
    );
    pb.ack(d.message_id);

    // PB -> room: in Converse's model and on the page.
    assert_eq!(
        pb.send_group_text(&grp, "pb to room", &unique("cg")).code,
        0
    );
    let got = wait(&mut agent, "findMessage", json!([room, "pb to room"]));
    assert_eq!(got["sender"], "them", "{got}");
    agent.cmd(json!({"op": "page_text", "text": "pb to room"}));
    agent.event("page_text");

    // Converse retracts its room message: PB gets the recall of it.
    let r = call(&mut agent, "retract", json!([room, "converse to room"]));
    assert_eq!(r["retracted"], true, "{r}");
    let notice = pb.next_deliver(WAIT).expect("the recall notice");
    let payload = notice.payload.expect("payload");
    assert_eq!(payload.r#type, RECALL_NOTICE, "{payload:?}");
    assert_eq!(payload.content, d.message_id.to_string(), "{payload:?}");
    assert_eq!(notice.sender, c);
    // And Converse saw the room reflect its retraction (no timeout/error).
    let settled = wait(&mut agent, "retractionSettled", json!(["converse to room"]));
    assert_eq!(settled, "settled", "{settled}");

    // No page errors, nothing the page tried to fetch elsewhere.
    for v in agent.unconsumed() {
        let ev = v["event"].as_str().unwrap_or_default();
        assert!(
            !matches!(ev, "browser_page_error" | "browser_blocked"),
            "unexpected event {v}"
        );
    }
}
