//! Talking to a daemon (health) and running one as a sidecar process.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon's `/readyz` status: `ready`, `degraded`, `not_ready`, or `unreachable`.
pub fn health(base: &url::Url) -> String {
    let Ok(u) = base.join("readyz") else {
        return "unreachable".to_owned();
    };
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    match agent.get(u.as_str()).call() {
        Ok(mut r) => r
            .body_mut()
            .read_to_string()
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "unreachable".to_owned()),
        Err(_) => "unreachable".to_owned(),
    }
}

/// A `switchyard serve` this app started.
pub struct Sidecar {
    child: Child,
    /// Where it listens.
    pub url: url::Url,
}

impl Sidecar {
    /// Stop it: SIGTERM (it drains and flushes), then kill after 10 s.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon binary: `$SWITCHYARD_BIN`, beside this app's executable, or on `PATH`.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_BIN") {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let beside = dir.join("switchyard");
        if beside.is_file() {
            return beside;
        }
    }
    PathBuf::from("switchyard")
}

/// Start `switchyard serve` on a free loopback port with its data under `data_dir` (the
/// embedded defaults: local models, sled, no cloud keys), and wait until it is ready.
pub fn start(data_dir: &Path) -> Result<Sidecar, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let config = data_dir.join("switchyard.toml");
    let data = data_dir.join("data");
    let mut f = std::fs::File::create(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    writeln!(
        f,
        "# Written by the Switchyard app for its local daemon.\n[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}",
        data.display().to_string()
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let log = std::fs::File::create(data_dir.join("daemon.log")).map_err(|e| e.to_string())?;
    let bin = binary();
    let child = Command::new(&bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        // Even if this app is killed outright, the daemon notices and shuts down.
        .arg("--exit-with-parent")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", bin.display()))?;
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let mut sidecar = Sidecar { child, url };
    // Local models load before the daemon reports ready: allow them time.
    let until = Instant::now() + Duration::from_secs(180);
    while Instant::now() < until {
        if let Ok(Some(status)) = sidecar.child.try_wait() {
            return Err(format!(
                "the daemon exited ({status}); see {}",
                data_dir.join("daemon.log").display()
            ));
        }
        if matches!(health(&sidecar.url).as_str(), "ready" | "degraded") {
            return Ok(sidecar);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    sidecar.stop();
    Err("the local daemon did not become ready within 3 minutes".to_owned())
}
