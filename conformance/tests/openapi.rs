//! docs/openapi.yaml against the running server (issue 14): the spec is
//! valid OpenAPI 3.1; every route it lists answers on its listener (and
//! only there) while unknown paths answer 404; and the real replies of the
//! main calls, successes and errors, validate against its response
//! schemas (which are closed: a renamed or missing field fails). The
//! other direction, every route of the routers is in the spec, is the
//! gateway's unit test `http::spec_routes`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use imgate_conformance::http::{fresh_nonce, now_ms, sign};
use imgate_conformance::{python, python_dir, unique, Gateway, PbClient};
use serde_json::{json, Value};

fn spec_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml")
}

fn checker(command: &str, input: Option<&Value>) -> Value {
    let mut child = Command::new(python())
        .arg(python_dir().join("openapi_check.py"))
        .arg(spec_path())
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting openapi_check.py");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(v) = input {
        stdin
            .write_all(v.to_string().as_bytes())
            .expect("writing the exchanges");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("openapi_check.py");
    assert!(
        out.status.success(),
        "openapi_check.py {command} failed (run `bash scripts/python-venv.sh` after a requirements change): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from openapi_check.py")
}

/// One HTTP exchange: the status and the body as JSON (Null if not JSON).
fn call(method: &str, url: &str, headers: &[(&str, String)], body: Option<&str>) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.set("content-type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn signed_headers(secret: &str) -> Vec<(&'static str, String)> {
    let (nonce, ts) = (fresh_nonce(), now_ms().to_string());
    let sig = sign(&nonce, secret, &ts);
    vec![("nonce", nonce), ("timestamp", ts), ("sign", sig)]
}

/// Records the exchanges to validate.
struct Recorder<'a> {
    g: &'a Gateway,
    exchanges: Vec<Value>,
}

impl Recorder<'_> {
    fn record(&mut self, method: &str, path: &str, status: u16, body: &Value) -> Value {
        self.exchanges.push(json!({
            "method": method, "path": path, "status": status, "body": body,
        }));
        body.clone()
    }

    /// A signed admin call; panics unless the code is `want`.
    fn admin(&mut self, method: &str, path: &str, body: Option<Value>, want: i64) -> Value {
        let url = format!("{}{path}", self.g.admin_url());
        let text = body.map(|b| b.to_string());
        let (status, reply) = call(
            method,
            &url,
            &signed_headers(&self.g.secret),
            text.as_deref(),
        );
        assert_eq!(reply["code"], want, "{method} {path}: {status} {reply}");
        self.record(method, path, status, &reply)
    }

    /// A client API call with `token`.
    fn client(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let url = format!("{}{path}{query}", self.g.http_url());
        let text = body.map(|b| b.to_string());
        let auth = [("authorization", format!("Bearer {token}"))];
        let (status, reply) = call(method, &url, &auth, text.as_deref());
        self.record(method, path, status, &reply)
    }
}

#[test]
fn every_spec_route_answers_on_its_listener_and_unknown_paths_are_404() {
    let g = Gateway::start();
    let routes = checker("routes", None);
    let routes = routes.as_array().expect("route list");
    assert!(routes.len() >= 30, "{routes:?}");
    let base = |listener: &str| match listener {
        "admin" => g.admin_url(),
        _ => g.http_url(),
    };
    for r in routes {
        let (method, path) = (r[0].as_str().unwrap(), r[1].as_str().unwrap());
        let on: Vec<&str> = r[2]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for listener in ["http", "admin"] {
            // Unauthenticated: a route answers (200 for the probes, 401 for
            // the rest), never the fallback's 404 / 405.
            let body = matches!(method, "POST" | "PUT").then_some("{}");
            let (status, reply) = call(method, &format!("{}{path}", base(listener)), &[], body);
            if on.contains(&listener) {
                assert!(
                    status != 404 && status != 405,
                    "{method} {path} on {listener}: {status} {reply}"
                );
                if !path.ends_with("z") && path != "/metrics" {
                    assert_eq!(status, 401, "{method} {path} without credentials: {reply}");
                }
            } else {
                assert_eq!(status, 404, "{method} {path} must not be on {listener}");
                assert_eq!(reply["code"], 253);
            }
        }
    }
    for (listener, path) in [
        ("http", "/v1/nope"),
        ("http", "/admin/user/get_token"),
        ("admin", "/admin/nope"),
        ("admin", "/v1/sync"),
        ("admin", "/"),
    ] {
        let (status, reply) = call("GET", &format!("{}{path}", base(listener)), &[], None);
        assert_eq!(
            (status, reply["code"].as_i64()),
            (404, Some(253)),
            "{listener} {path}"
        );
    }
}

#[test]
fn replies_of_the_main_calls_validate_against_the_spec() {
    let g = Gateway::start();
    let mut r = Recorder {
        g: &g,
        exchanges: Vec::new(),
    };
    let (alice, bob, group) = (unique("oa-a"), unique("oa-b"), unique("oa-g"));

    let tok = r.admin(
        "POST",
        "/admin/user/get_token",
        Some(json!({"userId": alice, "clientId": "web", "platform": 5})),
        0,
    );
    let alice_token = tok["result"]["token"].as_str().unwrap().to_string();
    let tok = r.admin(
        "POST",
        "/admin/user/get_token",
        Some(json!({"userId": bob, "clientId": "pb1", "platform": 1})),
        0,
    );
    let bob_token = tok["result"]["token"].as_str().unwrap().to_string();
    let _bob_pb = PbClient::login_ok(g.addr("pb"), &bob, &bob_token, "pb1", 1);

    // Client API.
    let send = json!({"conv": {"type": 0, "target": bob, "line": 0},
        "payload": {"type": 1, "searchableContent": "hello"}, "clientMsgId": unique("c")});
    let sent = r.client("POST", "/v1/messages", "", &alice_token, Some(send.clone()));
    assert_eq!(sent["code"], 0, "{sent}");
    let again = r.client("POST", "/v1/messages", "", &alice_token, Some(send));
    assert_eq!(again["result"]["duplicate"], true);
    let uid = sent["result"]["messageUid"].as_u64().unwrap();
    let page = r.client("GET", "/v1/sync", "?since=0&limit=10", &alice_token, None);
    assert_eq!(page["result"]["messages"][0]["messageUid"], uid, "{page}");
    let hist = r.client(
        "GET",
        "/v1/history",
        &format!("?type=0&target={bob}"),
        &alice_token,
        None,
    );
    assert_eq!(
        hist["result"]["messages"].as_array().map(Vec::len),
        Some(1),
        "{hist}"
    );
    r.client("GET", "/v1/sync", "?since=x", &alice_token, None);
    let bob_token_conv = bob_token.clone();
    let convs = r.client(
        "GET",
        "/v1/conversations",
        "?limit=5",
        &bob_token_conv,
        None,
    );
    assert_eq!(convs["result"]["conversations"][0]["unread"], 1, "{convs}");
    let read = json!({"conv": {"type": 0, "target": alice, "line": 0}, "messageUid": uid});
    let marked = r.client(
        "POST",
        "/v1/conversations/read",
        "",
        &bob_token_conv,
        Some(read),
    );
    assert_eq!(marked["result"]["unread"], 0, "{marked}");
    r.client(
        "GET",
        "/v1/conversations",
        "?before=x",
        &bob_token_conv,
        None,
    );
    r.client(
        "GET",
        "/v1/history",
        "?type=1&target=nogroup",
        &alice_token,
        None,
    );
    r.client(
        "POST",
        "/v1/messages",
        "",
        "not-a-token",
        Some(json!({"conv": {}})),
    );
    let recalled = r.client(
        "POST",
        "/v1/recall",
        "",
        &alice_token,
        Some(json!({"messageUid": uid})),
    );
    assert_eq!(recalled["code"], 0, "{recalled}");
    for probe in ["/healthz", "/readyz"] {
        let (status, body) = call("GET", &format!("{}{probe}", g.http_url()), &[], None);
        r.record("GET", probe, status, &body);
    }

    // Admin API.
    let sent = r.admin("POST", "/admin/message/send", Some(json!({"sender": alice,
        "conv": {"type": 0, "target": bob}, "payload": {"type": 1, "searchableContent": "from admin"}})), 0);
    let admin_uid = sent["result"]["messageUid"].as_u64().unwrap();
    r.admin(
        "POST",
        "/admin/message/recall",
        Some(json!({"messageUid": admin_uid.to_string()})),
        0,
    );
    r.admin(
        "POST",
        "/admin/group/create",
        Some(
            json!({"operator": alice, "group": {"targetId": group, "name": "g"}, "members": [bob]}),
        ),
        0,
    );
    r.admin(
        "POST",
        "/admin/group/member/add",
        Some(json!({"groupId": group, "members": [{"memberId": "carol"}]})),
        0,
    );
    r.admin(
        "POST",
        "/admin/group/member/del",
        Some(json!({"groupId": group, "members": ["carol"]})),
        0,
    );
    let info = r.admin(
        "POST",
        "/admin/group/info",
        Some(json!({"groupId": group})),
        0,
    );
    assert_eq!(info["result"]["owner"], alice.as_str());
    r.admin(
        "POST",
        "/admin/group/dismiss",
        Some(json!({"groupId": group})),
        0,
    );
    r.admin(
        "POST",
        "/admin/group/info",
        Some(json!({"groupId": group})),
        253,
    );
    r.admin(
        "POST",
        "/admin/sensitive/add",
        Some(json!({"words": ["badword"]})),
        0,
    );
    r.admin("POST", "/admin/sensitive/query", None, 0);
    let hit = r.client(
        "POST",
        "/v1/messages",
        "",
        &alice_token,
        Some(json!({"conv": {"type": 0, "target": bob},
        "payload": {"type": 1, "searchableContent": "a badword"}, "clientMsgId": unique("w")})),
    );
    assert_eq!(hit["code"], 242, "{hit}");
    let hits = r.admin(
        "POST",
        "/admin/sensitive/hits",
        Some(json!({"userId": alice})),
        0,
    );
    assert_eq!(
        hits["result"]["hits"].as_array().map(Vec::len),
        Some(1),
        "{hits}"
    );
    r.admin(
        "POST",
        "/admin/sensitive/del",
        Some(json!({"words": ["badword"]})),
        0,
    );
    r.admin(
        "POST",
        "/admin/user/status",
        Some(json!({"userId": "someone", "status": 1})),
        0,
    );
    r.admin(
        "POST",
        "/admin/user/status/get",
        Some(json!({"userId": "someone"})),
        0,
    );
    r.admin(
        "POST",
        "/admin/user/status",
        Some(json!({"userId": "someone", "status": 9})),
        251,
    );
    r.admin(
        "POST",
        "/admin/user/rate_limit",
        Some(json!({"userId": "someone", "messages": 5, "perSecs": 1})),
        0,
    );
    r.admin("GET", "/admin/mqtt/acl", None, 0);
    let url = format!("{}/admin/mqtt/acl", g.admin_url());
    let (status, body) = call(
        "PUT",
        &url,
        &signed_headers(&g.secret),
        Some("pattern readwrite dev/%u/#\n"),
    );
    assert_eq!(body["code"], 0, "{body}");
    r.record("PUT", "/admin/mqtt/acl", status, &body);
    r.admin("GET", "/admin/mqtt/acl", None, 0);
    r.admin("DELETE", "/admin/mqtt/acl", None, 0);
    r.admin(
        "POST",
        "/admin/device/secret/issue",
        Some(json!({"userId": bob, "deviceId": "iot1"})),
        0,
    );
    r.admin("POST", "/admin/device/secret/list", Some(json!({})), 0);
    r.admin(
        "POST",
        "/admin/device/secret/revoke",
        Some(json!({"userId": bob, "deviceId": "iot1"})),
        0,
    );
    r.admin(
        "POST",
        "/admin/device/secret/revoke",
        Some(json!({"userId": bob, "deviceId": "iot1"})),
        253,
    );
    let sessions = r.admin(
        "POST",
        "/admin/user/sessions",
        Some(json!({"userId": bob})),
        0,
    );
    assert_eq!(
        sessions["result"]["sessions"][0]["protocol"], "pb",
        "{sessions}"
    );
    r.admin(
        "POST",
        "/admin/user/kick",
        Some(json!({"userId": "nobody"})),
        0,
    );
    r.admin(
        "POST",
        "/admin/user/kick",
        Some(json!({"userId": "nobody", "deviceId": "d"})),
        0,
    );
    r.admin(
        "POST",
        "/admin/user/revoke_tokens",
        Some(json!({"userId": "nobody"})),
        0,
    );
    let imported = r.admin("POST", "/admin/import/messages", Some(json!({"messages": [
        {"messageUid": 77, "sender": alice, "conv": {"type": 0, "target": bob},
         "payload": {"type": 1, "searchableContent": "old"}, "timestamp": now_ms() - 86_400_000},
        {"messageUid": 78, "sender": "", "conv": {"type": 0, "target": bob}, "timestamp": now_ms()},
    ]})), 0);
    assert_eq!(
        (
            imported["result"]["imported"].as_i64(),
            imported["result"]["failed"].as_i64()
        ),
        (Some(1), Some(1)),
        "{imported}"
    );
    let exported = r.admin(
        "POST",
        "/admin/export/messages",
        Some(json!({"limit": 2})),
        0,
    );
    assert_eq!(exported["result"]["hasMore"], true, "{exported}");
    r.admin(
        "POST",
        "/admin/message/send",
        Some(json!({"conv": {"type": 0, "target": bob}})),
        251,
    );
    // Unsigned: 239.
    let (status, body) = call(
        "POST",
        &format!("{}/admin/user/get_token", g.admin_url()),
        &[],
        Some("{}"),
    );
    r.record("POST", "/admin/user/get_token", status, &body);
    for probe in ["/healthz", "/readyz"] {
        let (status, body) = call("GET", &format!("{}{probe}", g.admin_url()), &[], None);
        r.record("GET", probe, status, &body);
    }

    // The validator itself fails on a renamed field and on a missing one.
    let mut renamed = r.exchanges[2].clone();
    let result = renamed["body"]["result"].as_object_mut().unwrap();
    let v = result.remove("messageUid").unwrap();
    result.insert("messageId".into(), v);
    renamed["expect_invalid"] = json!(true);
    let mut missing = r.exchanges[4].clone();
    missing["body"]["result"]["messages"][0]
        .as_object_mut()
        .unwrap()
        .remove("timestamp");
    missing["expect_invalid"] = json!(true);
    r.exchanges.push(renamed);
    r.exchanges.push(missing);

    let n = r.exchanges.len();
    let report = checker("validate", Some(&Value::Array(r.exchanges)));
    assert_eq!(report["checked"], n);
    let errors = report["errors"].as_array().expect("errors");
    assert!(
        errors.is_empty(),
        "replies differ from docs/openapi.yaml:\n{}",
        errors
            .iter()
            .map(|e| e.as_str().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
