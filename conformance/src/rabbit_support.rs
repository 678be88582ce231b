//! What the RabbitMQ failure tests (`tests/rabbit_*.rs`) share: the
//! `IMGATE_TEST_AMQP` skip convention, gateway nodes on one prefix and
//! admin secret, cleanup of a prefix's queues on drop, the broker objects
//! of a prefix as `rabbitmqctl` lists them, a PB login that reports
//! failure instead of panicking (a device retrying while the store is
//! down), and bounded polling.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use imgate_codecs::pb::{proto, PbRequest, PbServerMessage};

use crate::gateway::{amqp_with_prefix, delete_rabbit_queues};
use crate::pb::{Incoming, PbClient};
use crate::{unique, Gateway, WAIT};

/// The broker URL of `IMGATE_TEST_AMQP`; None (after saying `SKIPPED` on
/// stderr) when it is unset.
pub fn amqp_url(test: &str) -> Option<String> {
    match std::env::var("IMGATE_TEST_AMQP") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("SKIPPED: IMGATE_TEST_AMQP not set ({test} needs a RabbitMQ broker)");
            None
        }
    }
}

/// Deletes the queues of a prefix on the shared broker when dropped
/// (declare it before the gateways, so they are killed first).
pub struct PrefixCleanup(pub String);

impl Drop for PrefixCleanup {
    fn drop(&mut self) {
        delete_rabbit_queues(&self.0);
    }
}

/// Two gateway nodes on one broker and prefix, with one admin secret (a
/// token works on either); killed and their queues deleted on drop.
pub struct Cluster {
    pub a: Gateway,
    pub b: Gateway,
    pub prefix: String,
    pub url: String,
    pub secret: String,
}

impl Cluster {
    pub fn start(url: &str) -> Cluster {
        Cluster::start_with(url, &[])
    }

    /// Both nodes with `env` added to their settings.
    pub fn start_with(url: &str, env: &[(&str, &str)]) -> Cluster {
        let prefix = unique("multi");
        let secret = unique("secret");
        let a = rabbit_node(url, &prefix, &secret, 1, env);
        let b = rabbit_node(url, &prefix, &secret, 2, env);
        Cluster {
            a,
            b,
            prefix,
            url: url.to_string(),
            secret,
        }
    }

    /// One more node on the same broker, prefix and secret.
    pub fn add_node(&self, node_id: u16) -> Gateway {
        rabbit_node(&self.url, &self.prefix, &self.secret, node_id, &[])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.a.kill9();
        self.b.kill9();
        delete_rabbit_queues(&self.prefix);
    }
}

/// A gateway on the RabbitMQ store at `url` with `prefix`, node id
/// `node_id` and admin secret `secret` (so a token works on every node of
/// the prefix), plus `env`.
pub fn rabbit_node(
    url: &str,
    prefix: &str,
    secret: &str,
    node_id: u16,
    env: &[(&str, &str)],
) -> Gateway {
    let store = amqp_with_prefix(url, prefix);
    let node_id = node_id.to_string();
    let mut all = vec![
        ("IMGATE_STORE", store.as_str()),
        ("IMGATE_NODE_ID", node_id.as_str()),
        ("IMGATE_ADMIN_SECRET", secret),
    ];
    all.extend_from_slice(env);
    Gateway::start_with(&all)
}

fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("running rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shared broker's queues whose names start with `<prefix>.`.
pub fn queues_of(prefix: &str) -> BTreeSet<String> {
    let start = format!("{prefix}.");
    rabbitmqctl(&["-q", "list_queues", "name"])
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with(&start))
        .map(str::to_string)
        .collect()
}

/// The shared broker's exchanges whose names start with `<prefix>.`.
pub fn exchanges_of(prefix: &str) -> BTreeSet<String> {
    let start = format!("{prefix}.");
    rabbitmqctl(&["-q", "list_exchanges", "name"])
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with(&start))
        .map(str::to_string)
        .collect()
}

/// Connections the gateways of `prefix` hold on the shared broker (their
/// connection names are `imgate <prefix> node <id> <role>`) and the
/// channels open on them.
pub fn connections_of(prefix: &str) -> (usize, usize) {
    let tag = format!("imgate {prefix} node ");
    let text = rabbitmqctl(&["-q", "list_connections", "client_properties", "channels"]);
    let mut conns = 0;
    let mut channels = 0;
    for line in text.lines().filter(|l| l.contains(&tag)) {
        conns += 1;
        channels += line
            .split_whitespace()
            .last()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no channel count in {line:?}"));
    }
    (conns, channels)
}

/// The queues a prefix should have with `nodes` gateways running: the
/// three streams, the retained-MQTT stream and one `mqtt.node` queue per
/// node. Panics with the list otherwise.
pub fn assert_fixed_queues(queues: &BTreeSet<String>, prefix: &str, nodes: usize) {
    let fixed: BTreeSet<String> = ["log", "state", "control", "mqtt-retained"]
        .iter()
        .map(|s| format!("{prefix}.{s}"))
        .collect();
    let node_queues = queues
        .iter()
        .filter(|q| q.starts_with(&format!("{prefix}.mqtt.node.")))
        .count();
    let others: Vec<&String> = queues
        .iter()
        .filter(|q| !fixed.contains(*q) && !q.starts_with(&format!("{prefix}.mqtt.node.")))
        .collect();
    assert!(
        fixed.is_subset(queues) && node_queues == nodes && others.is_empty(),
        "expected {fixed:?} and {nodes} mqtt.node queue(s); the broker has {queues:?}"
    );
}

/// Poll `f` until it holds, at most `limit`; panics naming `what`.
pub fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connect and log in over PB; the logged-in client, or why not (refused,
/// closed, no answer within [`WAIT`], nothing listening).
pub fn try_pb_login(
    addr: &str,
    user: &str,
    token: &str,
    device: &str,
    platform: i32,
) -> Result<PbClient, String> {
    if std::net::TcpStream::connect(addr).is_err() {
        return Err(format!("nothing listening on {addr}"));
    }
    let mut c = PbClient::connect(addr);
    c.request(PbRequest::Login(proto::LoginRequest {
        user_id: user.into(),
        token: token.into(),
        client_id: device.into(),
        platform,
    }));
    match c.recv(WAIT) {
        Some(Incoming {
            msg: PbServerMessage::LoginResponse(r),
            ..
        }) if r.code == 0 => Ok(c),
        Some(Incoming {
            msg: PbServerMessage::LoginResponse(r),
            ..
        }) => Err(format!("login refused with code {}", r.code)),
        Some(Incoming {
            msg: PbServerMessage::Error(e),
            ..
        }) => Err(format!("login answered with error {e:?}")),
        Some(other) => Err(format!("unexpected frame before login: {other:?}")),
        None if c.is_closed() => Err("connection closed during login".into()),
        None => Err(format!("no login response within {WAIT:?}")),
    }
}
