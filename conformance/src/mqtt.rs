//! MQTT test clients: [`MqttAgent`] drives a real paho-mqtt client
//! (`python/mqtt_agent.py`, JSON lines over stdin/stdout); [`RawMqtt`]
//! writes arbitrary bytes over a socket and reads packets back with the
//! codec, for bad-input tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use imgate_codecs::mqtt::{encode::encode_packet, MqttFramer, Packet, Version};
use serde_json::Value;
use tokio_util::codec::Decoder;

use crate::tls::Conn;
use crate::WAIT;

/// A paho-mqtt client in a child process.
pub struct MqttAgent {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl MqttAgent {
    /// Start an agent for the gateway's MQTT listener `addr` (`ip:port`).
    pub fn start(addr: &str) -> MqttAgent {
        let (host, port) = addr.rsplit_once(':').expect("ip:port");
        let mut child = Command::new(crate::python())
            .arg(crate::python_dir().join("mqtt_agent.py"))
            .args([host, port, "90"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting python mqtt_agent.py");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        MqttAgent {
            child,
            stdin,
            events: rx,
            seen: Vec::new(),
        }
    }

    /// Send one command (see the script's docstring).
    pub fn cmd(&mut self, c: Value) {
        writeln!(self.stdin, "{c}").expect("writing to the mqtt agent");
        self.stdin.flush().expect("flushing the mqtt agent");
    }

    /// Wait (bounded) for the first event matching `pred`; it is consumed.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.try_expect(WAIT, &pred)
            .unwrap_or_else(|| panic!("mqtt agent: no {what} within {WAIT:?}; saw {:?}", self.seen))
    }

    /// Like [`Self::expect`] with a custom timeout; None on timeout.
    pub fn try_expect(
        &mut self,
        timeout: Duration,
        pred: &dyn Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(i) = self.seen.iter().position(pred) {
            return Some(self.seen.remove(i));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.events.recv_timeout(left).ok()?;
            if pred(&v) {
                return Some(v);
            }
            self.seen.push(v);
        }
    }

    /// Wait for an event of kind `event`.
    pub fn event(&mut self, event: &str) -> Value {
        self.expect(event, |v| v["event"] == event)
    }

    /// Connect and return the CONNACK event.
    pub fn connect(&mut self, c: Value) -> Value {
        let mut c = c;
        c["op"] = "connect".into();
        self.cmd(c);
        self.expect("connack", |v| {
            v["event"] == "connack" || v["event"] == "error"
        })
    }

    /// Subscribe and return the SUBACK reason codes.
    pub fn subscribe(&mut self, topic: &str, qos: u8) -> Vec<i64> {
        self.subscribe_with(serde_json::json!({"topic": topic, "qos": qos}))
    }

    pub fn subscribe_with(&mut self, mut c: Value) -> Vec<i64> {
        c["op"] = "subscribe".into();
        self.cmd(c);
        let mid = self.event("subscribe_sent")["mid"].clone();
        let ack = self.expect("suback", |v| v["event"] == "suback" && v["mid"] == mid);
        ack["rcs"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    }

    /// Publish; for QoS > 0 wait for the ack and return its reason code.
    pub fn publish(&mut self, mut c: Value) -> i64 {
        c["op"] = "publish".into();
        let qos = c["qos"].as_i64().unwrap_or(0);
        self.cmd(c);
        let mid = self.event("publish_sent")["mid"].clone();
        if qos == 0 {
            return 0;
        }
        let ev = self.expect("publish ack", |v| {
            v["event"] == "published" && v["mid"] == mid
        });
        ev["rc"].as_i64().unwrap_or(-1)
    }

    /// The next message on `topic`.
    pub fn message(&mut self, topic: &str) -> Value {
        self.expect(&format!("message on {topic}"), |v| {
            v["event"] == "message" && v["topic"] == topic
        })
    }
}

impl Drop for MqttAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw MQTT socket for bad-input tests.
pub struct RawMqtt {
    pub stream: Conn,
    framer: MqttFramer,
    buf: BytesMut,
}

impl RawMqtt {
    pub fn connect(addr: &str, version: Version) -> RawMqtt {
        let stream = TcpStream::connect(addr).expect("connecting to the mqtt listener");
        Self::over(Conn::Plain(stream), version)
    }

    /// Connect with TLS (the listener's certificate is the test one).
    pub fn connect_tls(addr: &str, version: Version) -> RawMqtt {
        let stream = Conn::connect_tls(addr).expect("TLS connection to the mqtt listener");
        Self::over(stream, version)
    }

    fn over(stream: Conn, version: Version) -> RawMqtt {
        stream
            .tcp()
            .set_read_timeout(Some(WAIT))
            .expect("read timeout");
        RawMqtt {
            stream,
            framer: MqttFramer::with_version(16 * 1024 * 1024, version),
            buf: BytesMut::new(),
        }
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        let _ = self.stream.write_all(b);
    }

    pub fn send(&mut self, p: &Packet, version: Version) {
        let mut b = BytesMut::new();
        encode_packet(p, version, &mut b);
        self.send_bytes(&b);
    }

    /// The next packet, or None when the server closed the connection (or
    /// sent something undecodable) within the bounded wait.
    pub fn recv(&mut self) -> Option<Packet> {
        loop {
            match self.framer.decode(&mut self.buf) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(_) => return None,
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Read until the server closes; the packets it sent before closing.
    pub fn until_closed(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Some(p) = self.recv() {
            out.push(p);
        }
        out
    }
}
