//! What `imgate serve` says at start: a mistyped `IMGATE_*` variable is
//! reported (with the setting it probably meant) instead of silently
//! ignored, the log has no terminal colour codes when it goes to a file,
//! `log_format = json` writes one JSON object per line, and a first start
//! that fails on a taken port leaves nothing behind, so the retry prints
//! the generated admin secret.

use std::net::TcpListener;
use std::process::{Command, Stdio};

use imgate_conformance::gateway::binary;
use imgate_conformance::Gateway;

#[test]
fn a_mistyped_variable_is_reported_and_the_log_file_has_no_colour_codes() {
    let g = Gateway::start_with(&[("IMGATE_MQTT_ADRR", "127.0.0.1:1")]);
    let log = g.log();
    assert!(
        log.contains("IMGATE_MQTT_ADRR") && log.contains("did you mean IMGATE_MQTT_ADDR"),
        "log: {log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file: {log:?}"
    );
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let g = Gateway::start_with(&[("IMGATE_LOG_FORMAT", "json")]);
    let log = g.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log at all");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    assert!(
        lines.iter().any(|l| l.contains("broker state loaded")),
        "log: {log}"
    );
}

#[test]
fn a_start_that_fails_on_a_taken_port_leaves_the_secret_to_the_retry() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let serve = |pb_addr: &str| {
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .env_remove("IMGATE_ADMIN_SECRET")
            .env_remove("IMGATE_CONFIG")
            .env("IMGATE_DATA_DIR", &data)
            .env("IMGATE_STORE", "embedded");
        for listener in imgate_conformance::gateway::LISTENERS {
            cmd.env(format!("IMGATE_{listener}_ADDR"), "127.0.0.1:0");
        }
        cmd.env("IMGATE_PB_ADDR", pb_addr)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let failed = serve(&taken_addr).output().expect("run imgate");
    assert!(!failed.status.success(), "the port is taken");
    assert!(
        !data.join("admin-secret").exists(),
        "a failed start wrote the admin secret"
    );
    // The retry: it prints the generated secret (then is stopped).
    let mut child = serve("127.0.0.1:0").spawn().expect("run imgate");
    let stdout = child.stdout.take().unwrap();
    let mut secret = None;
    use std::io::BufRead;
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(s) = line.strip_prefix("admin-secret ") {
            secret = Some(s.to_string());
        }
        if line == "ready" {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let secret = secret.expect("the retry printed the admin secret");
    let stored = std::fs::read_to_string(data.join("admin-secret")).unwrap();
    assert_eq!(stored.trim(), secret);
}

#[test]
fn check_config_reports_errors_and_typos_without_starting() {
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let out = Command::new(binary())
            .arg("check-config")
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run imgate check-config");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../imgate.toml.example");
    let (code, stdout, _) = run(&[], &["--config", example]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("configuration ok"), "{stdout}");
    let (code, _, stderr) = run(&[("IMGATE_MQTT_ADRR", "x")], &[]);
    assert_eq!(code, Some(0), "a typo is a warning: {stderr}");
    assert!(stderr.contains("did you mean IMGATE_MQTT_ADDR"), "{stderr}");
    let (code, _, stderr) = run(&[("IMGATE_NODE_ID", "lots")], &[]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("IMGATE_NODE_ID must be an integer"),
        "{stderr}"
    );
}

#[test]
fn a_sigterm_right_after_ready_drains_and_exits_cleanly() {
    // The signal handlers are in place before `ready` is printed: a
    // SIGTERM at once is a clean shutdown, never the default action
    // (killed by the signal, nothing drained).
    for _ in 0..3 {
        let mut g = Gateway::start();
        let status = g.terminate().expect("exit status");
        assert!(status.success(), "{status:?}; log:\n{}", g.log());
        assert!(g.log().contains("stopped"), "log:\n{}", g.log());
    }
}
