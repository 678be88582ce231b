//! The admin view of online sessions: `POST /admin/user/sessions` lists a
//! user's sessions on the node, `POST /admin/user/kick` ends one device's
//! sessions (or all of the user's) with code 7, and the CLI does both.

use std::time::{Duration, Instant};

use imgate_codecs::pb::PbServerMessage;
use imgate_conformance::{unique, Gateway, PbClient, WAIT};
use serde_json::{json, Value};

const ANDROID: i32 = 2;
const WINDOWS: i32 = 3;

fn pb(g: &Gateway, user: &str, device: &str, platform: i32) -> PbClient {
    let token = g.admin().token(user, device, platform);
    PbClient::login_ok(g.addr("pb"), user, &token, device, platform)
}

fn sessions(g: &Gateway, user: &str) -> Vec<(String, String)> {
    let r = g
        .admin()
        .post("/admin/user/sessions", &json!({ "userId": user }));
    assert_eq!(r.code(), 0, "{:?}", r.body);
    let mut list: Vec<(String, String)> = r.result()["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| {
            (
                s["deviceId"].as_str().unwrap_or_default().to_string(),
                s["protocol"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    list.sort();
    list
}

fn expect_kick(c: &mut PbClient) {
    let kick = c.recv(WAIT).expect("a kick notice");
    match kick.msg {
        PbServerMessage::Kick(k) => assert_eq!(k.code, 7, "{}", k.reason),
        other => panic!("expected Kick, got {other:?}"),
    }
    assert!(c.wait_closed(WAIT), "kicked session is closed");
}

/// Wait (bounded) until the user's sessions are `want`.
fn wait_for_sessions(g: &Gateway, user: &str, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(d, p)| (d.to_string(), p.to_string()))
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let got = sessions(g, user);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "sessions {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn list_and_kick_one_device_then_all_and_the_cli_does_both() {
    let g = Gateway::start();
    let alice = unique("alice");
    let mut phone = pb(&g, &alice, "phone", ANDROID);
    let mut laptop = pb(&g, &alice, "laptop", WINDOWS);
    wait_for_sessions(&g, &alice, &[("laptop", "pb"), ("phone", "pb")]);

    let r = g.admin().post(
        "/admin/user/kick",
        &json!({ "userId": alice, "deviceId": "phone" }),
    );
    assert_eq!(r.code(), 0, "{:?}", r.body);
    expect_kick(&mut phone);
    assert!(laptop.heartbeat(), "the other device stays online");
    wait_for_sessions(&g, &alice, &[("laptop", "pb")]);

    // The CLI: list, then kick every device.
    let cli =
        |args: &[&str]| -> Value { serde_json::from_str(&g.admin_cli(args)).expect("JSON output") };
    let listed = cli(&["sessions", "--user", &alice]);
    assert_eq!(listed["sessions"][0]["deviceId"], "laptop", "{listed}");
    cli(&["kick", "--user", &alice]);
    expect_kick(&mut laptop);
    wait_for_sessions(&g, &alice, &[]);

    let r = g.admin().post("/admin/user/kick", &json!({}));
    assert_eq!(r.code(), 251, "userId is required: {:?}", r.body);
}
