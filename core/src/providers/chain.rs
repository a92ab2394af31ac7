//! The failover chain: try a model's targets in order until one answers.
//!
//! Per target: admission (breaker, 429 cool-down, RPM/TPM capacity), then the call, retried with
//! jittered exponential back-off on transient faults. A 429 cools the upstream and moves on. When
//! every target has failed for a "not now" reason (cooling, limits, open breaker), the chain
//! waits for the soonest to become available again, if that is within the configured wait
//! bound and the request's deadline.
//!
//! A target is abandoned only before anything has gone to the client: for streams, the first
//! chunk is read before the response starts, so an upstream that fails early still fails over.
//! Once bytes are flowing, a failure becomes an error event instead, and nothing is retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use futures_util::StreamExt;

use super::resilience::backoff;
use super::{ChunkStream, Lease, ProviderActor, ProviderError, Upstream};
use crate::error::ApiError;
use crate::types::{ChatChunk, ChatRequest, ChatResponse};

/// Passes over the whole chain before giving up; in practice the deadline ends it first.
const MAX_ROUNDS: u32 = 32;

/// One resolved target: which upstream, which model there.
#[derive(Clone)]
pub struct Route {
    /// Provider name.
    pub provider: String,
    /// Its shared state (what requests use).
    pub upstream: Arc<Upstream>,
    /// Its actor (what owns and resets that state).
    pub addr: Addr<ProviderActor>,
    /// Upstream model name.
    pub model: String,
}

/// Which target served a request, and after how many upstream calls.
#[derive(Debug, Clone)]
pub struct Served {
    /// Provider name.
    pub provider: String,
    /// Upstream model.
    pub model: String,
    /// Upstream calls made, including the one that answered.
    pub attempts: u32,
    /// Time spent in upstream calls until the answer (its first chunk, for streams) arrived.
    pub upstream: Duration,
    /// Time spent waiting on purpose: back-off, cool-downs, RPM/TPM capacity.
    pub waited: Duration,
}

/// A stream that has produced its first chunk.
pub struct StreamStart {
    /// The first chunk, already read.
    pub first: ChatChunk,
    /// The rest; it reports its outcome to the upstream and honours the deadline.
    pub rest: ChunkStream,
    /// Who is serving it.
    pub served: Served,
}

enum Answer {
    Whole(ChatResponse),
    Stream(ChatChunk, ChunkStream),
}

async fn attempt(
    lease: &Lease,
    route: &Route,
    req: &ChatRequest,
    deadline: Instant,
    stream: bool,
) -> Result<Answer, ProviderError> {
    let attempt_deadline = deadline.min(Instant::now() + lease.spec().attempt_timeout);
    if !stream {
        return lease
            .chat(&route.model, req, attempt_deadline)
            .await
            .map(Answer::Whole);
    }
    let mut s = lease
        .chat_stream(&route.model, req, attempt_deadline)
        .await?;
    match tokio::time::timeout_at(attempt_deadline.into(), s.next()).await {
        Ok(Some(Ok(chunk))) => Ok(Answer::Stream(chunk, s)),
        Ok(Some(Err(e))) => Err(e),
        Ok(None) => Err(ProviderError::Stream {
            provider: route.provider.clone(),
            message: "stream ended before any chunk".to_owned(),
        }),
        Err(_) => Err(ProviderError::Timeout {
            provider: route.provider.clone(),
        }),
    }
}

fn soonest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

async fn run(
    routes: &[Route],
    req: &ChatRequest,
    deadline: Instant,
    stream: bool,
) -> Result<(Answer, Lease, Served), ApiError> {
    let est_tokens = req.estimate_tokens();
    // The last failure of each provider, in chain order, for the final message.
    let mut last: Vec<(String, ProviderError)> = Vec::new();
    let mut remember =
        |e: ProviderError, provider: &str| match last.iter_mut().find(|(p, _)| p == provider) {
            Some(slot) => slot.1 = e,
            None => last.push((provider.to_owned(), e)),
        };
    let mut calls = 0u32;
    let mut upstream_time = Duration::ZERO;
    let mut waited = Duration::ZERO;
    // 429s each upstream has answered this request: after `max_retries` more of them, the
    // upstream is done for this request (a steady 429 should reach the client promptly).
    let mut rate_limited = vec![0u32; routes.len()];
    'rounds: for _ in 0..MAX_ROUNDS {
        let mut next_chance: Option<Duration> = None;
        for (index, route) in routes.iter().enumerate() {
            let retry = &route.upstream.spec().retry;
            if rate_limited[index] > retry.max_retries {
                continue;
            }
            let mut retries = 0;
            loop {
                if Instant::now() >= deadline {
                    break 'rounds;
                }
                let admitting = Instant::now();
                let admitted = route.upstream.admit(est_tokens, deadline).await;
                waited += admitting.elapsed();
                let lease = match admitted {
                    Ok(l) => l,
                    Err(e) => {
                        next_chance = soonest(next_chance, e.available_in());
                        remember(e, &route.provider);
                        break;
                    }
                };
                calls += 1;
                let calling = Instant::now();
                // One span per upstream call, named and attributed per the OpenTelemetry GenAI
                // conventions.
                let span = tracing::info_span!(
                    "gen_ai.chat",
                    otel.name = %format!("chat {}", route.model),
                    otel.kind = "client",
                    gen_ai.operation.name = "chat",
                    gen_ai.provider.name = %route.provider,
                    gen_ai.request.model = %route.model,
                    attempt = calls,
                );
                let outcome = tracing::Instrument::instrument(
                    attempt(&lease, route, req, deadline, stream),
                    span,
                )
                .await;
                upstream_time += calling.elapsed();
                match outcome {
                    Ok(answer) => {
                        let served = Served {
                            provider: route.provider.clone(),
                            model: route.model.clone(),
                            attempts: calls,
                            upstream: upstream_time,
                            waited,
                        };
                        return Ok((answer, lease, served));
                    }
                    Err(e) => {
                        lease.settle(Err(&e));
                        if !e.should_fail_over() {
                            return Err(e.into_api_error());
                        }
                        if matches!(e, ProviderError::Status { status: 429, .. }) {
                            rate_limited[index] += 1;
                            if rate_limited[index] <= retry.max_retries {
                                next_chance = soonest(next_chance, e.available_in());
                            }
                        } else {
                            next_chance = soonest(next_chance, e.available_in());
                        }
                        let again = e.retry_same() && retries < retry.max_retries;
                        tracing::warn!(provider = %route.provider, error = %e, retrying = again, "upstream call failed");
                        remember(e, &route.provider);
                        if !again {
                            break;
                        }
                        let pause = backoff(retry, retries);
                        if Instant::now() + pause >= deadline {
                            break;
                        }
                        tokio::time::sleep(pause).await;
                        waited += pause;
                        retries += 1;
                    }
                }
            }
        }
        // Wait for capacity only as long as the upstreams' configured bound: a client is
        // better served by a prompt 429 with `Retry-After` than by a long silent wait.
        let patience = routes
            .iter()
            .map(|r| r.upstream.spec().limits.max_wait)
            .max()
            .unwrap_or_default();
        match next_chance {
            Some(wait) if wait <= patience && Instant::now() + wait < deadline => {
                // Up to 20% jitter, so requests waiting on one cool-down do not all return at
                // the same instant.
                let jitter = wait.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.0..0.2));
                let wait = (wait + jitter).max(Duration::from_millis(1));
                tracing::debug!(
                    wait_ms = wait.as_millis() as u64,
                    "every upstream is busy; waiting for the soonest"
                );
                tokio::time::sleep(wait).await;
                waited += wait;
            }
            _ => break,
        }
    }
    if last.is_empty() {
        return Err(ApiError::Timeout(
            "the request's deadline passed before any upstream was tried".to_owned(),
        ));
    }
    Err(ProviderError::summarise(
        last.into_iter().map(|(_, e)| e).collect(),
    ))
}

/// Run a non-streamed request along the chain.
pub async fn complete(
    routes: &[Route],
    req: &ChatRequest,
    deadline: Instant,
) -> Result<(ChatResponse, Served), ApiError> {
    match run(routes, req, deadline, false).await? {
        (Answer::Whole(resp), lease, served) => {
            lease.settle(Ok(()));
            Ok((resp, served))
        }
        (Answer::Stream(..), _, _) => Err(ApiError::Internal(
            "a stream answered a non-streamed request".to_owned(),
        )),
    }
}

/// Run a streamed request along the chain until one target yields its first chunk.
pub async fn stream(
    routes: &[Route],
    req: &ChatRequest,
    deadline: Instant,
) -> Result<StreamStart, ApiError> {
    match run(routes, req, deadline, true).await? {
        (Answer::Stream(first, rest), lease, served) => Ok(StreamStart {
            first,
            rest: watch(rest, lease, deadline),
            served,
        }),
        (Answer::Whole(_), _, _) => Err(ApiError::Internal(
            "a whole answer to a streamed request".to_owned(),
        )),
    }
}

struct Watch {
    inner: ChunkStream,
    lease: Option<Lease>,
    deadline: tokio::time::Instant,
}

/// Enforce the deadline on the rest of a stream and settle the lease when it ends.
fn watch(inner: ChunkStream, lease: Lease, deadline: Instant) -> ChunkStream {
    let st = Watch {
        inner,
        lease: Some(lease),
        deadline: deadline.into(),
    };
    futures_util::stream::unfold(st, |mut st| async move {
        let lease = st.lease.take()?;
        match tokio::time::timeout_at(st.deadline, st.inner.next()).await {
            Ok(Some(Ok(chunk))) => {
                st.lease = Some(lease);
                Some((Ok(chunk), st))
            }
            Ok(Some(Err(e))) => {
                lease.settle(Err(&e));
                Some((Err(e), st))
            }
            Ok(None) => {
                lease.settle(Ok(()));
                None
            }
            Err(_) => {
                let e = ProviderError::Timeout {
                    provider: lease.spec().name.clone(),
                };
                lease.settle(Err(&e));
                Some((Err(e), st))
            }
        }
    })
    .boxed()
}
