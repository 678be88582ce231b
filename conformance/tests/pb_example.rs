//! The Python PB example (generated from imgate.proto by protoc) talks to
//! the real binary, both ways with a Rust PB client.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use imgate_conformance::{python, Gateway, PbClient, WAIT};
use serde_json::Value;

#[test]
fn python_example_client_sends_and_receives() {
    let g = Gateway::start();
    let alice_token = g.admin().token("alice", "py", 7);
    let bob_token = g.admin().token("bob", "phone", 2);
    let mut bob = PbClient::login_ok(g.addr("pb"), "bob", &bob_token, "phone", 2);
    let (host, port) = g.addr("pb").rsplit_once(':').unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/pb_client.py");
    let mut child = Command::new(python())
        .arg(script)
        .args([
            host,
            port,
            "alice",
            &alice_token,
            "py",
            "bob",
            "hello from python",
            "--wait-deliver",
            "20",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("running the python example");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || -> Value {
        serde_json::from_str(&lines.next().expect("a line").expect("utf-8")).unwrap()
    };
    assert_eq!(next()["login_code"], 0);
    let sent = next();
    assert_eq!(sent["send_code"], 0);
    let m = bob
        .next_deliver(WAIT)
        .expect("bob gets the python client's message");
    assert_eq!(
        m.message_id.to_string(),
        sent["message_id"].as_str().unwrap()
    );
    assert_eq!(m.payload.unwrap().searchable_content, "hello from python");
    let reply = bob.send_text("alice", "hello back", "r1");
    let got = next();
    assert_eq!(got["delivered"], reply.message_id.to_string());
    assert_eq!(got["sender"], "bob");
    assert_eq!(got["text"], "hello back");
    assert!(child.wait().unwrap().success());
}
