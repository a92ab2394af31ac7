//! The failover chain: try a model's targets in order until one answers.
//!
//! A target is abandoned for the next one only before anything has gone to the client: for
//! streams, the first chunk is read before the response starts, so an upstream that fails early
//! still fails over. Once bytes are flowing, a failure becomes an error event instead.

use std::time::Instant;

use std::sync::Arc;

use actix::Addr;
use futures_util::StreamExt;

use super::{ChunkStream, ProviderActor, ProviderError, Upstream};
use crate::error::ApiError;
use crate::types::{ChatChunk, ChatRequest, ChatResponse};

/// One resolved target: which actor, which upstream model.
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

/// Which target served a request, and after how many attempts.
#[derive(Debug, Clone)]
pub struct Served {
    /// Provider name.
    pub provider: String,
    /// Upstream model.
    pub model: String,
    /// Targets tried, including the one that answered.
    pub attempts: u32,
}

/// A stream that has produced its first chunk.
pub struct StreamStart {
    /// The first chunk, already read.
    pub first: ChatChunk,
    /// The rest; it reports its outcome to the provider actor and honours the deadline.
    pub rest: ChunkStream,
    /// Who is serving it.
    pub served: Served,
}

fn report(route: &Route, result: &Result<(), &ProviderError>) {
    match result {
        Ok(()) => route.upstream.record_success(),
        // The upstream judged the request invalid: that says nothing bad about its health.
        Err(e) if !e.should_fail_over() => route.upstream.record_success(),
        Err(e) => route.upstream.record_failure(e.to_string()),
    }
}

/// Run a non-streamed request along the chain.
pub async fn complete(
    routes: &[Route],
    req: &ChatRequest,
    deadline: Instant,
) -> Result<(ChatResponse, Served), ApiError> {
    let mut errors = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let result = match route.upstream.lease() {
            Ok(lease) => lease.chat(&route.model, req, deadline).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(resp) => {
                report(route, &Ok(()));
                let served = Served {
                    provider: route.provider.clone(),
                    model: route.model.clone(),
                    attempts: (i + 1) as u32,
                };
                return Ok((resp, served));
            }
            Err(e) => {
                report(route, &Err(&e));
                if !e.should_fail_over() {
                    return Err(e.into_api_error());
                }
                tracing::warn!(provider = %route.provider, error = %e, "upstream failed; trying next target");
                let timed_out =
                    matches!(e, ProviderError::Timeout { .. }) || Instant::now() >= deadline;
                errors.push(e);
                if timed_out {
                    break;
                }
            }
        }
    }
    Err(ProviderError::summarise(errors))
}

/// Run a streamed request along the chain until one target yields its first chunk.
pub async fn stream(
    routes: &[Route],
    req: &ChatRequest,
    deadline: Instant,
) -> Result<StreamStart, ApiError> {
    let mut errors = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let attempt = async {
            let lease = route.upstream.lease()?;
            let mut s = lease.chat_stream(&route.model, req, deadline).await?;
            let first = tokio::time::timeout_at(deadline.into(), s.next()).await;
            match first {
                Ok(Some(Ok(chunk))) => Ok((chunk, s)),
                Ok(Some(Err(e))) => Err(e),
                Ok(None) => Err(ProviderError::Stream {
                    provider: route.provider.clone(),
                    message: "stream ended before any chunk".to_owned(),
                }),
                Err(_) => Err(ProviderError::Timeout {
                    provider: route.provider.clone(),
                }),
            }
        };
        match attempt.await {
            Ok((first, rest)) => {
                let served = Served {
                    provider: route.provider.clone(),
                    model: route.model.clone(),
                    attempts: (i + 1) as u32,
                };
                return Ok(StreamStart {
                    first,
                    rest: watch(rest, route.clone(), deadline),
                    served,
                });
            }
            Err(e) => {
                report(route, &Err(&e));
                if !e.should_fail_over() {
                    return Err(e.into_api_error());
                }
                tracing::warn!(provider = %route.provider, error = %e, "upstream stream failed before the first chunk; trying next target");
                let timed_out =
                    matches!(e, ProviderError::Timeout { .. }) || Instant::now() >= deadline;
                errors.push(e);
                if timed_out {
                    break;
                }
            }
        }
    }
    Err(ProviderError::summarise(errors))
}

struct Watch {
    inner: ChunkStream,
    route: Route,
    deadline: tokio::time::Instant,
    done: bool,
}

/// Enforce the deadline on the rest of a stream and report how it ended.
fn watch(inner: ChunkStream, route: Route, deadline: Instant) -> ChunkStream {
    let st = Watch {
        inner,
        route,
        deadline: deadline.into(),
        done: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        match tokio::time::timeout_at(st.deadline, st.inner.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), st)),
            Ok(Some(Err(e))) => {
                st.done = true;
                report(&st.route, &Err(&e));
                Some((Err(e), st))
            }
            Ok(None) => {
                st.done = true;
                report(&st.route, &Ok(()));
                None
            }
            Err(_) => {
                st.done = true;
                let e = ProviderError::Timeout {
                    provider: st.route.provider.clone(),
                };
                report(&st.route, &Err(&e));
                Some((Err(e), st))
            }
        }
    })
    .boxed()
}
