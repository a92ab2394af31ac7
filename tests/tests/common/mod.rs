//! Shared set-up for the end-to-end tests: a real gateway on loopback over real sled files,
//! in front of real mock upstream servers.

#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use futures_util::StreamExt;
use switchyard_core::config::{Config, Overrides};
use tempfile::TempDir;

pub use switchyard_tests::mock::{FaultRates, Latency, MockConfig, MockServer};

/// A gateway started in-process on an ephemeral port.
pub struct Gateway {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub state: actix_web::web::Data<switchyard_core::api::AppState>,
    pub dir: TempDir,
}

impl Gateway {
    /// Start with the given config text (listen address and data folder are filled in).
    pub async fn start(toml_text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(toml_text, dir).await
    }

    /// Start over an existing data folder.
    pub async fn start_in(toml_text: &str, dir: TempDir) -> Self {
        let file = dir.path().join("switchyard.toml");
        // Local models load only in the tests that are about them.
        let mut text = if toml_text.contains("[local]") {
            toml_text.to_owned()
        } else {
            format!("{toml_text}\n[local]\nenabled = false\n")
        };
        // Likewise the response cache: tests that count upstream calls must see every one.
        if !text.contains("[cache]") {
            text.push_str("\n[cache]\nenabled = false\n");
        }
        std::fs::write(&file, text).unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(dir.path().join("data")),
        };
        let config = Config::load(Some(&file), &overrides).unwrap();
        // A gateway stopped a moment ago may still be dropping its last handle on the store.
        let deadline = Instant::now() + Duration::from_secs(10);
        let running = loop {
            match switchyard_core::server::start(config.clone()).await {
                Ok(r) => break r,
                Err(switchyard_core::server::StartError::Storage(e))
                    if Instant::now() < deadline =>
                {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("gateway did not start: {e}"),
            }
        };
        let (addr, handle, state) = running.spawn();
        Self {
            addr,
            handle,
            state,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `POST /v1/chat/completions` with a JSON body, no extra headers.
    pub async fn chat(&self, body: &serde_json::Value) -> reqwest::Response {
        client()
            .post(self.url("/v1/chat/completions"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Wait until `/readyz` answers 200 (local models warm).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = client()
                .get(self.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "gateway not ready in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(self) -> TempDir {
        self.handle.stop(false).await;
        self.dir
    }
}

/// Config for one model served by the given upstream base URLs, in order.
pub fn chain_config(model: &str, upstreams: &[String]) -> String {
    let mut s = String::from("[server]\nworkers = 2\n");
    for (i, url) in upstreams.iter().enumerate() {
        s.push_str(&format!(
            "[providers.up{i}]\ntype = \"openai\"\nbase_url = \"{url}\"\n"
        ));
    }
    let targets: Vec<String> = (0..upstreams.len())
        .map(|i| format!("{{ provider = \"up{i}\", model = \"{model}-upstream\" }}"))
        .collect();
    s.push_str(&format!(
        "[models.\"{model}\"]\ntargets = [{}]\n",
        targets.join(", ")
    ));
    s
}

/// A loopback URL where nothing listens.
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/v1")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn chat_body(model: &str, text: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// An SSE event as received, with its arrival time.
pub struct Received {
    pub data: String,
    pub at: Duration,
}

/// Read a whole SSE response, timing each event from `start`.
pub async fn read_sse(resp: reqwest::Response, start: Instant) -> Vec<Received> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(pos) = buf.find("\n\n") {
            let event: String = buf.drain(..pos + 2).collect();
            for line in event.lines() {
                if let Some(d) = line.strip_prefix("data: ") {
                    out.push(Received {
                        data: d.to_owned(),
                        at: start.elapsed(),
                    });
                }
            }
        }
    }
    out
}

/// Concatenated `delta.content` of OpenAI chunks.
pub fn streamed_text(events: &[Received]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

// The daemon as a process (tests that need a real crash or process-wide set-up).

pub fn daemon_binary() -> std::path::PathBuf {
    // tests run from target/<profile>/deps; the daemon is built next to that folder.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("switchyard"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn spawn_daemon(config: &std::path::Path, env: &[(&str, &str)]) -> std::process::Child {
    std::process::Command::new(daemon_binary())
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap()
}

pub async fn wait_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("daemon at {base} did not come up");
}

/// One request a [`Capture`] server received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub path: String,
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

/// A loopback HTTP server that answers every POST with the same JSON and keeps what it got:
/// a webhook receiver, an OTLP collector, or an upstream whose request headers a test checks.
pub struct Capture {
    pub url: String,
    pub got: std::sync::Arc<std::sync::Mutex<Vec<Captured>>>,
    _handle: ServerHandle,
}

pub async fn capture_server(reply: serde_json::Value) -> Capture {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let got: std::sync::Arc<std::sync::Mutex<Vec<Captured>>> = Default::default();
    let sink = got.clone();
    let server = HttpServer::new(move || {
        let (sink, reply) = (sink.clone(), reply.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (sink, reply) = (sink.clone(), reply.clone());
            async move {
                let headers = req
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                    .collect();
                sink.lock().unwrap().push(Captured {
                    path: req.path().to_owned(),
                    headers,
                    body: body.to_vec(),
                });
                HttpResponse::Ok().json(reply)
            }
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Capture {
        url: format!("http://{addr}"),
        got,
        _handle: handle,
    }
}

impl Capture {
    /// Wait (up to 10 s) for a request that `pred` accepts.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Captured) -> bool) -> Captured {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self.got.lock().unwrap().iter().find(|c| pred(c)) {
                return c.clone();
            }
            assert!(Instant::now() < deadline, "no {what} in 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `GET` a URL and parse its body as JSON.
pub async fn get_json(url: impl reqwest::IntoUrl) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET` a URL and return its body as text.
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
