//! Upstream providers: one actor per configured upstream, and the wire formats they speak.
//!
//! A [`ProviderActor`] owns everything that is per upstream: the HTTP connection pool, its
//! timeouts, and health state. It publishes them as an [`Upstream`] handle that request
//! handlers use directly: admission and outcome bookkeeping are atomics, so no actor mailbox sits
//! on the request path and no actor serialises traffic. The HTTP exchange runs on the request's
//! own task, so a client that disconnects drops the upstream call. The actor owns the lifecycle:
//! it is supervised, and a restart rebuilds the connection pool and resets the state in place.

pub mod chain;
pub mod error;
pub mod openai;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::prelude::*;
use arc_swap::ArcSwap;
use futures_util::stream::BoxStream;
use serde::Serialize;

use crate::config::{ProviderKind, ProviderSpec};
use crate::types::{ChatChunk, ChatRequest, ChatResponse};

pub use error::ProviderError;

/// A stream of chunks from an upstream.
pub type ChunkStream = BoxStream<'static, Result<ChatChunk, ProviderError>>;

/// One upstream's shared state: settings, connection pool and health. Owned and reset by its
/// [`ProviderActor`]; read and updated lock-free by request handlers.
pub struct Upstream {
    spec: Arc<ProviderSpec>,
    client: ArcSwap<reqwest::Client>,
    requests: AtomicU64,
    failures: AtomicU64,
    restarts: AtomicU64,
    consecutive_failures: AtomicU32,
    last_error: Mutex<Option<String>>,
}

impl Upstream {
    /// Build the state and its connection pool.
    pub fn new(spec: Arc<ProviderSpec>) -> Result<Self, ProviderError> {
        let client = build_client(&spec)?;
        Ok(Self {
            spec,
            client: ArcSwap::from_pointee(client),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// Provider name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Admit one call.
    pub fn lease(&self) -> Result<Lease, ProviderError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(Lease {
            spec: Arc::clone(&self.spec),
            client: reqwest::Client::clone(&self.client.load()),
        })
    }

    /// The upstream answered.
    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// The upstream failed (message already safe to log).
    pub fn record_failure(&self, message: String) {
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
        ProviderHealth {
            name: self.spec.name.clone(),
            healthy: consecutive_failures < UNHEALTHY_AFTER,
            consecutive_failures,
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }

    /// Start afresh: a new pool (whatever broke may have been in the connections), clean health.
    fn reset(&self) {
        match build_client(&self.spec) {
            Ok(c) => self.client.store(Arc::new(c)),
            Err(e) => {
                tracing::error!(provider = %self.spec.name, error = %e, "keeping old HTTP client")
            }
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if let Ok(mut g) = self.last_error.lock() {
            *g = None;
        }
    }
}

/// Permission to call an upstream, with what the call needs.
#[derive(Clone)]
pub struct Lease {
    /// The upstream's settings.
    pub spec: Arc<ProviderSpec>,
    /// The upstream's connection pool.
    pub client: reqwest::Client,
}

impl Lease {
    /// Non-streamed chat completion in this upstream's wire format.
    pub async fn chat(
        &self,
        model: &str,
        req: &ChatRequest,
        deadline: Instant,
    ) -> Result<ChatResponse, ProviderError> {
        match self.spec.kind {
            ProviderKind::OpenAi => openai::chat(self, model, req, deadline).await,
        }
    }

    /// Streamed chat completion in this upstream's wire format.
    pub async fn chat_stream(
        &self,
        model: &str,
        req: &ChatRequest,
        deadline: Instant,
    ) -> Result<ChunkStream, ProviderError> {
        match self.spec.kind {
            ProviderKind::OpenAi => openai::chat_stream(self, model, req, deadline).await,
        }
    }
}

/// Ask for a health snapshot (also proves the actor is alive).
#[derive(Message)]
#[rtype(result = "ProviderHealth")]
pub struct GetHealth;

/// Stop the actor as if it had crashed; its supervisor restarts it. Used by tests and by the
/// admin API to reset an upstream's state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restart;

/// An upstream's health as `/readyz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderHealth {
    /// Provider name.
    pub name: String,
    /// No recent run of failures.
    pub healthy: bool,
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
