//! The `switchyard` binary as a user runs it: config checks, environment overrides, key
//! hashing, and `serve` on the embedded default.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn version_is_printed() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_reports_ok_and_errors_with_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        dir.path(),
        "[providers.a]\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n[models.m]\ntargets = [{provider = \"a\", model = \"x\"}]\n",
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ok") && text.contains("model m: a/x"),
        "{text}"
    );

    let bad = write_config(
        dir.path(),
        "[models.m]\ntargets = [{provider = \"ghost\", model = \"x\"}]\n",
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("models.\"m\".targets[0].provider"), "{err}");
}

#[test]
fn environment_overrides_the_file_and_flags_override_both() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:1111\"\nmax_body_bytes = 4096\n",
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&cfg)
        .env("SWITCHYARD__SERVER__LISTEN", "127.0.0.1:2222")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("listen: 127.0.0.1:2222"));
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&cfg)
        .env("SWITCHYARD__SERVER__MAX_BODY_BYTES", "not-a-number")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.max_body_bytes"));
}

#[test]
fn hash_key_hashes_stdin_and_generates_keys() {
    let mut child = Command::new(BIN)
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"sk-abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        switchyard_core::config::hash_key("sk-abc")
    );
    let out = Command::new(BIN)
        .args(["hash-key", "--generate"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let key = text.lines().find_map(|l| l.strip_prefix("key:  ")).unwrap();
    let hash = text.lines().find_map(|l| l.strip_prefix("hash: ")).unwrap();
    assert_eq!(switchyard_core::config::hash_key(key), hash);
}

#[test]
fn serve_without_config_uses_the_embedded_default_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("SWITCHYARD__SERVER__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("SWITCHYARD_CONFIG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut addr = None;
    let mut seen = Vec::new();
    while addr.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(rest) = line.split("at http://").nth(1) {
                addr = rest.split('/').next().map(str::to_owned);
            }
            seen.push(line);
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no serving line in {seen:#?}"));
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        dir.path().join("switchyard-data").is_dir(),
        "sled folder in the working directory"
    );

    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
