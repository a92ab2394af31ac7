//! Upstream providers: one actor per configured upstream, and the wire formats they speak.
//!
//! A [`ProviderActor`] owns everything that is per upstream: the HTTP connection pool, its
//! timeouts, and health bookkeeping. It does not carry request bytes itself: a request asks it
//! for a [`Lease`] (admission, in microseconds) and then performs the HTTP exchange on its own
//! task, so no actor serialises traffic and a client that disconnects drops the upstream call.
//! Outcomes flow back to the actor as fire-and-forget [`Report`]s.

pub mod chain;
pub mod error;
pub mod openai;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use futures_util::stream::BoxStream;
use serde::Serialize;

use crate::config::{ProviderKind, ProviderSpec};
use crate::types::{ChatChunk, ChatRequest, ChatResponse};

pub use error::ProviderError;

/// A stream of chunks from an upstream.
pub type ChunkStream = BoxStream<'static, Result<ChatChunk, ProviderError>>;

/// Counters that outlive actor restarts, shared with readers such as `/readyz`.
#[derive(Debug, Default)]
pub struct ProviderStats {
    /// Leases handed out.
    pub requests: AtomicU64,
    /// Calls reported failed.
    pub failures: AtomicU64,
    /// Times the actor was restarted by its supervisor.
    pub restarts: AtomicU64,
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

/// Ask for a [`Lease`].
#[derive(Message)]
#[rtype(result = "Result<Lease, ProviderError>")]
pub struct Acquire;

/// How a call went, reported after the fact.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Report {
    /// The upstream answered.
    Success,
    /// The upstream failed (message already safe to log).
    Failure(String),
}

/// Ask for a health snapshot.
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
    /// Leases handed out since start.
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
    spec: Arc<ProviderSpec>,
    client: reqwest::Client,
    stats: Arc<ProviderStats>,
    consecutive_failures: u32,
    last_error: Option<String>,
}

impl ProviderActor {
    /// Build the actor and its connection pool.
    pub fn new(spec: Arc<ProviderSpec>, stats: Arc<ProviderStats>) -> Result<Self, ProviderError> {
        let client = build_client(&spec)?;
        Ok(Self {
            spec,
            client,
            stats,
            consecutive_failures: 0,
            last_error: None,
        })
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
        tracing::debug!(provider = %self.spec.name, base_url = %self.spec.base_url, "provider actor started");
    }
}

impl Supervised for ProviderActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.stats.restarts.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures = 0;
        self.last_error = None;
        // A fresh pool: whatever broke may have been in the connections.
        match build_client(&self.spec) {
            Ok(c) => self.client = c,
            Err(e) => {
                tracing::error!(provider = %self.spec.name, error = %e, "keeping old HTTP client")
            }
        }
        tracing::warn!(provider = %self.spec.name, "provider actor restarted by its supervisor");
    }
}

impl Handler<Acquire> for ProviderActor {
    type Result = Result<Lease, ProviderError>;

    fn handle(&mut self, _: Acquire, _: &mut Self::Context) -> Self::Result {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Ok(Lease {
            spec: Arc::clone(&self.spec),
            client: self.client.clone(),
        })
    }
}

impl Handler<Report> for ProviderActor {
    type Result = ();

    fn handle(&mut self, msg: Report, _: &mut Self::Context) {
        match msg {
            Report::Success => self.consecutive_failures = 0,
            Report::Failure(message) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures == UNHEALTHY_AFTER {
                    tracing::warn!(provider = %self.spec.name, error = %message, "upstream unhealthy: {UNHEALTHY_AFTER} failures in a row");
                }
                self.last_error = Some(message);
            }
        }
    }
}

impl Handler<GetHealth> for ProviderActor {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _: GetHealth, _: &mut Self::Context) -> Self::Result {
        MessageResult(ProviderHealth {
            name: self.spec.name.clone(),
            healthy: self.consecutive_failures < UNHEALTHY_AFTER,
            consecutive_failures: self.consecutive_failures,
            requests: self.stats.requests.load(Ordering::Relaxed),
            failures: self.stats.failures.load(Ordering::Relaxed),
            restarts: self.stats.restarts.load(Ordering::Relaxed),
            last_error: self.last_error.clone(),
        })
    }
}

impl Handler<Restart> for ProviderActor {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
