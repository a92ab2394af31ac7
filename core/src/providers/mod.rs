//! Upstream providers: one actor per configured upstream, and the wire formats they speak.
//!
//! A [`ProviderActor`] owns everything that is per upstream: the HTTP connection pool, its
//! timeouts, and health state. It publishes them as an [`Upstream`] handle that request
//! handlers use directly: admission and outcome bookkeeping are atomics, so no actor mailbox sits
//! on the request path and no actor serialises traffic. The HTTP exchange runs on the request's
//! own task, so a client that disconnects drops the upstream call. The actor owns the lifecycle:
//! it is supervised, and a restart rebuilds the connection pool and resets the state in place.

pub mod anthropic;
pub mod chain;
pub mod error;
pub mod gemini;
pub mod http;
pub mod openai;
pub mod resilience;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::ArcSwap;
use futures_util::stream::BoxStream;
use serde::Serialize;

use crate::config::{ProviderKind, ProviderSpec};
use crate::types::{ChatChunk, ChatRequest, ChatResponse};

pub use error::ProviderError;
use resilience::{Breaker, BreakerState, Limits, Permit};

/// A stream of chunks from an upstream.
pub type ChunkStream = BoxStream<'static, Result<ChatChunk, ProviderError>>;

/// One upstream's shared state: settings, connection pools, limits and health. Owned and reset
/// by its [`ProviderActor`]; read and updated lock-free (or under a brief lock) by handlers.
pub struct Upstream {
    spec: Arc<ProviderSpec>,
    /// `spec.base_url`, parsed once (parsing it per request showed in profiles).
    base: reqwest::Url,
    pools: ArcSwap<Pools>,
    limits: Limits,
    breaker: ArcSwap<Breaker>,
    cooling_until: Mutex<Option<Instant>>,
    requests: AtomicU64,
    failures: AtomicU64,
    restarts: AtomicU64,
    consecutive_failures: AtomicU32,
    last_error: Mutex<Option<String>>,
    reported: Mutex<Option<resilience::Reported>>,
}

impl Upstream {
    /// Build the state and its connection pool.
    pub fn new(spec: Arc<ProviderSpec>) -> Result<Self, ProviderError> {
        let pools = Pools::new(&spec)?;
        let base = reqwest::Url::parse(&spec.base_url).map_err(|e| ProviderError::Unavailable {
            provider: spec.name.clone(),
            message: format!("base URL: {e}"),
        })?;
        Ok(Self {
            base,
            limits: Limits::new(&spec.limits),
            breaker: ArcSwap::from_pointee(Breaker::new(spec.breaker.clone())),
            spec,
            pools: ArcSwap::from_pointee(pools),
            cooling_until: Mutex::new(None),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            last_error: Mutex::new(None),
            reported: Mutex::new(None),
        })
    }

    /// Provider name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Settings.
    pub fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    /// Admit one call: the breaker, a 429 cool-down, then RPM/TPM capacity (waiting up to the
    /// configured bound, never past `deadline`).
    pub async fn admit(
        self: &Arc<Self>,
        est_tokens: u32,
        deadline: Instant,
    ) -> Result<Lease, ProviderError> {
        let name = &self.spec.name;
        let cooling = self.cooling_until.lock().ok().and_then(|g| *g);
        if let Some(until) = cooling {
            let now = Instant::now();
            if until > now {
                return Err(ProviderError::Limited {
                    provider: name.clone(),
                    retry_after: until - now,
                    reason: "cooling down after a 429".to_owned(),
                });
            }
        }
        let client = self.pools.load().here(&self.spec)?;
        let breaker = self.breaker.load_full();
        let probe = match breaker.permit(name) {
            Permit::Normal => false,
            Permit::Probe => true,
            Permit::RefusedUntil(t) => {
                return Err(ProviderError::CircuitOpen {
                    provider: name.clone(),
                    retry_after: t.saturating_duration_since(Instant::now()),
                })
            }
        };
        let mut lease = Lease {
            upstream: Arc::clone(self),
            client,
            breaker,
            probe,
            settled: false,
        };
        if let Err(wait) = self.limits.acquire(est_tokens, deadline).await {
            lease.settled = true;
            lease.breaker.neutral(probe);
            return Err(ProviderError::Limited {
                provider: name.clone(),
                retry_after: wait,
                reason: "client-side RPM/TPM limit".to_owned(),
            });
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(lease)
    }

    fn cool_for(&self, d: Duration) {
        let until = Instant::now() + d.min(Duration::from_secs(300));
        if let Ok(mut g) = self.cooling_until.lock() {
            if g.is_none_or(|t| t < until) {
                *g = Some(until);
                tracing::info!(provider = %self.spec.name, cooling_ms = d.as_millis() as u64, "upstream cooling down");
            }
        }
    }

    fn record_failure(&self, message: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let n = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n == UNHEALTHY_AFTER {
            tracing::warn!(provider = %self.spec.name, error = %message, "upstream unhealthy: {UNHEALTHY_AFTER} failures in a row");
        }
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(message);
        }
    }

    /// A health snapshot.
    pub fn health(&self) -> ProviderHealth {
        let consecutive_failures = self.consecutive_failures.load(Ordering::Relaxed);
        let (breaker, _, open_for) = self.breaker.load().snapshot();
        let cooling_ms = self
            .cooling_until
            .lock()
            .ok()
            .and_then(|g| *g)
            .map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64)
            .filter(|ms| *ms > 0);
        ProviderHealth {
            name: self.spec.name.clone(),
            kind: self.spec.kind,
            healthy: breaker == BreakerState::Closed && consecutive_failures < UNHEALTHY_AFTER,
            breaker,
            breaker_open_ms: open_for.map(|d| d.as_millis() as u64),
            cooling_ms,
            consecutive_failures,
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
            limits: resilience::Headroom {
                upstream: self.reported.lock().ok().and_then(|g| *g),
                ..self.limits.headroom()
            },
        }
    }

    /// Start afresh: new pools (whatever broke may have been in the connections), clean health.
    fn reset(&self) {
        match Pools::new(&self.spec) {
            Ok(p) => self.pools.store(Arc::new(p)),
            Err(e) => {
                tracing::error!(provider = %self.spec.name, error = %e, "keeping old HTTP clients")
            }
        }
        self.breaker
            .store(Arc::new(Breaker::new(self.spec.breaker.clone())));
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if let Ok(mut g) = self.cooling_until.lock() {
            *g = None;
        }
        if let Ok(mut g) = self.last_error.lock() {
            *g = None;
        }
    }
}

/// Permission to call an upstream once; report how it went with [`Lease::settle`]. A lease
/// dropped unsettled (the client went away) tells the breaker nothing.
pub struct Lease {
    upstream: Arc<Upstream>,
    client: reqwest::Client,
    breaker: Arc<Breaker>,
    probe: bool,
    settled: bool,
}

impl Lease {
    /// The upstream's settings.
    pub fn spec(&self) -> &ProviderSpec {
        &self.upstream.spec
    }

    /// The connection pool.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The URL of `path` (`/`-separated segments) under the upstream's base URL.
    pub fn url(&self, path: &str) -> reqwest::Url {
        under(&self.upstream.base, path)
    }

    /// Whether this call is the breaker's half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Note the provider's rate-limit headers: a spent request budget cools the upstream.
    pub fn observe_headers(&self, h: &reqwest::header::HeaderMap) {
        if let Some(d) = resilience::exhausted_for(h) {
            self.upstream.cool_for(d);
        }
        if let Some(r) = resilience::Reported::from_headers(h) {
            if let Ok(mut g) = self.upstream.reported.lock() {
                *g = Some(r);
            }
        }
    }

    /// Record the outcome for health, breaker and cooling.
    pub fn settle(mut self, result: Result<(), &ProviderError>) {
        self.settled = true;
        let up = &self.upstream;
        let name = &up.spec.name;
        match result {
            Ok(()) => {
                up.consecutive_failures.store(0, Ordering::Relaxed);
                self.breaker.success(name, self.probe);
            }
            Err(ProviderError::Status {
                status: 429,
                retry_after,
                ..
            }) => {
                up.cool_for(retry_after.unwrap_or(Duration::from_secs(1)));
                self.breaker.neutral(self.probe);
            }
            // The upstream judged the request invalid: nothing bad about its health.
            Err(e) if !e.should_fail_over() => {
                up.consecutive_failures.store(0, Ordering::Relaxed);
                self.breaker.success(name, self.probe);
            }
            Err(e) => {
                let msg = e.to_string();
                self.breaker.failure(name, self.probe, &msg);
                up.record_failure(msg);
            }
        }
    }

    /// Non-streamed chat completion in this upstream's wire format.
    pub async fn chat(
        &self,
        model: &str,
        req: &ChatRequest,
        deadline: Instant,
    ) -> Result<ChatResponse, ProviderError> {
        match self.spec().kind {
            ProviderKind::OpenAi => openai::chat(self, model, req, deadline).await,
            ProviderKind::Anthropic => anthropic::chat(self, model, req, deadline).await,
            ProviderKind::Gemini => gemini::chat(self, model, req, deadline).await,
        }
    }

    /// Streamed chat completion in this upstream's wire format.
    pub async fn chat_stream(
        &self,
        model: &str,
        req: &ChatRequest,
        deadline: Instant,
    ) -> Result<ChunkStream, ProviderError> {
        match self.spec().kind {
            ProviderKind::OpenAi => openai::chat_stream(self, model, req, deadline).await,
            ProviderKind::Anthropic => anthropic::chat_stream(self, model, req, deadline).await,
            ProviderKind::Gemini => gemini::chat_stream(self, model, req, deadline).await,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.neutral(self.probe);
        }
    }
}

/// Ask for a health snapshot (also proves the actor is alive).
#[derive(Message)]
#[rtype(result = "ProviderHealth")]
pub struct GetHealth;

/// Stop the actor as if it had crashed; its supervisor restarts it with a fresh pool and clean
/// state (how an operator resets an upstream, and how the tests prove the restart works).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restart;

/// An upstream's health as `/readyz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderHealth {
    /// Provider name.
    pub name: String,
    /// Wire format.
    pub kind: ProviderKind,
    /// Breaker closed and no recent run of failures.
    pub healthy: bool,
    /// Circuit breaker state.
    pub breaker: BreakerState,
    /// Time until the open breaker lets a probe through.
    pub breaker_open_ms: Option<u64>,
    /// Time left cooling down after a 429.
    pub cooling_ms: Option<u64>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Calls admitted since start.
    pub requests: u64,
    /// Failures since start.
    pub failures: u64,
    /// Restarts since start.
    pub restarts: u64,
    /// Last failure, if any.
    pub last_error: Option<String>,
    /// Client-side RPM/TPM limits and the last minute's use of them.
    pub limits: resilience::Headroom,
}

/// A URL fit to show in the UI or logs: no user, password or query (any may carry a key).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// Failures in a row after which an upstream reports unhealthy.
const UNHEALTHY_AFTER: u32 = 5;

/// The actor owning one upstream.
pub struct ProviderActor {
    upstream: Arc<Upstream>,
}

impl ProviderActor {
    /// Own this upstream.
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self { upstream }
    }
}

/// One upstream's HTTP clients, one per thread that calls it.
///
/// A pooled connection is driven by a task on the runtime that opened it. Each actix worker
/// runs its own single-threaded runtime, so with one shared pool a request on one worker
/// would often borrow a connection driven by another, and every exchange would cross threads
/// twice (a wake-up and a context switch each way). With a pool per thread, requests and
/// their connections stay on one thread.
struct Pools {
    per_thread: thread_local::ThreadLocal<reqwest::Client>,
}

impl Pools {
    /// Empty pools; building a client first here proves the settings work.
    fn new(spec: &ProviderSpec) -> Result<Self, ProviderError> {
        let per_thread = thread_local::ThreadLocal::new();
        per_thread.get_or_try(|| build_client(spec))?;
        Ok(Self { per_thread })
    }

    /// The calling thread's client (a cheap handle to its pool), built on first use.
    fn here(&self, spec: &ProviderSpec) -> Result<reqwest::Client, ProviderError> {
        self.per_thread.get_or_try(|| build_client(spec)).cloned()
    }
}

/// The HTTP client for one upstream.
fn build_client(spec: &ProviderSpec) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .connect_timeout(spec.connect_timeout)
        .pool_max_idle_per_host(spec.pool_idle_per_host)
        .tcp_nodelay(true)
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Unavailable {
            provider: spec.name.clone(),
            message: format!("cannot build HTTP client: {e}"),
        })
}

impl Actor for ProviderActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!(provider = %self.upstream.spec.name, base_url = %self.upstream.spec.base_url, "provider actor started");
    }
}

impl Supervised for ProviderActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.upstream.restarts.fetch_add(1, Ordering::Relaxed);
        self.upstream.reset();
        tracing::warn!(provider = %self.upstream.spec.name, "provider actor restarted by its supervisor");
    }
}

impl Handler<GetHealth> for ProviderActor {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _: GetHealth, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.upstream.health())
    }
}

impl Handler<Restart> for ProviderActor {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// `path` (`/`-separated segments) under `base`, before any query string it has, without
/// parsing a URL again.
fn under(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(path.split('/'));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn endpoints_go_under_the_base_url_whatever_its_path() {
        let cases = [
            (
                "http://127.0.0.1:9000/v1",
                "chat/completions",
                "http://127.0.0.1:9000/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:9000/v1/",
                "chat/completions",
                "http://127.0.0.1:9000/v1/chat/completions",
            ),
            (
                "https://api.example.com",
                "messages/count_tokens",
                "https://api.example.com/messages/count_tokens",
            ),
            (
                "https://h.example/openai/deployments/x",
                "chat/completions",
                "https://h.example/openai/deployments/x/chat/completions",
            ),
            (
                "https://h.example/openai/deployments/x?api-version=2024-10-21",
                "chat/completions",
                "https://h.example/openai/deployments/x/chat/completions?api-version=2024-10-21",
            ),
        ];
        for (base, path, want) in cases {
            let base = reqwest::Url::parse(base).expect("base");
            assert_eq!(under(&base, path).as_str(), want, "{base} + {path}");
        }
    }
}
