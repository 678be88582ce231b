//! A private RabbitMQ node for one test, so a test can stop and start
//! "the broker" without touching the machine's shared one (other tests use
//! it at the same time).
//!
//! [`PrivateRabbit::start`] runs the installed RabbitMQ's own
//! `rabbitmq-server` script (the one next to what `rabbitmq-server` in
//! `PATH` resolves to: Debian's `/usr/sbin/rabbitmq-server` is a wrapper
//! that would `su` to the `rabbitmq` user, so the real script in
//! `/usr/lib/rabbitmq/bin` is used) as the current user, in its own process
//! group, with everything it owns in a temp dir:
//!
//! | variable | value | why |
//! |---|---|---|
//! | `RABBITMQ_NODENAME` | `imgt-<pid>-<n>@localhost` | its own Erlang node (registers with the shared epmd) |
//! | `RABBITMQ_CONF_ENV_FILE` | `<dir>/rabbitmq-env.conf` (empty) | keeps `/etc/rabbitmq/rabbitmq-env.conf` (`NODENAME=rabbit@localhost`) out |
//! | `RABBITMQ_CONFIG_FILE` | `<dir>/rabbitmq.conf` | `listeners.tcp.default = 127.0.0.1:<port>`: the system file's `listeners.tcp.local = 127.0.0.1:5672` is never read |
//! | `RABBITMQ_ADVANCED_CONFIG_FILE` | `<dir>/advanced.config` (absent) | no system `advanced.config` either |
//! | `RABBITMQ_ENABLED_PLUGINS_FILE` | `<dir>/enabled_plugins` (`[].`) | no plugins (streams are built in) |
//! | `RABBITMQ_MNESIA_BASE` | `<dir>/mnesia` | its data: queues, streams, pid file, feature flags |
//! | `RABBITMQ_LOG_BASE` | `<dir>/log` | its log |
//! | `RABBITMQ_DIST_PORT` | a free port | its distribution port (the default, AMQP port + 20000, may be taken) |
//! | `RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS` | `-kernel inet_dist_use_interface {127,0,0,1}` | distribution on loopback only |
//! | `ERL_EPMD_ADDRESS` | `127.0.0.1` | as the system node (the private env file no longer says it) |
//! | `HOME` | `<dir>` | a private Erlang cookie, created there on the first start; `rabbitmqctl` gets the same `HOME` |
//!
//! Not needed: `RABBITMQ_NODE_PORT` (the listener comes from the config
//! file), `RABBITMQ_HOME` (the script finds its own). The guest user keeps
//! RabbitMQ's default (allowed on loopback), so [`PrivateRabbit::url`] is
//! `amqp://guest:guest@127.0.0.1:<port>/%2f`.
//!
//! Ports are picked by binding port 0 and releasing it just before the
//! start; a restart ([`PrivateRabbit::stop`] then [`PrivateRabbit::start_again`])
//! reuses them and the data dir, so streams and their messages survive as
//! with a real broker restart (the whole Erlang VM stops, not just the
//! app). Startup is awaited with `rabbitmqctl -n <node> await_startup`
//! once the AMQP port accepts connections, all bounded. On drop the node
//! is stopped with `rabbitmqctl -n <node> stop`, its process group killed
//! if it is still there, and the temp dir removed.
//!
//! The private node's environment is only ever set on the commands this
//! module spawns, never on the test process: `rabbitmqctl` calls for the
//! shared broker (e.g. [`crate::gateway::delete_rabbit_queues`]) keep
//! reaching it.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one start (or restart) may take before it counts as failed.
const START_LIMIT: Duration = Duration::from_secs(90);
/// How long a stop may take before the process group is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// Bound on one `rabbitmqctl` call.
const CTL_LIMIT: Duration = Duration::from_secs(45);

/// Why a boot failed: the node exited (its log), or anything else.
enum Boot {
    Exited(String),
    Failed(String),
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A RabbitMQ node of our own (see the module docs).
pub struct PrivateRabbit {
    node: String,
    port: u16,
    dist_port: u16,
    server: PathBuf,
    ctl: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// How many times the node was started.
    starts: u32,
}

/// The scripts of the installed RabbitMQ (`rabbitmq-server`,
/// `rabbitmqctl`), or why there are none.
pub fn installation() -> Result<(PathBuf, PathBuf), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join("rabbitmq-server"))
        .find(|p| p.is_file())
        .ok_or("rabbitmq-server is not installed (not in PATH)")?;
    let real = std::fs::canonicalize(&found)
        .map_err(|e| format!("cannot resolve {}: {e}", found.display()))?;
    let dir = real
        .parent()
        .ok_or_else(|| format!("{} has no parent dir", real.display()))?;
    let (server, ctl) = (dir.join("rabbitmq-server"), dir.join("rabbitmqctl"));
    if server.is_file() && ctl.is_file() {
        Ok((server, ctl))
    } else {
        Err(format!(
            "no rabbitmq-server and rabbitmqctl next to {}",
            real.display()
        ))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// Run `cmd` with its output captured, killed after `limit`; None if it
/// could not be run or timed out.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Option<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.ok(),
        Err(_) => {
            // Not reaped yet (the waiting thread holds it), so the pid is
            // still this child's.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = rx.recv();
            None
        }
    }
}

impl PrivateRabbit {
    /// Start a fresh node and wait until it serves AMQP. A node that
    /// exits while booting (e.g. a port picked here was taken by someone
    /// else before the node bound it) is tried again with new ports and a
    /// new dir, twice at most.
    pub fn start() -> Result<PrivateRabbit, String> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut r = PrivateRabbit::prepare()?;
            match r.boot() {
                Ok(()) => return Ok(r),
                Err(Boot::Exited(log)) if tries < 3 => {
                    eprintln!(
                        "private RabbitMQ {} exited while booting; trying again with new \
                         ports. Its log ends:\n{}",
                        r.node,
                        tail(&log, 10)
                    );
                }
                Err(Boot::Exited(log)) => {
                    return Err(format!("{} exited while starting; log:\n{log}", r.node))
                }
                Err(Boot::Failed(e)) => return Err(e),
            }
        }
    }

    /// A new temp dir with the node's config files, and new ports.
    fn prepare() -> Result<PrivateRabbit, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let (server, ctl) = installation()?;
        let dir = tempfile::Builder::new()
            .prefix("imgate-rabbit-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let node = format!(
            "imgt-{}-{}@localhost",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let r = PrivateRabbit {
            node,
            port: free_port(),
            dist_port: free_port(),
            server,
            ctl,
            dir,
            child: None,
            starts: 0,
        };
        let p = r.dir.path();
        let write = |name: &str, text: String| {
            std::fs::write(p.join(name), text).map_err(|e| format!("writing {name}: {e}"))
        };
        write(
            "rabbitmq.conf",
            format!("listeners.tcp.default = 127.0.0.1:{}\n", r.port),
        )?;
        write("enabled_plugins", "[].\n".into())?;
        write("rabbitmq-env.conf", String::new())?;
        Ok(r)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Erlang node name (`imgt-<pid>-<n>@localhost`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How many times the node was started (1 after [`PrivateRabbit::start`]).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The temp dir holding the node's config, data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// True if something accepts TCP connections on the AMQP port.
    pub fn is_listening(&self) -> bool {
        TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(500),
        )
        .is_ok()
    }

    /// True while the node's process (the `rabbitmq-server` script) runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The node's log so far (its log file, then what the script printed).
    pub fn log(&self) -> String {
        let p = self.dir.path();
        let file = p.join("log").join(format!("{}.log", self.node));
        let mut s = std::fs::read_to_string(file).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(p.join("server.out")).unwrap_or_default());
        s
    }

    fn ctl_command(&self) -> Command {
        let mut cmd = Command::new(&self.ctl);
        cmd.env("HOME", self.dir.path())
            .env(
                "RABBITMQ_CONF_ENV_FILE",
                self.dir.path().join("rabbitmq-env.conf"),
            )
            .arg("-n")
            .arg(&self.node);
        cmd
    }

    /// `rabbitmqctl -n <node> <args>` (bounded); its output, or why not.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = run_bounded(self.ctl_command().args(args), CTL_LIMIT)
            .ok_or_else(|| format!("rabbitmqctl {args:?} did not finish"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "rabbitmqctl {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Start the node again on the same ports and data, and wait until
    /// it is up: the AMQP port accepts connections and `await_startup`
    /// says the node booted.
    pub fn start_again(&mut self) -> Result<(), String> {
        self.boot().map_err(|e| match e {
            Boot::Exited(log) => format!("{} exited while starting; log:\n{log}", self.node),
            Boot::Failed(e) => e,
        })
    }

    fn boot(&mut self) -> Result<(), Boot> {
        if self.is_running() {
            return Err(Boot::Failed(format!("{} is already running", self.node)));
        }
        let p = self.dir.path().to_path_buf();
        let failed = |what: &str, e: std::io::Error| Boot::Failed(format!("{what}: {e}"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.join("server.out"))
            .map_err(|e| failed("server.out", e))?;
        let err = out.try_clone().map_err(|e| failed("server.out", e))?;
        let child = Command::new(&self.server)
            .env("HOME", &p)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONF_ENV_FILE", p.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", p.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", p.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", p.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", p.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", p.join("log"))
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .current_dir(&p)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| failed(&format!("starting {}", self.server.display()), e))?;
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if !self.is_running() {
                self.kill();
                return Err(Boot::Exited(self.log()));
            }
            if self.is_listening() {
                let left = deadline.saturating_duration_since(Instant::now());
                let secs = left.as_secs().max(1).to_string();
                match self.ctl(&["-q", "await_startup", "--timeout", &secs]) {
                    Ok(_) => return Ok(()),
                    Err(e) if Instant::now() >= deadline => {
                        self.kill();
                        return Err(Boot::Failed(e));
                    }
                    Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(Boot::Failed(format!(
                    "{} did not start within {START_LIMIT:?}; log:\n{}",
                    self.node,
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the whole node (`rabbitmqctl stop`: the Erlang VM exits) and
    /// wait until its process is gone and the port closed; the data dir
    /// stays for [`PrivateRabbit::start_again`].
    pub fn stop(&mut self) -> Result<(), String> {
        if !self.is_running() {
            self.child = None;
            return Ok(());
        }
        let stopped = self.ctl(&["-q", "stop"]);
        let deadline = Instant::now() + STOP_LIMIT;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let clean = !self.is_running();
        self.kill();
        match (stopped, clean) {
            (Ok(_), true) => Ok(()),
            (Err(e), _) => Err(e),
            (Ok(_), false) => Err(format!(
                "{} did not exit within {STOP_LIMIT:?} (killed)",
                self.node
            )),
        }
    }

    /// SIGKILL the node's process group (it is still ours while the
    /// leader is unreaped) and reap it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", c.id())])
                    .status();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- private RabbitMQ {} (last lines of its log) ----\n{}",
                self.node,
                tail(&self.log(), 40)
            );
        }
        if let Err(e) = self.stop() {
            eprintln!("private RabbitMQ {}: {e}", self.node);
        }
        self.kill();
    }
}
