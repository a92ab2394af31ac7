//! The mock upstream server: real HTTP (hyper), real wire formats, scripted misbehaviour.
//!
//! Control endpoints: `GET /_mock/stats` (counters), `POST /_mock/config` (replace the instance
//! knobs with a [`MockConfig`] JSON), `POST /_mock/reset` (zero the counters).

pub mod anthropic;
pub mod gemini;
pub mod knobs;
pub mod openai;
pub mod plan;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use knobs::{Fault, FaultRates, Latency, MockConfig, RequestKnobs};

/// Response body type used throughout the mock.
pub type Body = BoxBody<Bytes, io::Error>;

/// Counters the tests and benchmarks read.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    ok: AtomicU64,
    streamed: AtomicU64,
    bad_requests: AtomicU64,
    cancelled: AtomicU64,
    faults: [AtomicU64; 8],
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// Completion requests received.
    pub requests: u64,
    /// Answered successfully (headers sent with 200, body whole).
    pub ok: u64,
    /// Of those, streamed.
    pub streamed: u64,
    /// Rejected as malformed requests (400).
    pub bad_requests: u64,
    /// Streams the client dropped before their end.
    pub cancelled: u64,
    /// Faults injected, by kind.
    pub faults: std::collections::BTreeMap<String, u64>,
}

const FAULTS: [Fault; 8] = [
    Fault::Status500,
    Fault::Status503,
    Fault::Status429,
    Fault::Status400,
    Fault::Reset,
    Fault::Truncate,
    Fault::Malformed,
    Fault::Hang,
];

fn fault_index(f: Fault) -> usize {
    FAULTS.iter().position(|x| *x == f).unwrap_or(0)
}

fn fault_name(f: Fault) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Stats {
    /// Count a completion request.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    /// Count a success.
    pub fn ok(&self, streamed: bool) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        if streamed {
            self.streamed.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// Count a stream the client dropped.
    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }
    /// Count a 400.
    pub fn bad_request(&self) {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
    }
    /// Count an injected fault.
    pub fn fault(&self, f: Fault) {
        self.faults[fault_index(f)].fetch_add(1, Ordering::Relaxed);
    }
    /// Read every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            streamed: self.streamed.load(Ordering::Relaxed),
            bad_requests: self.bad_requests.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            faults: FAULTS
                .iter()
                .map(|f| {
                    (
                        fault_name(*f),
                        self.faults[fault_index(*f)].load(Ordering::Relaxed),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
    fn reset(&self) {
        for c in [
            &self.requests,
            &self.ok,
            &self.streamed,
            &self.bad_requests,
            &self.cancelled,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for c in &self.faults {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// State shared by every connection.
#[derive(Debug, Default)]
pub struct Shared {
    config: RwLock<MockConfig>,
    /// Counters.
    pub stats: Stats,
    next_id: AtomicU64,
}

impl Shared {
    /// The current instance knobs.
    pub fn config(&self) -> MockConfig {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }
    fn set_config(&self, c: MockConfig) {
        if let Ok(mut g) = self.config.write() {
            *g = c;
        }
    }
    /// A fresh id for a completion.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running mock server; dropping it stops it and closes its connections.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl MockServer {
    /// Bind and serve on the current tokio runtime.
    pub async fn start(addr: SocketAddr, config: MockConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config: RwLock::new(config),
            ..Shared::default()
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared, task })
    }

    /// Bind an ephemeral loopback port.
    pub async fn start_local(config: MockConfig) -> io::Result<Self> {
        Self::start(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for an OpenAI-format provider (`http://host:port/v1`).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for an Anthropic-format provider (`http://host:port/v1`).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for a Gemini-format provider (`http://host:port/v1beta`).
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Replace the instance knobs.
    pub fn set_config(&self, c: MockConfig) {
        self.shared.set_config(c);
    }

    /// Stop accepting and drop every open connection.
    pub fn shutdown(&self) {
        self.task.abort();
    }

    /// Serve until the task ends (for the binary).
    pub async fn wait(self) {
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connections live in this set, so aborting the loop drops them all: a stopped mock looks
    // down to clients with pooled connections too.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(req, Arc::clone(&shared)));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// A small JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(full(bytes));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A whole body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// An OpenAI-style error body.
pub fn openai_error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        &serde_json::json!({"error": {"message": message, "type": "mock_error", "param": null, "code": null}}),
    )
}

/// Whether the request carries the configured credential the way its format sends it.
fn authorised(shared: &Shared, path: &str, headers: &hyper::HeaderMap) -> bool {
    let Some(key) = shared.config().api_key else {
        return true;
    };
    let get = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if path.starts_with("/v1/messages") {
        get("x-api-key") == key && !get("anthropic-version").is_empty()
    } else if path.starts_with("/v1beta/") {
        get("x-goog-api-key") == key
    } else {
        get("authorization") == format!("Bearer {key}")
    }
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Body>, io::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if !path.starts_with("/_mock/") && !authorised(&shared, &path, req.headers()) {
        return Ok(openai_error(
            StatusCode::UNAUTHORIZED,
            "mock: missing or wrong API key",
        ));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(io::Error::other(e)),
    };
    match (method, path.as_str()) {
        (Method::POST, "/v1/chat/completions") => openai::chat(&body, &shared).await,
        (Method::POST, "/v1/messages") => anthropic::messages(&body, &shared).await,
        (Method::POST, "/v1/messages/count_tokens") => Ok(anthropic::count_tokens(&body, &shared)),
        (Method::POST, p) if p.starts_with("/v1beta/models/") => {
            let rest = &p["/v1beta/models/".len()..];
            match rest.rsplit_once(':') {
                Some((model, "generateContent")) => {
                    gemini::generate(model, false, &body, &shared).await
                }
                Some((model, "streamGenerateContent")) => {
                    gemini::generate(model, true, &body, &shared).await
                }
                _ => Ok(openai_error(
                    StatusCode::NOT_FOUND,
                    &format!("no route {p}"),
                )),
            }
        }
        (Method::GET, "/v1/models") => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]}),
        )),
        (Method::GET, "/_mock/stats") => Ok(json_response(
            StatusCode::OK,
            &serde_json::to_value(shared.stats.snapshot()).unwrap_or_default(),
        )),
        (Method::POST, "/_mock/config") => match serde_json::from_slice::<MockConfig>(&body) {
            Ok(c) => {
                shared.set_config(c);
                Ok(json_response(
                    StatusCode::OK,
                    &serde_json::to_value(shared.config()).unwrap_or_default(),
                ))
            }
            Err(e) => Ok(openai_error(StatusCode::BAD_REQUEST, &e.to_string())),
        },
        (Method::POST, "/_mock/reset") => {
            shared.stats.reset();
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"reset": true}),
            ))
        }
        (_, p) => Ok(openai_error(
            StatusCode::NOT_FOUND,
            &format!("no route {p}"),
        )),
    }
}
