//! TLS when a certificate is configured (DESIGN §8, §5.4, §5.6): the gateway
//! runs with the suite's self-signed test certificate
//! (`conformance/fixtures/tls`) and real clients speak to it: PB, MQTT and
//! HTTP over implicit TLS on their TLS listeners (`pbs`, `mqtts`, `https`;
//! a rustls client trusting that certificate), XMPP with STARTTLS on the
//! plain listener and direct TLS on `xmpps` through slixmpp (verifying the
//! certificate). The plain listeners keep running side by side. Plain
//! bytes to a TLS listener get no protocol answer; on plain XMPP SASL is
//! refused until STARTTLS. The admin API is HTTPS as well (the CLI verifies it) unless
//! `admin_tls = false`. A bad certificate setting stops the start with a
//! clear error.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use imgate_codecs::mqtt::{Connect, Packet, Properties, Version};
use imgate_codecs::xmpp::ns;
use imgate_conformance::mqtt::RawMqtt;
use imgate_conformance::tls::{self, Conn};
use imgate_conformance::xmpp::{auth_plain, stream_header, XmppRaw, XmppScript};
use imgate_conformance::{unique, Gateway, PbClient, WAIT};

const ANDROID: i32 = 2;
const DOMAIN: &str = "localhost";

fn tls_gateway() -> Gateway {
    tls_gateway_with(&[])
}

fn tls_gateway_with(extra: &[(&str, &str)]) -> Gateway {
    let env = tls::gateway_env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(extra);
    Gateway::start_with(&env)
}

#[test]
fn pb_over_tls_logs_in_sends_and_receives() {
    // (A short handshake/login limit: the plain client below waits for it.)
    let g = tls_gateway_with(&[("IMGATE_LOGIN_TIMEOUT_SECS", "3")]);
    let (a, b) = (unique("tls-a"), unique("tls-b"));
    let at = g.admin().token(&a, "phone", ANDROID);
    let bt = g.admin().token(&b, "phone", ANDROID);
    let mut alice = PbClient::connect_tls(g.addr("pbs"));
    assert_eq!(alice.login(&a, &at, "phone", ANDROID).code, 0);
    // Side by side: bob is on the plain listener.
    let mut bob = PbClient::connect(g.addr("pb"));
    assert_eq!(bob.login(&b, &bt, "phone", ANDROID).code, 0);
    let sent = alice.send_text(&b, "over tls", "tls-1");
    assert_eq!(sent.code, 0);
    let m = bob
        .next_deliver(WAIT)
        .expect("bob gets the message over TLS");
    assert_eq!(m.message_id, sent.message_id);
    assert_eq!(m.sender, a);
    bob.ack(m.message_id);
    let back = bob.send_text(&a, "over plain", "tls-2");
    assert_eq!(back.code, 0);
    let m = alice.next_deliver(WAIT).expect("alice gets it over TLS");
    assert_eq!(m.message_id, back.message_id);

    // A plain-TCP client on the TLS listener gets no PB answer: its login
    // frame is not a TLS handshake, so at most a TLS alert record (0x15)
    // comes back before the close.
    let mut plain = std::net::TcpStream::connect(g.addr("pbs")).expect("connect");
    plain.set_read_timeout(Some(WAIT)).ok();
    let mut frame = bytes::BytesMut::new();
    let login = imgate_codecs::pb::PbRequest::Login(imgate_codecs::pb::proto::LoginRequest {
        user_id: a.clone(),
        token: at.clone(),
        client_id: "plain".into(),
        platform: ANDROID,
    });
    tokio_util::codec::Encoder::encode(
        &mut imgate_codecs::pb::PbFramer::new(1 << 20),
        login.to_frame(1),
        &mut frame,
    )
    .expect("encode");
    let _ = plain.write_all(&frame);
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(
        reply.is_empty() || reply[0] == 0x15,
        "plain PB got {reply:?}"
    );
}

#[test]
fn https_healthz_and_client_api() {
    let g = tls_gateway();
    let mut conn = Conn::connect_tls(g.addr("https")).expect("TLS to the https listener");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write request");
    let mut reply = Vec::new();
    // (rustls reports a peer that closes without close_notify as an
    // error after the data; the data is what matters.)
    let _ = conn.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let mut plain = std::net::TcpStream::connect(g.addr("https")).expect("connect");
    plain.set_read_timeout(Some(WAIT)).ok();
    let _ = plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));

    // The plain listener runs side by side.
    let mut plain = std::net::TcpStream::connect(g.addr("http")).expect("connect");
    plain.set_read_timeout(Some(WAIT)).ok();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );

    // The admin API is HTTPS too (`g.admin()` speaks it).
    let token = g.admin().token("tls-user", "pc", 3);
    assert!(!token.is_empty());
}

/// `imgate admin get-token bob` against `g` with these extra settings.
fn cli_get_token(g: &Gateway, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(imgate_conformance::gateway::binary())
        .args(["admin", "get-token", "bob"])
        .env_remove("IMGATE_ADMIN_SECRET")
        .env_remove("IMGATE_ADMIN_CA")
        .env_remove("IMGATE_TLS_CERT")
        .env_remove("IMGATE_ADMIN_TLS")
        .env("IMGATE_ADMIN_URL", g.admin_url())
        .env("IMGATE_DATA_DIR", g.data_dir())
        // No system roots: only what the test gives is trusted.
        .env("SSL_CERT_FILE", "/nonexistent")
        .env("SSL_CERT_DIR", "/nonexistent")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run imgate admin")
}

#[test]
fn admin_api_is_https_with_a_certificate_and_the_cli_verifies_it_unless_admin_tls_is_off() {
    let g = tls_gateway();
    assert!(g.admin_url().starts_with("https://"), "{}", g.admin_url());
    // Signed calls over HTTPS.
    assert!(!g.admin().token("tls-admin", "pc", 3).is_empty());
    let mut conn = Conn::connect_tls(g.addr("admin")).expect("TLS to the admin listener");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write request");
    let mut reply = Vec::new();
    let _ = conn.read_to_end(&mut reply);
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    // Plain HTTP gets no HTTP answer: at most a TLS alert, then the close.
    let mut plain = std::net::TcpStream::connect(g.addr("admin")).expect("connect");
    plain.set_read_timeout(Some(WAIT)).ok();
    let _ = plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(buf.is_empty() || buf[0] == 0x15, "plain admin got {buf:?}");

    // The CLI trusts --admin-ca, or the server's own tls_cert.
    let cert = tls::cert_path().display().to_string();
    for env in [
        [("IMGATE_ADMIN_CA", cert.as_str())],
        [("IMGATE_TLS_CERT", cert.as_str())],
    ] {
        let out = cli_get_token(&g, &env);
        assert!(
            out.status.success(),
            "{env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    }
    // Trusting nothing that signed the certificate, it refuses to talk.
    let out = cli_get_token(&g, &[]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A name the certificate does not hold is refused too.
    let out = cli_get_token(
        &g,
        &[
            ("IMGATE_ADMIN_CA", cert.as_str()),
            ("IMGATE_ADMIN_TLS_NAME", "not-this-host.example"),
        ],
    );
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(g);

    // `admin_tls = false` keeps the admin API plain (the rest stays TLS).
    let g = tls_gateway_with(&[("IMGATE_ADMIN_TLS", "false")]);
    assert!(g.admin_url().starts_with("http://"), "{}", g.admin_url());
    assert!(!g.admin().token("tls-plain-admin", "pc", 3).is_empty());
    assert!(
        Conn::connect_tls(g.addr("admin")).is_err(),
        "no TLS handshake on a plain admin listener"
    );
    let out = cli_get_token(&g, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mqtt_connect_over_tls_gets_connack_0() {
    let g = tls_gateway();
    let user = unique("tls-m");
    let token = g.admin().token(&user, "dev1", 3);
    for (version, tls) in [
        (Version::V4, true),
        (Version::V5, true),
        // Side by side: the plain listener too.
        (Version::V5, false),
    ] {
        let mut raw = if tls {
            RawMqtt::connect_tls(g.addr("mqtts"), version)
        } else {
            RawMqtt::connect(g.addr("mqtt"), version)
        };
        raw.send(
            &Packet::Connect(Connect {
                version,
                client_id: "dev1".into(),
                clean_start: true,
                keep_alive: 30,
                username: Some(user.clone()),
                password: Some(token.clone().into()),
                will: None,
                properties: Properties::default(),
            }),
            version,
        );
        match raw.recv() {
            Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0, "{version:?} tls={tls}"),
            other => panic!("expected CONNACK over TLS, got {other:?}"),
        }
    }
}

#[test]
fn xmpp_starttls_with_slixmpp_logs_in_and_chats() {
    let g = tls_gateway();
    let ca = tls::cert_path().display().to_string();
    let env = [("IMGATE_XMPP_CAFILE", ca.as_str())];
    let (a, b) = (unique("tls-xa"), unique("tls-xb"));
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);

    let login = XmppScript::spawn_with(&g, DOMAIN, "xmpp_login.py", &[&a, &at], &env).finish();
    assert_eq!(login["ok"], true, "{login}");
    assert_eq!(login["jid"], format!("{a}@{DOMAIN}/pc"));

    let out =
        XmppScript::spawn_with(&g, DOMAIN, "xmpp_chat.py", &[&a, &at, &b, &bt, "2"], &env).finish();
    let bodies: Vec<&str> = out["received"]
        .as_array()
        .expect("received")
        .iter()
        .filter_map(|r| r["body"].as_str())
        .collect();
    assert_eq!(bodies, ["hello 0", "hello 1"], "{out}");
    assert_eq!(
        out["receipt_ids"].as_array().map(Vec::len),
        Some(2),
        "{out}"
    );

    // Cross-protocol over TLS on both sides: PB (implicit TLS) → XMPP
    // (STARTTLS).
    let pt = g.admin().token(&a, "phone", ANDROID);
    let mut pb = PbClient::connect_tls(g.addr("pbs"));
    assert_eq!(pb.login(&a, &pt, "phone", ANDROID).code, 0);
    assert_eq!(pb.send_text(&b, "from pb", "tls-x1").code, 0);
    let got = XmppScript::spawn_with(&g, DOMAIN, "xmpp_recv.py", &[&b, &bt, "1"], &env).finish();
    assert_eq!(got["received"][0]["body"], "from pb", "{got}");
}

#[test]
fn xmpp_direct_tls_with_slixmpp_logs_in_and_chats_with_a_starttls_client() {
    let g = tls_gateway();
    let ca = tls::cert_path().display().to_string();
    let direct = [
        ("IMGATE_XMPP_CAFILE", ca.as_str()),
        ("IMGATE_XMPP_DIRECT_TLS", "1"),
    ];
    let starttls = [("IMGATE_XMPP_CAFILE", ca.as_str())];
    let (a, b) = (unique("tls-da"), unique("tls-db"));
    let at = g.admin().token(&a, "pc", 3);
    let bt = g.admin().token(&b, "pc", 3);
    let login = XmppScript::spawn_with(&g, DOMAIN, "xmpp_login.py", &[&a, &at], &direct).finish();
    assert_eq!(login["ok"], true, "{login}");
    // Direct TLS offers no STARTTLS (it is encrypted already): SASL first.
    let mut c = Conn::connect_tls(g.addr("xmpps")).expect("TLS to xmpps");
    c.write_all(stream_header(DOMAIN).as_bytes())
        .expect("header");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("</stream:features>") {
        let n = c.read(&mut buf).expect("features");
        assert!(n > 0, "closed before features: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        seen.contains("PLAIN") && !seen.contains("starttls"),
        "{seen}"
    );

    // The recipient is online with STARTTLS on the plain listener.
    let mut recv = XmppScript::spawn_with(&g, DOMAIN, "xmpp_recv.py", &[&b, &bt, "1"], &starttls);
    assert_eq!(recv.next_line()["event"], "ready");
    let to = format!("{b}@{DOMAIN}");
    let sent = XmppScript::spawn_with(
        &g,
        DOMAIN,
        "xmpp_send.py",
        &[&a, &at, &to, "direct"],
        &direct,
    )
    .finish();
    assert_eq!(sent["sent_ids"].as_array().map(Vec::len), Some(1), "{sent}");
    assert_eq!(sent["errors"].as_array().map(Vec::len), Some(0), "{sent}");
    let got = recv.finish();
    assert_eq!(got["received"][0]["body"], "direct", "{got}");
}

#[test]
fn xmpp_plain_client_is_refused_before_auth() {
    let g = tls_gateway();
    let user = unique("tls-xp");
    let token = g.admin().token(&user, "pc", 3);
    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send(&stream_header(DOMAIN));
    let features = c.expect_features();
    let starttls = features
        .get_child("starttls", ns::TLS)
        .expect("STARTTLS is offered");
    assert!(starttls.get_child("required", ns::TLS).is_some());
    assert!(
        features.get_child("mechanisms", ns::SASL).is_none(),
        "no SASL before TLS: {}",
        features.to_xml()
    );
    c.send(&auth_plain(&user, &token));
    let failure = c.next_element(WAIT).expect("SASL failure");
    assert!(failure.is("failure", ns::SASL), "{}", failure.to_xml());
    assert!(failure.get_child("encryption-required", ns::SASL).is_some());
    let (condition, _) = c.stream_error(WAIT).expect("stream error");
    assert_eq!(condition, "policy-violation");
    assert!(c.wait_closed(WAIT));

    // Anything else before STARTTLS is refused the same way.
    let mut c = XmppRaw::connect(g.addr("xmpp"));
    c.send(&stream_header(DOMAIN));
    c.expect_features();
    c.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
    let (condition, _) = c.stream_error(WAIT).expect("stream error");
    assert_eq!(condition, "policy-violation");
    assert!(c.wait_closed(WAIT));
}

#[test]
fn bad_certificate_settings_stop_the_start() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let key = tls::key_path().display().to_string();
    let cert = tls::cert_path().display().to_string();
    let missing = tmp.path().join("nope.pem").display().to_string();
    let not_pem = tmp.path().join("garbage.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let not_pem = not_pem.display().to_string();
    for (c, k, expect) in [
        (missing.as_str(), key.as_str(), "tls_cert"),
        (not_pem.as_str(), key.as_str(), "tls_cert"),
        (cert.as_str(), not_pem.as_str(), "tls_key"),
        (cert.as_str(), "", "tls_key"),
        // The key file holds no certificate: a wrong pairing.
        (key.as_str(), key.as_str(), "tls_cert"),
    ] {
        let out = Command::new(imgate_conformance::gateway::binary())
            .arg("serve")
            .env("IMGATE_DATA_DIR", tmp.path().join("data"))
            .env("IMGATE_TLS_CERT", c)
            .env("IMGATE_TLS_KEY", k)
            .env_remove("IMGATE_ADMIN_SECRET")
            .env_remove("IMGATE_CONFIG")
            .envs(
                imgate_conformance::gateway::LISTENERS
                    .map(|p| (format!("IMGATE_{p}_ADDR"), "127.0.0.1:0".to_string())),
            )
            .stdin(Stdio::null())
            .output()
            .expect("run imgate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {c:?}/{k:?}: {stdout}");
        assert!(!stdout.contains("ready"), "{stdout}");
        assert!(
            stderr.contains(expect),
            "error for {c:?}/{k:?} names {expect}: {stderr}"
        );
    }
}

#[test]
fn websocket_over_tls_carries_pb_next_to_plain_ws() {
    use imgate_conformance::ws::WsClient;
    let g = tls_gateway();
    let (a, b) = (unique("wss-a"), unique("wss-b"));
    let at = g.admin().token(&a, "web", 2);
    let bt = g.admin().token(&b, "web", 2);
    let login = |ws: &mut WsClient, user: &str, token: &str| {
        let mut buf = bytes::BytesMut::new();
        let req = imgate_codecs::pb::PbRequest::Login(imgate_codecs::pb::proto::LoginRequest {
            user_id: user.into(),
            token: token.into(),
            client_id: "web".into(),
            platform: 2,
        });
        tokio_util::codec::Encoder::encode(
            &mut imgate_codecs::pb::PbFramer::new(1 << 20),
            req.to_frame(1),
            &mut buf,
        )
        .expect("encode");
        ws.send_binary(buf.to_vec());
        let reply = ws.recv_binary(WAIT).expect("login response");
        let mut reply = bytes::BytesMut::from(&reply[..]);
        let frame = tokio_util::codec::Decoder::decode(
            &mut imgate_codecs::pb::PbFramer::new(1 << 20),
            &mut reply,
        )
        .expect("frame")
        .expect("whole frame");
        match imgate_codecs::pb::PbServerMessage::decode(&frame).expect("decodes") {
            imgate_codecs::pb::PbServerMessage::LoginResponse(r) => r.code,
            other => panic!("{other:?}"),
        }
    };
    let mut secure = WsClient::connect_tls(g.addr("wss"), "/pb", &[]).expect("wss upgrade");
    assert_eq!(login(&mut secure, &a, &at), 0);
    // The plain WebSocket listener runs side by side.
    let mut plain = WsClient::connect(g.addr("ws"), "/pb", &[]).expect("ws upgrade");
    assert_eq!(login(&mut plain, &b, &bt), 0);
    // Plain bytes to the wss listener get no upgrade.
    let mut raw = std::net::TcpStream::connect(g.addr("wss")).expect("connect");
    raw.set_read_timeout(Some(WAIT)).ok();
    let _ = raw.write_all(b"GET /pb HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    assert!(
        !String::from_utf8_lossy(&reply).contains("HTTP/1.1"),
        "{reply:?}"
    );
}
