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
        let text = if toml_text.contains("[local]") {
            toml_text.to_owned()
        } else {
            format!("{toml_text}\n[local]\nenabled = false\n")
        };
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
