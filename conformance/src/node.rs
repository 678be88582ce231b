//! Node.js test clients: [`NodeAgent`] drives `node/agent.mjs` (JSON lines
//! over stdin/stdout), which runs MQTT.js in headless Chromium on the web
//! demo (`examples/web`) through playwright-core, and xmpp.js over RFC 7395
//! WebSocket. `scripts/node-deps.sh` installs the npm packages and Debian's
//! `chromium`; [`NodeTools::find`] locates them. Without them a test says it
//! was skipped, or fails when `CI` is set.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::WAIT;

/// Directory of the Node conformance clients (`conformance/node`).
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Where node and (if asked for) Chromium are.
pub struct NodeTools {
    pub node: PathBuf,
    pub chromium: Option<PathBuf>,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

impl NodeTools {
    /// `node` (`IMGATE_TEST_NODE` or PATH), the installed npm packages, and
    /// with `browser` also Chromium (`IMGATE_TEST_CHROMIUM` or `chromium` on
    /// PATH). When one is missing: panics if `CI` is set, else prints that
    /// the test is skipped and returns None.
    pub fn find(test: &str, browser: bool) -> Option<NodeTools> {
        let node = std::env::var_os("IMGATE_TEST_NODE")
            .map(PathBuf::from)
            .or_else(|| on_path("node"))
            .filter(|p| p.is_file());
        let chromium = std::env::var_os("IMGATE_TEST_CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| on_path("chromium"))
            .filter(|p| p.is_file());
        let mut missing = Vec::new();
        if node.is_none() {
            missing.push("node (set IMGATE_TEST_NODE or put it on PATH)".to_string());
        }
        let modules = node_dir().join("node_modules");
        for pkg in ["mqtt", "@xmpp/client", "ws", "playwright-core"] {
            if !modules.join(pkg).join("package.json").is_file() {
                missing.push(format!("the npm package {pkg} in {}", modules.display()));
            }
        }
        if browser && chromium.is_none() {
            missing.push("chromium (set IMGATE_TEST_CHROMIUM or put it on PATH)".to_string());
        }
        if missing.is_empty() {
            return Some(NodeTools {
                node: node.expect("checked"),
                chromium: if browser { chromium } else { None },
            });
        }
        let msg = format!(
            "{test}: missing {}; run `bash scripts/node-deps.sh` (scripts/test.sh does)",
            missing.join(", ")
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED {msg}");
        None
    }
}

/// `agent.mjs` in a child process.
pub struct NodeAgent {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl NodeAgent {
    /// Start the agent; it exits by itself after `lifetime`.
    pub fn start(tools: &NodeTools, lifetime: Duration) -> NodeAgent {
        let mut child = Command::new(&tools.node)
            .arg(node_dir().join("agent.mjs"))
            .arg(lifetime.as_secs().max(1).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting node agent.mjs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("node agent: {line}"),
                }
            }
        });
        let mut agent = NodeAgent {
            child,
            stdin: Some(stdin),
            events: rx,
            seen: Vec::new(),
        };
        agent.event("ready");
        agent
    }

    /// Send one command (see the script's header).
    pub fn cmd(&mut self, c: Value) {
        let stdin = self.stdin.as_mut().expect("agent stdin open");
        writeln!(stdin, "{c}").expect("writing to the node agent");
        stdin.flush().expect("flushing the node agent");
    }

    /// Wait (bounded by `timeout`) for the first event matching `pred`; it is
    /// consumed. An `error` event (a failed command) fails the test at once.
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
            if v["event"] == "error" {
                panic!("node agent: command failed: {v}; saw {:?}", self.seen);
            }
            self.seen.push(v);
        }
    }

    /// Like [`Self::try_expect`] with [`WAIT`], failing the test on timeout.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.try_expect(WAIT, &pred)
            .unwrap_or_else(|| panic!("node agent: no {what} within {WAIT:?}; saw {:?}", self.seen))
    }

    /// Wait for an event of kind `event`.
    pub fn event(&mut self, event: &str) -> Value {
        self.expect(event, |v| v["event"] == event)
    }

    /// Events seen but not consumed yet (for assertions on what else came).
    pub fn unconsumed(&mut self) -> Vec<Value> {
        while let Ok(v) = self.events.try_recv() {
            self.seen.push(v);
        }
        self.seen.clone()
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        // Closing stdin lets the agent close Chromium and the XMPP client;
        // it is killed if it has not exited within the bound.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(_) => continue,
                // Its stdout closed: it has exited (or is exiting).
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
