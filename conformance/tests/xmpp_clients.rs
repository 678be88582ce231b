//! What real XMPP clients do on every start, with slixmpp (scripts in
//! `conformance/python/`): IQs routed to another client's full JID,
//! body-less messages (chat states, markers, reactions) and corrections
//! with the ids each client knows, groups joined as MUC rooms, carbons,
//! and retraction ↔ recall across protocols.

use imgate_conformance::xmpp::{run_script, XmppScript};
use imgate_conformance::{unique, Gateway, PbClient, WAIT};
use serde_json::{json, Value};

const DOMAIN: &str = "localhost";

fn of_type(msgs: &[Value], t: i64) -> Vec<&Value> {
    msgs.iter().filter(|m| m["payload"]["type"] == t).collect()
}

#[test]
fn slixmpp_iqs_route_to_full_jids_and_extensions_keep_their_ids() {
    let g = Gateway::start();
    let (a, b) = (unique("rt-a"), unique("rt-b"));
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let out = run_script(&g, "xmpp_routing.py", &[&a, &at, &b, &bt, "pc"]);
    let bob_full = format!("{b}@{DOMAIN}/pc");
    // RFC 6120 §10.5.4: answered by Bob's client, not the server.
    assert_eq!(out["version_from"], bob_full, "{out}");
    assert_eq!(out["version_name"], "Slixmpp", "{out}");
    let features: Vec<&str> = out["disco_features"]
        .as_array()
        .expect("features")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(features.contains(&"jabber:iq:version"), "{out}");
    assert!(
        !features.contains(&"urn:xmpp:mam:2"),
        "the server's features: {out}"
    );
    // An IQ to a resource that is not connected: service-unavailable, on
    // a shared store too (there once no node took it).
    assert_eq!(out["absent"], "service-unavailable", "{out}");
    assert_eq!(out["chat_state_from"], format!("{a}@{DOMAIN}/pc"), "{out}");
    // Bob's client knows its message by its own id; Alice's by the
    // messageUid it was delivered with.
    let bob_id = out["bob_sent_id"].clone();
    assert_ne!(out["alice_saw_id"], bob_id);
    assert_eq!(out["displayed_id"], bob_id, "{out}");
    assert_eq!(out["reaction_id"], bob_id, "{out}");
    assert_eq!(out["reactions"], json!(["👍"]), "{out}");
    assert_eq!(out["correction_body"], "second try", "{out}");
    assert_eq!(out["correction_replaces"], out["alice_saw_id"], "{out}");

    // Other protocols see the reaction and the correction as content
    // types naming the message; the chat state and marker were not stored.
    let msgs = g.client(&a, "web").sync_all(0);
    let uid = out["alice_saw_id"].as_str().expect("id");
    let reactions = of_type(&msgs, 120);
    assert_eq!(reactions.len(), 1, "{msgs:?}");
    let r: Value =
        serde_json::from_str(reactions[0]["payload"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(r["messageUid"], uid);
    assert_eq!(r["reactions"], json!(["👍"]));
    let edits = of_type(&msgs, 121);
    assert_eq!(edits.len(), 1, "{msgs:?}");
    assert_eq!(edits[0]["payload"]["searchableContent"], "second try");
    let e: Value = serde_json::from_str(edits[0]["payload"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(e["messageUid"], uid);
    assert_eq!(
        msgs.len(),
        3,
        "message, reaction, correction only: {msgs:?}"
    );
    // Alice's <displayed/> moved her read position in the conversation
    // with Bob (as an HTTP or PB read would).
    let convs = g.client(&a, "web").get("/v1/conversations");
    let with_bob = convs.result()["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .find(|c| c["conv"]["target"] == b.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no conversation with bob: {:?}", convs.body));
    assert_eq!(with_bob["readUptoStr"], uid, "{with_bob}");
}

#[test]
fn slixmpp_joins_a_group_as_a_room_with_history_subject_and_occupants() {
    let g = Gateway::start();
    let (a, b, grp) = (unique("mu-a"), unique("mu-b"), unique("room"));
    g.admin().create_group(&grp, &a, &[&a, &b]);
    let bob_http = g.client(&b, "web");
    for (i, text) in ["h1", "h2"].iter().enumerate() {
        let r = bob_http.post(
            "/v1/messages",
            &json!({"conv": {"type": 1, "target": grp, "line": 0},
                    "payload": {"type": 1, "searchableContent": text},
                    "clientMsgId": format!("hist-{i}")}),
        );
        assert_eq!(r.code(), 0, "{:?}", r.body);
    }
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let out = run_script(&g, "xmpp_muc.py", &[&a, &at, &b, &bt, &grp]);
    let room = format!("{grp}@groups.{DOMAIN}");
    let codes = out["self_codes"].as_array().expect("codes");
    assert!(codes.contains(&json!(110)), "{out}");
    assert!(
        !codes.contains(&json!(210)),
        "the nick is the client's: {out}"
    );
    assert_eq!(out["self_nick"], "alice-nick");
    assert_eq!(out["self_affiliation"], "owner", "{out}");
    assert_eq!(out["subject"], grp);
    // Bob joined first: the occupant Alice sees (slixmpp lists her
    // own nick too), and he sees her join.
    assert_eq!(out["occupants"], json!(["alice-nick", "bob-nick"]), "{out}");
    assert_eq!(out["bob_saw_join"], "alice-nick", "{out}");
    assert_eq!(out["history"], json!(["h1", "h2"]), "{out}");
    assert_eq!(out["bob_got"]["from"], format!("{room}/alice-nick"));
    assert_eq!(out["bob_got"]["body"], "hello room");
    assert_eq!(out["reflection_id"], out["sent_id"], "{out}");
    assert_eq!(out["room_identities"][0], json!(["conference", "text"]));
    assert_eq!(out["room_has_muc"], true);
    // The room's archive (XEP-0313 to the room's JID): its messages, from
    // the room, oldest first.
    assert_eq!(out["archive_fin_from"], room, "{out}");
    let archive = out["archive"].as_array().expect("archive");
    let bodies: Vec<&Value> = archive.iter().map(|m| &m["body"]).collect();
    assert_eq!(
        bodies,
        [&json!("h1"), &json!("h2"), &json!("hello room")],
        "{out}"
    );
    assert!(
        archive
            .iter()
            .all(|m| m["from"] == room && m["type"] == "groupchat"),
        "{out}"
    );
    // Nick change (XEP-0045 §7.6): Bob sees the old nick go with 303.
    assert_eq!(out["new_nick"], "alice-2", "{out}");
    assert_eq!(out["rename_codes"], json!([303]), "{out}");
    assert_eq!(out["rename_item_nick"], "alice-2", "{out}");
    assert_eq!(out["left_from"], format!("{room}/alice-2"));
    assert!(
        out["left_codes"].as_array().unwrap().contains(&json!(110)),
        "{out}"
    );
    assert_eq!(
        out["bob_saw_leave"],
        json!({"nick": "alice-2", "status": "bye now"}),
        "{out}"
    );
}

#[test]
fn slixmpp_owner_configures_the_room_sets_affiliations_and_kicks() {
    let g = Gateway::start();
    let (a, b, c, grp) = (
        unique("mo-a"),
        unique("mo-b"),
        unique("mo-c"),
        unique("mo-room"),
    );
    g.admin().create_group(&grp, &a, &[&a, &b]);
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let out = run_script(&g, "xmpp_muc_owner.py", &[&a, &at, &b, &bt, &grp, &c]);
    assert_eq!(out["owner_affiliation"], "owner", "{out}");
    assert_eq!(out["owner_role"], "moderator", "{out}");
    assert!(
        out["form_fields"]
            .as_array()
            .unwrap()
            .contains(&json!("muc#roomconfig_roomname")),
        "{out}"
    );
    assert_eq!(out["member_config"], "forbidden", "{out}");
    // The kick: Bob leaves the room (307, 110 to him), stays a member.
    assert_eq!(out["kicked_codes"], json!([110, 307]), "{out}");
    assert_eq!(
        out["owner_saw"],
        json!({"nick": "worker", "codes": [307]}),
        "{out}"
    );
    assert_eq!(out["self_ping_after_kick"], "not-acceptable", "{out}");
    assert_eq!(out["taken_nick"], "conflict", "{out}");
    assert!(
        out["rejoined_codes"]
            .as_array()
            .unwrap()
            .contains(&json!(110)),
        "{out}"
    );
    assert_eq!(out["self_ping_after_rejoin"], "answered", "{out}");
    assert_eq!(out["member_kick"], "forbidden", "{out}");
    // The form renamed the group; the affiliation list made Carol a member.
    let info = g
        .admin()
        .post("/admin/group/info", &json!({"groupId": grp}));
    assert_eq!(info.code(), 0, "{:?}", info.body);
    let result = &info.body["result"];
    assert_eq!(result["name"], "Renamed room", "{result}");
    let members = result["members"].as_array().unwrap();
    assert!(members.contains(&json!(c)), "{result}");
    assert!(
        members.contains(&json!(b)),
        "a kicked occupant stays a member: {result}"
    );
}

#[test]
fn slixmpp_vcard_private_storage_and_pep_are_kept_per_user_and_survive_a_restart() {
    let mut g = Gateway::start();
    let (a, b, c) = (unique("ad-a"), unique("ad-b"), unique("ad-c"));
    // B is A's contact (they have a conversation); C is not.
    let r = g.client(&b, "web").send_text(&a, "hi a", "ad-1");
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let ct = g.admin().token(&c, "pc", 3);
    let out = run_script(
        &g,
        "xmpp_account_data.py",
        &["write", &a, &at, &b, &bt, &c, &ct],
    );
    let a_jid = format!("{a}@{DOMAIN}");
    assert_eq!(
        out["bob_notified"],
        json!({"from": a_jid, "node": "urn:example:mood", "text": "happy"}),
        "{out}"
    );
    assert_eq!(out["alice_notified"], "urn:example:mood", "{out}");
    assert_eq!(out["bob_reads_title"], "Chief tester", "{out}");
    assert_eq!(out["bob_reads_open"], "happy", "{out}");
    assert_eq!(out["bob_reads_private"], "not-authorized", "{out}");
    assert_eq!(out["carol_reads_open"], "not-authorized", "{out}");
    assert_eq!(out["bob_writes_vcard"], "forbidden", "{out}");
    assert_eq!(out["alice_reads_private"], "hidden", "{out}");
    g.restart();
    let at = g.admin().token(&a, "pc", 3);
    let out = run_script(&g, "xmpp_account_data.py", &["read", &a, &at]);
    assert_eq!(out["title"], "Chief tester", "{out}");
    assert_eq!(out["bookmarks"], json!(["room@groups.example"]), "{out}");
    assert_eq!(out["open_item"], "happy", "{out}");
}

#[test]
fn slixmpp_makes_a_room_by_joining_it_only_when_room_creation_is_on() {
    let g = Gateway::start_with(&[("IMGATE_XMPP_ROOM_CREATION", "true")]);
    let (a, b, grp) = (unique("mc-a"), unique("mc-b"), unique("mc-room"));
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let out = run_script(&g, "xmpp_muc_create.py", &[&a, &at, &b, &bt, &grp]);
    assert_eq!(out["codes"], json!([100, 110, 201]), "{out}");
    assert_eq!(out["affiliation"], "owner", "{out}");
    assert_eq!(out["instant"], "accepted", "{out}");
    assert!(
        !out["bob_codes"].as_array().unwrap().contains(&json!(201)),
        "{out}"
    );
    assert_eq!(out["bob_sees"], json!(["guest", "maker"]), "{out}");
    // The room is a group like any other.
    let info = g
        .admin()
        .post("/admin/group/info", &json!({"groupId": grp}));
    assert_eq!(info.body["result"]["owner"], a.as_str(), "{:?}", info.body);
    let members = info.body["result"]["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), 2, "{members:?}");

    // Off (the default): a room that does not exist cannot be joined.
    let g = Gateway::start();
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let out = run_script(&g, "xmpp_muc_create.py", &[&a, &at, &b, &bt, &grp]);
    assert_eq!(out["join_error"], "registration-required", "{out}");
    let info = g
        .admin()
        .post("/admin/group/info", &json!({"groupId": grp}));
    assert_ne!(info.code(), 0, "no group was made: {:?}", info.body);
}

#[test]
fn slixmpp_non_member_cannot_join_a_room() {
    let g = Gateway::start();
    let (a, b, grp) = (unique("mx-a"), unique("mx-b"), unique("closed"));
    g.admin().create_group(&grp, &b, &[&b]);
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let out = run_script(&g, "xmpp_muc.py", &[&a, &at, &b, &bt, &grp]);
    assert_eq!(out["join_error"], "registration-required", "{out}");
}

#[test]
fn xmpp_retraction_recalls_the_message_for_an_http_recipient() {
    let g = Gateway::start();
    let (x, h) = (unique("rx-x"), unique("rx-h"));
    let xt = g.admin().token(&x, "pc", 3);
    let mut s = XmppScript::spawn(&g, DOMAIN, "xmpp_retract.py", &[&x, &xt, "send", &h]);
    let sent = s.next_line();
    assert_eq!(sent["event"], "sent", "{sent}");
    let out = s.finish();
    assert_eq!(out["errors"], json!([]), "{out}");
    let msgs = g.client(&h, "web").sync_all(0);
    assert!(
        msgs.iter().all(|m| m["clientMsgId"] != sent["id"]),
        "recalled from history: {msgs:?}"
    );
    let notices = of_type(&msgs, 80);
    assert_eq!(notices.len(), 1, "{msgs:?}");
    assert_eq!(notices[0]["sender"], x);
    let extra: Value =
        serde_json::from_str(notices[0]["payload"]["extra"].as_str().unwrap()).unwrap();
    assert_eq!(extra["clientMsgId"], sent["id"]);
}

#[test]
fn http_recall_arrives_as_an_xmpp_retraction() {
    let g = Gateway::start();
    let (x, h) = (unique("rr-x"), unique("rr-h"));
    let xt = g.admin().token(&x, "pc", 3);
    let mut s = XmppScript::spawn(&g, DOMAIN, "xmpp_retract.py", &[&x, &xt, "recv", &h]);
    assert_eq!(s.next_line()["event"], "ready");
    let http = g.client(&h, "web");
    let r = http.send_text(&x, "oops", "rr-1");
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let uid = r.result()["messageUid"].as_u64().expect("uid");
    let got = s.next_line();
    assert_eq!(got["id"], uid.to_string(), "{got}");
    let r = http.post("/v1/recall", &json!({"messageUid": uid}));
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let out = s.finish();
    assert_eq!(out["retract_id"], uid.to_string(), "{out}");
    assert_eq!(out["from"], format!("{h}@{DOMAIN}"));
}

#[test]
fn xmpp_retraction_recalls_the_message_for_a_pb_recipient() {
    let g = Gateway::start();
    let (x, p) = (unique("rp-x"), unique("rp-p"));
    let xt = g.admin().token(&x, "pc", 3);
    let pt = g.admin().token(&p, "phone", 2);
    let mut pb = PbClient::login_ok(g.addr("pb"), &p, &pt, "phone", 2);
    let mut s = XmppScript::spawn(&g, DOMAIN, "xmpp_retract.py", &[&x, &xt, "send", &p]);
    let sent = s.next_line();
    assert_eq!(sent["event"], "sent", "{sent}");
    let out = s.finish();
    assert_eq!(out["errors"], json!([]), "{out}");
    let m = pb.next_deliver(WAIT).expect("the message");
    assert_eq!(m.client_msg_id, sent["id"].as_str().unwrap());
    pb.ack(m.message_id);
    // The retraction is the sender's recall: the PB recipient gets the
    // recall notice naming the message.
    let notice = pb.next_deliver(WAIT).expect("the recall notice");
    let payload = notice.payload.expect("payload");
    assert_eq!(payload.r#type, 80, "{payload:?}");
    assert_eq!(payload.content, m.message_id.to_string(), "{payload:?}");
    assert_eq!(notice.sender, x);
}

#[test]
fn pb_recall_arrives_as_an_xmpp_retraction() {
    let g = Gateway::start();
    let (x, p) = (unique("pr-x"), unique("pr-p"));
    let xt = g.admin().token(&x, "pc", 3);
    let pt = g.admin().token(&p, "phone", 2);
    let mut s = XmppScript::spawn(&g, DOMAIN, "xmpp_retract.py", &[&x, &xt, "recv", &p]);
    assert_eq!(s.next_line()["event"], "ready");
    let mut pb = PbClient::login_ok(g.addr("pb"), &p, &pt, "phone", 2);
    let sent = pb.send_text(&x, "oops from pb", "pr-1");
    assert_eq!(sent.code, 0);
    let got = s.next_line();
    assert_eq!(got["id"], sent.message_id.to_string(), "{got}");
    assert_eq!(pb.recall(sent.message_id), 0);
    let out = s.finish();
    assert_eq!(out["retract_id"], sent.message_id.to_string(), "{out}");
    assert_eq!(out["from"], format!("{p}@{DOMAIN}"));
}

#[test]
fn slixmpp_carbons_show_one_device_what_the_other_sent_and_received() {
    let g = Gateway::start();
    let (a, b) = (unique("cb-a"), unique("cb-b"));
    let pc = g.admin().token(&a, "pc", 3);
    let phone = g.admin().token(&a, "phone", 2);
    let bt = g.admin().token(&b, "pc", 3);
    let out = run_script(&g, "xmpp_carbons.py", &[&a, &pc, &phone, &b, &bt]);
    assert_eq!(out["server_carbons"], true, "{out}");
    assert_eq!(out["carbon_sent"]["body"], "from the pc", "{out}");
    assert_eq!(out["carbon_sent"]["to"], format!("{b}@{DOMAIN}"));
    assert_eq!(out["pc_got"], "answer");
    assert_eq!(out["phone_got"], "answer");
}

#[test]
fn slixmpp_roster_lists_conversation_partners_with_their_presence() {
    let g = Gateway::start();
    let (a, b, stranger) = (unique("ro-a"), unique("ro-b"), unique("ro-s"));
    let r = g.client(&b, "web").send_text(&a, "hello a", "ro-1");
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let out = run_script(&g, "xmpp_roster.py", &[&a, &at, &b, &bt]);
    let b_jid = format!("{b}@{DOMAIN}");
    assert_eq!(out["roster"][&b_jid], "both", "{out}");
    assert!(out["roster"].get(format!("{stranger}@{DOMAIN}")).is_none());
    // The user's own presence comes back to it (RFC 6121 §4.2.2), which
    // slixmpp lists under its own JID; the contacts are only B.
    let own = format!("{a}@{DOMAIN}");
    let contacts: Vec<&String> = out["roster"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|j| **j != own)
        .collect();
    assert_eq!(contacts, vec![&b_jid], "{out}");
    assert_eq!(out["peer_online"], format!("{b_jid}/pc"), "{out}");
}

#[test]
fn slixmpp_scram_sha1_and_sha256_with_a_device_secret() {
    let g = Gateway::start_with(&[("IMGATE_XMPP_SCRAM", "true")]);
    let user = unique("sc-u");
    let r = g.admin().post(
        "/admin/device/secret/issue",
        &json!({"userId": user, "deviceId": "sensor-1"}),
    );
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let secret = r.result()["secret"].as_str().expect("secret").to_string();
    for mech in ["SCRAM-SHA-256", "SCRAM-SHA-1"] {
        let out = run_script(&g, "xmpp_scram.py", &[&user, &secret, mech]);
        assert_eq!(out["ok"], true, "{mech}: {out}");
        assert_eq!(out["mech"], mech);
        assert_eq!(
            out["jid"],
            format!("{user}@{DOMAIN}/sensor-1"),
            "the secret's device"
        );
        let wrong = run_script(&g, "xmpp_scram.py", &[&user, "ds1_not-the-secret", mech]);
        assert_eq!(wrong["ok"], false, "{mech}: {wrong}");
    }
    // A token cannot do SCRAM (the server never holds it) but still logs
    // in with PLAIN, which slixmpp falls back to.
    let token = g.admin().token(&user, "pc", 3);
    let only_scram = run_script(&g, "xmpp_scram.py", &[&user, &token, "SCRAM-SHA-256"]);
    assert_eq!(only_scram["ok"], false, "{only_scram}");
    let fallback = run_script(&g, "xmpp_scram.py", &[&user, &token, "SCRAM-SHA-256,PLAIN"]);
    assert_eq!(fallback["ok"], true, "{fallback}");
    assert_eq!(fallback["mech"], "PLAIN");
}

#[test]
fn scram_is_not_offered_unless_enabled() {
    let g = Gateway::start();
    let user = unique("sc-off");
    let r = g.admin().post(
        "/admin/device/secret/issue",
        &json!({"userId": user, "deviceId": "d1"}),
    );
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let secret = r.result()["secret"].as_str().expect("secret").to_string();
    let out = run_script(&g, "xmpp_scram.py", &[&user, &secret, "SCRAM-SHA-256"]);
    assert_eq!(out["ok"], false, "{out}");
    let plain = run_script(&g, "xmpp_scram.py", &[&user, &secret, "PLAIN"]);
    assert_eq!(plain["ok"], true, "{plain}");
}

#[test]
fn slixmpp_block_list_refuses_messages_in_every_protocol() {
    let g = Gateway::start();
    let (a, b) = (unique("bl-a"), unique("bl-b"));
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let out = run_script(&g, "xmpp_blocking.py", &[&a, &at, &b, &bt]);
    assert_eq!(
        out["blocked"],
        json!([format!("{b}@{DOMAIN}"), "toto@example.com"]),
        "{out}"
    );
    assert!(
        out["refused"]
            .as_str()
            .unwrap_or_default()
            .starts_with("245"),
        "{out}"
    );
    assert_eq!(out["after"], json!([]), "{out}");
    // Unblocked again: an HTTP send from B to A goes through.
    let r = g.client(&b, "web").send_text(&a, "hello again", "bl-1");
    assert_eq!(r.code(), 0, "{:?}", r.body);
}

#[test]
fn admin_membership_changes_arrive_as_room_presence() {
    let g = Gateway::start();
    let (a, c, grp) = (unique("mm-a"), unique("mm-c"), unique("mm-room"));
    g.admin().create_group(&grp, &a, &[&a]);
    let at = g.admin().token(&a, "pc", 3);
    let ct = g.admin().token(&c, "pc", 3);
    let mut s = XmppScript::spawn(&g, DOMAIN, "xmpp_muc_members.py", &[&a, &at, &grp]);
    assert_eq!(s.next_line()["event"], "joined");
    let r = g.admin().post(
        "/admin/group/member/add",
        &json!({"operator": a, "groupId": grp, "members": [c]}),
    );
    assert_eq!(r.code(), 0, "{:?}", r.body);
    // An added member is an occupant once its client joins.
    let mut cs = XmppScript::spawn(&g, DOMAIN, "xmpp_muc_members.py", &[&c, &ct, &grp, "stay"]);
    assert_eq!(cs.next_line()["event"], "joined");
    let online = s.next_line();
    assert_eq!(online["nick"], c, "{online}");
    let r = g.admin().post(
        "/admin/group/member/del",
        &json!({"operator": a, "groupId": grp, "members": [c]}),
    );
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let out = s.finish();
    assert_eq!(out["offline"], c, "{out}");
    assert_eq!(out["codes"], json!([321]), "{out}");
    let out = cs.finish();
    assert_eq!(out["out"], json!([110, 321]), "{out}");
}
