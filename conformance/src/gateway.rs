//! Start, kill and restart the real binary.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;

use crate::http::{Admin, Client};
use crate::WAIT;

/// Path of the `imgate` binary: `IMGATE_BIN`, else next to this test's
/// target directory (built once with cargo if missing or stale).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("IMGATE_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> → target/<profile>/imgate
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "imgate", "--bin", "imgate"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("running cargo build for the imgate binary");
        assert!(status.success(), "cargo build of imgate failed");
        let bin = profile_dir.join(format!("imgate{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "imgate binary not found at {}", bin.display());
        bin
    })
    .clone()
}

/// A running gateway process.
/// Every listener of the gateway's listener table (DESIGN §5.6): each one
/// a test gateway starts gets an ephemeral port (`IMGATE_<NAME>_ADDR`),
/// and its `listening <name>` line tells the port.
pub const LISTENERS: [&str; 11] = [
    "PB", "MQTT", "XMPP", "HTTP", "ADMIN", "WS", "PBS", "MQTTS", "XMPPS", "HTTPS", "WSS",
];

pub struct Gateway {
    child: Option<Child>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub addrs: HashMap<String, String>,
    /// The `admin-secret` line, if the gateway generated one.
    pub printed_secret: Option<String>,
    pub secret: String,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// A RabbitMQ name prefix this gateway was given for itself (its
    /// queues are deleted when it is dropped).
    rabbit_prefix: Option<String>,
}

/// The store the suite runs against: `IMGATE_CONFORMANCE_STORE`, default
/// `embedded`; e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` runs every
/// scenario on the RabbitMQ store.
pub fn conformance_store() -> String {
    std::env::var("IMGATE_CONFORMANCE_STORE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "embedded".into())
}

/// `url` with a `prefix=` query parameter added.
pub fn amqp_with_prefix(url: &str, prefix: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}prefix={prefix}")
}

/// Delete the RabbitMQ queues (streams, MQTT bus queues) whose names
/// start with `prefix.`, through `rabbitmqctl` (best effort: the empty
/// exchange stays).
pub fn delete_rabbit_queues(prefix: &str) {
    let Ok(out) = Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "name"])
        .output()
    else {
        eprintln!("rabbitmqctl not available: queues of {prefix} left behind");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    for name in text.lines().map(str::trim) {
        if name.starts_with(&format!("{prefix}.")) {
            let _ = Command::new("rabbitmqctl")
                .args(["-q", "delete_queue", name])
                .output();
        }
    }
}

impl Gateway {
    /// A fresh gateway on the embedded store in its own temp data dir.
    pub fn start() -> Gateway {
        Self::start_with(&[])
    }

    /// With extra `IMGATE_*` settings.
    pub fn start_with(env: &[(&str, &str)]) -> Gateway {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The suite's store, unless the test chose one; a RabbitMQ store
        // gets a name prefix of its own so tests never share state.
        let mut rabbit_prefix = None;
        if !env.iter().any(|(k, _)| k == "IMGATE_STORE") {
            let mut store = conformance_store();
            if store.starts_with("amqp") && !store.contains("prefix=") {
                let prefix = crate::unique("conf");
                store = amqp_with_prefix(&store, &prefix);
                rabbit_prefix = Some(prefix);
            }
            env.push(("IMGATE_STORE".into(), store));
        }
        let mut g = Self::spawn(data_dir, env, tmp.path().join("imgate.log"));
        g._tmp = Some(tmp);
        g.rabbit_prefix = rabbit_prefix;
        g
    }

    fn spawn(data_dir: PathBuf, env: Vec<(String, String)>, log: PathBuf) -> Gateway {
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .env_remove("IMGATE_ADMIN_SECRET")
            .env_remove("IMGATE_CONFIG")
            .env("IMGATE_DATA_DIR", &data_dir)
            .env("IMGATE_STORE", "embedded")
            .env("RUST_LOG", "info");
        for listener in LISTENERS {
            cmd.env(format!("IMGATE_{listener}_ADDR"), "127.0.0.1:0");
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::from(logfile))
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("starting imgate");
        let stdout = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = mpsc::channel::<String>();
        // Keep draining stdout for the process's whole life.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Receiver gone: keep reading so the child never blocks.
                    continue;
                }
            }
        });
        let mut addrs = HashMap::new();
        let mut printed_secret = None;
        let deadline = std::time::Instant::now() + WAIT * 3;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(why) => {
                    // Disconnected = stdout closed: the process is gone.
                    let exited = match why {
                        mpsc::RecvTimeoutError::Disconnected => child.wait().ok(),
                        mpsc::RecvTimeoutError::Timeout => None,
                    };
                    let _ = child.kill();
                    panic!(
                        "imgate did not print `ready` ({}); log:\n{}",
                        match exited {
                            Some(status) => format!("it exited with {status}"),
                            None => "timed out".to_string(),
                        },
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["listening", proto, addr] => {
                    addrs.insert(proto.to_string(), addr.to_string());
                }
                ["admin-secret", s] => printed_secret = Some(s.to_string()),
                ["ready"] => break,
                _ => {}
            }
        }
        let secret = match &printed_secret {
            Some(s) => s.clone(),
            None => env
                .iter()
                .find(|(k, _)| k == "IMGATE_ADMIN_SECRET")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| {
                    std::fs::read_to_string(data_dir.join("admin-secret"))
                        .expect("admin-secret file in the data dir")
                        .trim()
                        .to_string()
                }),
        };
        Gateway {
            child: Some(child),
            data_dir,
            _tmp: None,
            addrs,
            printed_secret,
            secret,
            env,
            log,
            rabbit_prefix: None,
        }
    }

    /// `host:port` of a listener (`http`, `admin`, `pb`, ...).
    pub fn addr(&self, proto: &str) -> &str {
        self.addrs
            .get(proto)
            .unwrap_or_else(|| panic!("no `listening {proto}` line; got {:?}", self.addrs))
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr("http"))
    }

    /// `https://` when the gateway has a certificate and `admin_tls` is
    /// not turned off, as the gateway serves it.
    pub fn admin_url(&self) -> String {
        let set = |key: &str| {
            self.env
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.trim().to_string())
        };
        let has_cert = set("IMGATE_TLS_CERT").is_some_and(|v| !v.is_empty());
        let admin_tls_off = set("IMGATE_ADMIN_TLS")
            .is_some_and(|v| matches!(v.as_str(), "0" | "false" | "no" | "off"));
        let scheme = if has_cert && !admin_tls_off {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr("admin"))
    }

    pub fn admin(&self) -> Admin {
        Admin::new(&self.admin_url(), &self.secret)
    }

    /// A logged-in HTTP client for `user` on device `device`.
    pub fn client(&self, user: &str, device: &str) -> Client {
        let token = self.admin().token(user, device, 3);
        Client::new(&self.http_url(), &token)
    }

    /// SIGKILL: no chance to flush or drain anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send SIGTERM and return at once (the process drains meanwhile).
    pub fn send_sigterm(&self) {
        if let Some(c) = &self.child {
            let status = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .expect("running kill");
            assert!(status.success(), "kill -TERM failed");
        }
    }

    /// SIGTERM and wait for the process to exit; its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = c.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(c.wait().ok());
        });
        match rx.recv_timeout(WAIT) {
            Ok(status) => status,
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                rx.recv().ok().flatten()
            }
        }
    }

    /// Start again on the same data dir and settings (new ports).
    pub fn restart(&mut self) {
        self.kill9();
        let mut g = Self::spawn(self.data_dir.clone(), self.env.clone(), self.log.clone());
        self.child = g.child.take();
        self.addrs = std::mem::take(&mut g.addrs);
        self.printed_secret = g.printed_secret.take();
        self.secret = std::mem::take(&mut g.secret);
    }

    /// The gateway's log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Run `imgate admin ARGS` against this gateway as an operator would
    /// (the secret from the data directory); its stdout. Panics with the
    /// stderr if it fails.
    pub fn admin_cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary())
            .arg("admin")
            .args(args)
            .env_remove("IMGATE_ADMIN_SECRET")
            .env("IMGATE_ADMIN_URL", self.admin_url())
            .env("IMGATE_DATA_DIR", self.data_dir())
            .output()
            .expect("running imgate admin");
        assert!(
            out.status.success(),
            "imgate admin {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- imgate log ----\n{}", self.log());
        }
        self.kill9();
        if let Some(prefix) = self.rabbit_prefix.take() {
            delete_rabbit_queues(&prefix);
        }
    }
}
